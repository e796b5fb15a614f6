import dataclasses
import re
from pathlib import Path

import pytest

from kit import KitError
from kit.config import TrainConfig, resolved


def test_unknown_parameter_names_the_known_ones():
    with pytest.raises(KitError, match=r"unknown parameter\(s\) \['epoch'\].*epochs"):
        TrainConfig.from_params(epoch=3)


@pytest.mark.parametrize("name,value,expected", [
    ("epochs", "7", 7), ("lr", "1e-3", 1e-3), ("pretrained", "true", True), ("pretrained", 0, False),
    ("lr", 1, 1.0), ("model", "resnet18", "resnet18"),
])
def test_values_from_the_command_line_are_coerced(name, value, expected):
    assert getattr(TrainConfig.from_params({name: value}), name) == expected


@pytest.mark.parametrize("name,value", [("epochs", "many"), ("epochs", 2.5), ("pretrained", "maybe"),
                                        ("model", 3), ("epochs", True)])
def test_ill_typed_values_fail_with_the_name(name, value):
    with pytest.raises(KitError, match=f"{name}="):
        TrainConfig.from_params({name: value})


def test_from_namespace_picks_only_config_fields():
    cfg = TrainConfig.from_namespace({"epochs": 2, "model": "test_resnet", "np": object(), "__name__": "x"})
    assert (cfg.epochs, cfg.model) == (2, "test_resnet")


def test_resolved_config_records_version_and_extra():
    d = resolved(TrainConfig(seed=7), folds_hash="abc")
    assert d["seed"] == 7 and d["folds_hash"] == "abc" and d["kit_version"]


@pytest.mark.parametrize("params,message", [
    ({"sam": "yes"}, r"sam='yes' should be one of \['off', 'sam', 'asam'\]"),
    ({"amp": "fp8"}, "amp='fp8' should be one of"),
    ({"accum_steps": 0}, "accum_steps=0 should be at least 1"),
])
def test_bad_choices_fail_before_training(params, message):
    with pytest.raises(KitError, match=message):
        TrainConfig.from_params(params)


# (parameter, bad value, what the message must say is allowed)
BAD = [
    ("img_size", -1, r"at least 0 \(0: the native resolution"),
    ("device", "foo", r"'auto', 'cpu', 'cuda', 'cuda:<n>' .*'mps'"),
    ("device", "cuda:", "'cuda:<n>'"),
    ("threads", -1, "at least 0"),
    ("num_workers", -2, r"at least -1 \(.*-1: auto"),
    ("label_smoothing", 2, "at least 0 and less than 1"),
    ("label_smoothing", 1.0, "at least 0 and less than 1"),
    ("lr", -1, "greater than 0"),
    ("lr", 0, "greater than 0"),
    ("lr", float("nan"), "greater than 0"),
    ("backbone_lr_mult", 0, "greater than 0"),
    ("weight_decay", -0.1, "at least 0"),
    ("warmup_epochs", -1, "at least 0"),
    ("clip_grad", -1, "at least 0"),
    ("mixup", -0.2, "at least 0"),
    ("cutmix", -0.2, "at least 0"),
    ("mixup_off_epochs", -1, "at least 0"),
    ("sam_rho", -0.05, "at least 0"),
    ("ema_decay", 1.0, "at least 0 and less than 1"),
    ("ema_decay", -0.5, "at least 0 and less than 1"),
    ("patience", -1, "at least 0"),
    ("freeze_epochs", -1, "at least 0"),
    ("fold", -1, "at least 0"),
    *[(name, 0, "at least 1") for name in ("epochs", "batch_size", "accum_steps", "sam_every", "save_top")],
    ("model", "no_such_model", r"unknown model 'no_such_model': not a kit preset \(\['effnet_b0'.* nor a timm model"),
    ("model", "resnet18.no_such_tag", r"Invalid pretrained tag .*'resnet18.a1_in1k'.*the bare name 'resnet18'"),
    ("metric", "bogus", r"use one of \['accuracy', 'balanced_accuracy', 'log_loss', 'macro_f1'.*\].* or an sklearn "
                        "scorer"),
    ("tta", "bogus", r"unknown tta 'bogus'; choose a preset \['d4', 'flips', 'hflip', 'multiscale', 'none'\], "
                     "optionally with @"),
    ("augment", "bogus", r"one of \['none', 'light', 'medium', 'mushroom'\]"),
    ("exp", "../escaped", "not a plain name"),
    # a typo in every choice field
    ("sam", "sma", r"one of \['off', 'sam', 'asam'\]"),
    ("amp", "bf61", r"one of \['auto', 'bf16', 'fp16', 'off'\]"),
    ("on_bad_image", "skpi", r"one of \['error', 'skip'\]"),
    ("augment", "lihgt", r"one of \['none', 'light', 'medium', 'mushroom'\]"),
    ("tta", "hlfip", r"unknown tta 'hlfip'; choose a preset"),
    ("tta", "none@square", r"unknown tta 'none@square'; choose a preset"),
    ("resize", "center", r"one of \['auto', 'squash', 'crop', 'letterbox'\]"),
    ("crop_pct", 1.5, r"at least 0 and at most 1"),
    ("crop_pct", -0.1, r"at least 0 and at most 1"),
    ("crop_pct", 0.01, r"should be 0 \(the model's own\) or between 0.5 and 1"),
]


@pytest.mark.parametrize("name,value,allowed", BAD, ids=[f"{n}={v!r}" for n, v, _ in BAD])
def test_bad_values_fail_at_construction_naming_the_parameter_and_what_is_allowed(name, value, allowed):
    with pytest.raises(KitError) as e:
        TrainConfig(**{name: value})
    assert str(e.value).startswith(f"parameter {name}={value!r}")
    assert re.search(allowed, str(e.value)), str(e.value)


@pytest.mark.parametrize("name,value", [("img_size", "-1"), ("device", "foo"), ("lr", "-1"), ("metric", "bogus")])
def test_values_from_the_command_line_are_checked_after_coercion(name, value):
    with pytest.raises(KitError, match=f"parameter {name}="):
        TrainConfig.from_params({name: value})


def test_every_choice_field_lists_its_choices_on_a_typo():
    """Whatever field gets choices later is covered too."""
    choice_fields = [f for f in dataclasses.fields(TrainConfig) if "choices" in f.metadata]
    assert {f.name for f in choice_fields} >= {"sam", "amp", "on_bad_image", "augment", "resize"}
    for f in choice_fields:
        allowed = f.metadata["choices"]() if callable(f.metadata["choices"]) else f.metadata["choices"]
        assert f.default in allowed
        with pytest.raises(KitError, match=re.escape(f"{f.name}='{f.default}x' should be one of {list(allowed)}")):
            TrainConfig(**{f.name: f"{f.default}x"})


def test_all_problems_are_reported_at_once():
    with pytest.raises(KitError) as e:
        TrainConfig(lr=-1, device="gpu", tta="flip")
    assert [line.split("=")[0] for line in str(e.value).splitlines()] == [
        "parameter lr", "parameter tta", "parameter device"]


def test_valid_edge_values_pass():
    cfg = TrainConfig(img_size=0, label_smoothing=0.0, ema_decay=0.999, num_workers=-1, threads=0, device="cuda:1",
                      tta="d4", augment="mushroom", metric="roc_auc_ovr", model="effnet_b0", lr=1e-6, epochs=1,
                      warmup_epochs=3, clip_grad=0.0, mixup=0.0, sam="asam", sam_rho=0.0, amp="fp16", exp="b0-384px")
    assert (cfg.device, cfg.metric, cfg.warmup_epochs) == ("cuda:1", "roc_auc_ovr", 3)
    for device in ("auto", "cpu", "cuda", "cuda:0", "mps"):
        TrainConfig(device=device)
    TrainConfig(model="resnet18.a1_in1k")  # a timm name with its pretrained tag


ROOT = Path(__file__).resolve().parents[1]


def between(text: str, start: str, end: str) -> str:
    return text[text.index(start) + len(start):text.index(end, text.index(start) + len(start))]


def test_every_field_has_its_help_in_the_metadata_and_the_notebook_cell_is_generated_from_it():
    """The train notebook's parameters cell is the config's: names, defaults and `describe` as comments."""
    from kit.config import describe, parameters_cell

    cell = between((ROOT / "notebooks" / "train_fold.py").read_text(), '# %% tags=["parameters"]\n', "\n# %%")
    assert cell == parameters_cell()
    assert all(f.metadata["help"].strip() for f in dataclasses.fields(TrainConfig))  # no row without a meaning
    img_size = "0: the native resolution of the model (224 when unknown); at least 0"
    assert describe(fields_by_name()["img_size"]) == img_size and f"img_size = 0  # {img_size}\n" in parameters_cell()


def fields_by_name() -> dict:
    return {f.name: f for f in dataclasses.fields(TrainConfig)}


def test_describe_says_the_help_the_choices_and_the_bounds():
    from kit.config import describe

    f = fields_by_name()
    assert describe(f["sam"]) == "sharpness-aware minimization (asam: adaptive); choices: off, sam, asam"
    assert describe(f["augment"]).endswith("; choices: none, light, medium, mushroom")  # a registry's
    assert describe(f["crop_pct"]).endswith("; at least 0 and at most 1")
    assert describe(f["label_smoothing"]).endswith("; at least 0 and less than 1")
    assert describe(f["lr"]).endswith("; greater than 0")
    assert describe(f["device"]) == f["device"].metadata["help"]  # nothing to add


def test_readme_parameter_table_is_generated_from_the_config():
    """tools/sync_train_params.py writes it; a field added, renamed or re-documented without rerunning it fails."""
    from kit.config import parameters_table

    table = between((ROOT / "README.md").read_text(), "<!-- parameters:start -->\n", "<!-- parameters:end -->")
    assert table == parameters_table()
    rows = {line.split(" | ")[0].strip("| `"): line.split(" | ") for line in table.splitlines()[2:]}
    assert list(rows) == [f.name for f in dataclasses.fields(TrainConfig)]
    assert rows["tta"][1] == "`'auto'`"  # the hand-written table said none
    assert all(row[2].strip("| ") for row in rows.values())
    assert "/kaggle/input/\\<comp>" in rows["comp"][2]  # escaped: not an HTML tag in the rendered README


def test_a_bad_model_name_stops_run_folds_before_any_fold_starts(tiny_comp, project, capsys):
    from kit.cli import main

    notebook = Path(__file__).resolve().parents[1] / "notebooks" / "train_fold.py"
    code = main(["run-folds", "--exp", "bad", "--folds", "0", "--notebook", str(notebook), "--model", "no_such_model"])
    assert code == 2 and "parameter model='no_such_model': unknown model" in capsys.readouterr().err
    assert not (project / "runs" / "demo" / "bad").exists()


def test_an_ordinal_fold_from_before_ordinal_head_counts_as_softmax():
    """Its best.pt/last.pt has K outputs: resuming it with the cumulative head must be refused by name, not fail
    in load_state_dict; an old multiclass fold, which ordinal_head never touched, stays comparable."""
    from kit.config import training_changes

    new = TrainConfig().to_dict()  # ordinal_head='cumulative'
    old = {k: v for k, v in new.items() if k != "ordinal_head"}
    assert training_changes({**old, "task_resolved": "ordinal"}, new) == {"ordinal_head": ("softmax", "cumulative")}
    assert training_changes({**old, "task_resolved": "multiclass"}, new) == {}
    assert training_changes({**old, "task_resolved": "ordinal"}, {**new, "ordinal_head": "softmax"}) == {}


def test_an_old_fold_without_resize_differs_from_a_new_one_whichever_side_is_first():
    """other_trainings compares every fold with the first: a config from before resize existed (it squashed)
    against one with resize='auto' differs in both orders, not only when the old one is first."""
    from kit.config import other_trainings

    new = TrainConfig().to_dict()
    old = {k: v for k, v in new.items() if k not in ("resize", "crop_pct")}
    assert set(other_trainings({0: old, 1: new})[1]) == {"resize", "crop_pct"}
    assert set(other_trainings({0: new, 1: old})[1]) == {"resize", "crop_pct"}
    assert other_trainings({0: old, 1: dict(old)}) == {}
