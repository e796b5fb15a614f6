import json
import re

import numpy as np
import pandas as pd
import pytest
import torch

import kit.train
from kit import KitError
from kit.config import TrainConfig
from kit.folds import folds_hash, folds_path, read_folds
from kit.rundir import is_complete
from kit.train import fit_fold

TINY = dict(model="test_resnet", img_size=16, batch_size=32)


def test_one_fold_writes_the_run_folder_contract(tiny_comp):
    r = fit_fold(TrainConfig(exp="t", fold=1, epochs=2, **TINY))
    assert is_complete(r.dir) and r.dir.name == "fold1" and r.dir.parent.name == "t"
    folds = read_folds(folds_path(tiny_comp))
    config = json.loads((r.dir / "config.json").read_text())
    assert config["folds_hash"] == folds_hash(folds) and config["seed"] == 42 and config["kit_version"]
    assert config["epochs"] == 2 and config["timm_name"] == "test_resnet" and config["amp_resolved"] == "off"
    history = pd.read_csv(r.dir / "history.csv")
    assert history["epoch"].tolist() == [1, 2] and {"train_loss", "val_loss", "val_accuracy"} <= set(history)
    ckpt = torch.load(r.dir / "best.pt", weights_only=True)  # safe to load
    assert ckpt["epoch"] == r.best_epoch and ckpt["classes"] == [str(c) for c in range(10)]
    assert torch.load(r.dir / "last.pt", weights_only=True)["epoch"] == 2  # epochs done, numbered as in history
    oof = pd.read_csv(r.dir / "oof.csv", dtype={"id": str})
    val_ids = set(folds.loc[folds["fold"] == 1, "id"])
    assert set(oof["id"]) == val_ids and len(oof) == len(val_ids)
    assert (oof["tta"] == "none").all() and (oof["folds_hash"] == folds_hash(folds)).all()
    assert oof[[str(c) for c in range(10)]].sum(axis=1).sub(1).abs().max() < 1e-4


def test_same_seed_same_result(tiny_comp):
    a = fit_fold(TrainConfig(exp="a", epochs=1, **TINY))
    b = fit_fold(TrainConfig(exp="b", epochs=1, **TINY))
    assert a.history["train_loss"].equals(b.history["train_loss"])


def weights(path, key="model"):
    return torch.load(path, weights_only=True)[key]


@pytest.mark.parametrize("extra", [{}, {"sam": "sam", "mixup": 0.4, "ema_decay": 0.9, "accum_steps": 2},
                                   pytest.param({"num_workers": 2, "augment": "medium"},  # loader processes: ~25 s
                                                marks=pytest.mark.slow)])
def test_interrupted_and_resumed_run_ends_with_the_same_weights(tiny_comp, monkeypatch, extra, interrupted_fit):
    cfg = dict(epochs=4, save_top=2, **TINY, **extra)
    fit_fold(TrainConfig(exp="straight", **cfg))
    real = kit.train.train_one_epoch
    calls = []

    def dies_in_epoch_3(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # killed during the third epoch
        return real(*a, **k)

    monkeypatch.setattr(kit.train, "train_one_epoch", dies_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        fit_fold(TrainConfig(exp="resumed", **cfg))
    monkeypatch.setattr(kit.train, "train_one_epoch", real)
    r = fit_fold(TrainConfig(exp="resumed", **cfg))
    assert r.history["epoch"].tolist() == [1, 2, 3, 4]
    runs = tiny_comp.root.parent.parent / "runs" / "demo"
    for key in ("model", "ema") if "ema_decay" in extra else ("model",):
        a, b = weights(runs / "straight/fold0/last.pt", key), weights(runs / "resumed/fold0/last.pt", key)
        assert all(torch.equal(a[k], b[k]) for k in a), key
    # both files parsed alike: pandas < 3 parses a float to within 1 ulp of what was written, not round-trip
    assert pd.read_csv(runs / "straight/fold0/history.csv").drop(columns="seconds").equals(
        pd.read_csv(runs / "resumed/fold0/history.csv").drop(columns="seconds"))


def test_ema_weights_differ_from_raw_and_are_what_is_saved(tiny_comp, monkeypatch):
    scores = iter([0.1, 0.2])  # the last epoch is the best: best.pt must hold the EMA that last.pt holds
    monkeypatch.setattr(kit.train, "score", lambda *a: next(scores))
    r = fit_fold(TrainConfig(exp="ema", epochs=2, ema_decay=0.9, save_top=1, **TINY))
    best, last = weights(r.dir / "best.pt"), torch.load(r.dir / "last.pt", weights_only=True)
    raw, ema = last["model"], last["ema"]
    assert r.best_epoch == 2
    assert not all(torch.equal(raw[k], ema[k]) for k in raw if raw[k].is_floating_point())
    assert all(torch.equal(best[k], ema[k]) for k in best)


def test_ema_warms_up_so_a_short_run_moves_away_from_the_initial_weights(tiny_comp):
    """With a fixed decay 0.999 the EMA of 10 updates is ~99% the weights after the first update."""
    from kit.models import create_model

    r = fit_fold(TrainConfig(exp="emaw", epochs=1, ema_decay=0.999, **{**TINY, "batch_size": 8}))
    torch.manual_seed(42)
    init = create_model("test_resnet", 10).state_dict()
    last = torch.load(r.dir / "last.pt", weights_only=True)
    assert last["step"] == 10
    names = [k for k in init if init[k].is_floating_point() and "running" not in k]

    def moved(state):
        return torch.cat([(state[k] - init[k]).flatten() for k in names]).norm()

    assert moved(last["ema"]) > 0.5 * moved(last["model"])


def test_top_n_checkpoints_and_early_stopping(tiny_comp, monkeypatch, capsys):
    scores = iter([0.5, 0.7, 0.6, 0.4, 0.3, 0.2])
    monkeypatch.setattr(kit.train, "score", lambda *a: next(scores))
    r = fit_fold(TrainConfig(exp="top", epochs=6, save_top=2, patience=3, **TINY))
    assert r.history["epoch"].tolist() == [1, 2, 3, 4, 5]  # stopped 3 epochs after the best (epoch 2)
    assert weights(r.dir / "best.pt", "epoch") == r.best_epoch == 2
    assert sorted(p.name for p in r.dir.glob("top-*.pt")) == ["top-003.pt"]  # the second best
    out = capsys.readouterr().out  # the log numbers epochs as history, checkpoints and FoldResult do
    # every epoch logged once, as 1..5, and *best on the first epoch and on epoch 2 only (an off-by-one log
    # that printed epoch 1 as "epoch 2/6" would still show a "epoch 2/6 ... *best" line)
    assert re.findall(r"^epoch (\d+)/6 ", out, re.M) == ["1", "2", "3", "4", "5"]
    assert re.findall(r"^epoch (\d+)/6 .*\*best", out, re.M) == ["1", "2"] and "early stop after epoch 5" in out


def test_kit_train_summary_names_the_best_epoch_as_the_log_numbers_it(tiny_comp, monkeypatch, capsys):
    """Issue 11, item 18: the summary said "best at epoch 8" for the epoch the log printed as 9."""
    from kit.cli import main

    scores = iter([0.1, 0.3, 0.2])  # the second of three epochs is the best
    monkeypatch.setattr(kit.train, "score", lambda *a: next(scores))
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in {**TINY, "epochs": 3}.items()]
    assert main(["train", "--exp", "summary", "--fold", "0", *flags]) == 0
    out = capsys.readouterr().out
    assert re.findall(r"^epoch (\d+)/3 .*\*best", out, re.M)[-1] == "2"
    assert re.search(r"^best \S+ at epoch 2; ", out, re.M), out


def test_frozen_backbone_epoch_changes_only_the_head(tiny_comp):
    from kit.models import create_model

    r = fit_fold(TrainConfig(exp="frz", epochs=1, freeze_epochs=1, lr=1e-2, **TINY))
    torch.manual_seed(42)
    init = create_model("test_resnet", 10).state_dict()
    trained = weights(r.dir / "last.pt")
    changed = {k for k in init if init[k].is_floating_point() and not torch.equal(init[k], trained[k])
               and "running" not in k}
    assert changed and all(k.startswith("fc.") for k in changed), changed


def test_fold_out_of_range_is_explained(tiny_comp):
    with pytest.raises(KitError, match=r"fold=7 but folds.csv has folds 0..2"):
        fit_fold(TrainConfig(exp="x", fold=7, epochs=1, **TINY))


def test_missing_folds_file_says_how_to_make_it(project):
    from kit.demo import build_demo

    build_demo("data", n=60, size=16)
    with pytest.raises(KitError, match="write it once with the EDA notebook or `kit folds`"):
        fit_fold(TrainConfig(exp="x", epochs=1, **TINY))


def test_sam_every_n_steps_and_mixup_off_for_the_last_epochs(tiny_comp, monkeypatch):
    seen_sam, seen_targets = [], []
    real = kit.train.sam_update

    def spy(model, opt, micro_batches, loss_fn, *a, sam=True, **k):
        seen_sam.append(sam)
        seen_targets.append(micro_batches[0][1].ndim)  # 2 = soft (mixed) targets
        return real(model, opt, micro_batches, loss_fn, *a, sam=sam, **k)

    monkeypatch.setattr(kit.train, "sam_update", spy)
    r = fit_fold(TrainConfig(exp="every", epochs=2, sam="sam", sam_every=2, mixup=0.4, mixup_off_epochs=1, **TINY))
    per_epoch = len(seen_sam) // 2
    assert seen_sam == [i % 2 == 0 for i in range(len(seen_sam))]  # two-pass SAM on every other update
    assert seen_targets == [2] * per_epoch + [1] * per_epoch  # mixed targets, then plain ones in the last epoch
    assert len(r.history) == 2


def test_accumulation_schedule_counts_the_partial_group_of_each_epoch(tiny_comp):
    """80 training images in batches of 8: 10 batches, in updates of 4, 4 and a partial 2 per epoch."""
    r = fit_fold(TrainConfig(exp="acc", epochs=3, accum_steps=4, lr=1e-2, **{**TINY, "batch_size": 8}))
    last = torch.load(r.dir / "last.pt", weights_only=True)
    assert last["step"] == last["scheduler"]["t_initial"] == 9 and last["scheduler"]["warmup_t"] == 3
    lr_min = 1e-2 / 100
    assert (r.history["lr"].iloc[:2] > 2 * lr_min).all()  # the last epoch does not run at the floor
    assert r.history["lr"].iloc[2] == pytest.approx(lr_min)  # the floor is reached at the last update


@pytest.mark.parametrize("mult", [0.1, 0.001])
def test_differential_lr_ratio_holds_through_warmup_and_decay(mult):
    from kit.models import create_model
    from kit.train import TrainState

    model = create_model("test_resnet", 3)
    cfg = TrainConfig(lr=1e-3, backbone_lr_mult=mult, epochs=4, warmup_epochs=1)
    state = TrainState.build(model, cfg, 5, 3, torch.device("cpu"), None)
    opt, sched = state.opt, state.sched
    seen = []
    for t in range(sched.t_initial + 1):  # update 0 (warmup start), warmup, peak, decay, the floor
        if t:
            sched.step_update(t)
        lrs = {g["part"]: g["lr"] for g in opt.param_groups}
        seen.append(lrs["head"])
        assert lrs["backbone"] == pytest.approx(mult * lrs["head"], rel=1e-9), t
    assert seen[0] == pytest.approx(1e-5) and max(seen) > 5e-4 and seen[-1] == pytest.approx(1e-5)


def test_differential_lr_and_no_decay_on_norms():
    from kit.models import create_model
    from kit.train import param_groups

    model = create_model("test_resnet", 3)
    groups = {(g["part"], g["weight_decay"] > 0): g for g in
              param_groups(model, TrainConfig(lr=1e-3, backbone_lr_mult=0.1, weight_decay=0.05))}
    assert groups[("head", True)]["lr"] == 1e-3 and groups[("backbone", True)]["lr"] == pytest.approx(1e-4)
    assert all(p.ndim == 1 for p in groups[("backbone", False)]["params"])
    assert sum(len(g["params"]) for g in groups.values()) == len(list(model.parameters()))


def test_bf16_autocast_runs_on_cpu(tiny_comp):
    r = fit_fold(TrainConfig(exp="bf16", epochs=1, amp="bf16", **TINY))
    assert json.loads((r.dir / "config.json").read_text())["amp_resolved"] == "bfloat16"
    assert r.oof[[str(c) for c in range(10)]].notna().all().all()


def test_resume_with_other_training_parameters_is_refused_naming_them(tiny_comp, monkeypatch, capsys, interrupted_fit):
    cfg = dict(exp="p", epochs=4, **TINY)
    interrupted_fit(TrainConfig(**cfg), 2)
    folder = tiny_comp.root.parent.parent / "runs" / "demo" / "p" / "fold0"
    with pytest.raises(KitError, match=r"last.pt was trained with other parameters "
                                       r"\(img_size: 16 -> 32, lr: 0.003 -> 0.001\).*resume=False.*--force"):
        fit_fold(TrainConfig(**{**cfg, "lr": 1e-3, "img_size": 32}))
    assert json.loads((folder / "config.json").read_text())["lr"] == 3e-3  # nothing rewritten by the refused run
    assert torch.load(folder / "last.pt", weights_only=True)["epoch"] == 2
    capsys.readouterr()
    r = fit_fold(TrainConfig(**cfg, threads=1, image_cache=False))  # runtime-only parameters may change
    assert "resuming p fold 0 at epoch 3" in capsys.readouterr().out and r.history["epoch"].tolist() == [1, 2, 3, 4]


@pytest.mark.parametrize("how", [{"resume": False}, {"no_last": True}])
def test_a_fresh_start_removes_what_an_older_run_wrote_and_nothing_else(tiny_comp, monkeypatch, how, interrupted_fit):
    cfg = dict(exp="old", epochs=3, save_top=3, tta="none", **TINY)
    interrupted_fit(TrainConfig(**cfg), 2)
    folder = tiny_comp.root.parent.parent / "runs" / "demo" / "old" / "fold0"
    for name in ("oof-d4.csv", "test_d4.csv", "test_none.csv", "top-017.pt"):  # an older run's, another tta's
        (folder / name).write_text("old")
    for name in ("notes.txt", "test_ideas.txt", "top-picks.csv", "best.pt.bak"):  # the user's own files
        (folder / name).write_text("mine")
    if how.get("no_last"):
        (folder / "last.pt").unlink()
    assert len(list(folder.glob("top-*.pt"))) == 2  # the second best of the 2 epochs, and top-017.pt
    fit_fold(TrainConfig(**{**cfg, "epochs": 1, "resume": how.get("resume", True)}))
    names = {p.name for p in folder.iterdir()}
    assert {"notes.txt", "test_ideas.txt", "top-picks.csv", "best.pt.bak"} <= names
    assert not names & {"oof-d4.csv", "test_d4.csv", "test_none.csv"} and not list(folder.glob("top-*.pt")), names
    assert pd.read_csv(folder / "history.csv")["epoch"].tolist() == [1]
    assert torch.load(folder / "last.pt", weights_only=True)["epoch"] == 1


def test_mixup_on_a_training_fold_smaller_than_an_odd_batch(tiny_comp, monkeypatch):
    """79 training images (one unreadable, skipped) and batch_size 128: one odd batch, nothing dropped."""
    from pathlib import Path

    folds = pd.read_csv(folds_path(tiny_comp), dtype={"id": str})
    one = folds.loc[folds["fold"] != 0, "id"].iloc[0]
    path = Path(tiny_comp.train.set_index("id").loc[one, "path"])
    path.write_bytes(path.read_bytes()[:40])
    seen = []
    real = kit.train.sam_update

    def spy(model, opt, micro_batches, *a, **k):
        seen.append([(len(x), t.ndim) for x, t in micro_batches])
        return real(model, opt, micro_batches, *a, **k)

    monkeypatch.setattr(kit.train, "sam_update", spy)
    r = fit_fold(TrainConfig(exp="mix", epochs=2, mixup=0.4, cutmix=1.0, on_bad_image="skip",
                             **{**TINY, "batch_size": 128}))
    assert seen == [[(78, 2)], [(78, 2)]]  # mixed (soft targets), one sample sitting each epoch out
    assert len(r.history) == 2


def test_training_changes_names_what_shapes_training_only():
    from kit.config import training_changes

    old = TrainConfig(lr=3e-3, model="test_resnet").to_dict()
    new = TrainConfig(lr=1e-3, model="test_resnet", device="cpu", num_workers=2, tta="d4", runs_dir="/abs/runs",
                      exp="other", resume=False, threads=1, image_cache=False).to_dict()
    assert training_changes(old, new) == {"lr": (3e-3, 1e-3)}
    assert training_changes({k: v for k, v in old.items() if k != "lr"}, new) == {}  # an older file's missing name
    assert training_changes(old, {**old, "mixup": 0.2, "seed": 1}) == {"mixup": (0.0, 0.2), "seed": (42, 1)}


def test_headless_set_after_kit_is_imported_turns_the_bars_into_log_lines(tiny_comp, monkeypatch, capsys):
    """The runner's workers set KIT_HEADLESS; a notebook or a test may set it after kit.train is imported."""
    monkeypatch.delenv("KIT_HEADLESS", raising=False)
    fit_fold(TrainConfig(exp="bars", epochs=1, tta="none", **TINY))
    assert "bars fold 0:" in capsys.readouterr().err  # a progress bar per fold
    monkeypatch.setenv("KIT_HEADLESS", "1")
    fit_fold(TrainConfig(exp="quiet", epochs=1, tta="none", **TINY))
    out = capsys.readouterr()
    assert "epoch 1/1" in out.out and "quiet fold 0:" not in out.err and "train:" not in out.err


def test_train_state_round_trips_every_part_through_its_state_dict():
    """What last.pt saves is what a resume loads: weights, optimizer (SAM), schedule, fp16 scaler, EMA, progress."""
    from kit.device import seed_everything
    from kit.models import create_model
    from kit.train import TrainState, train_one_epoch

    cfg = TrainConfig(model="test_resnet", epochs=3, sam="sam", ema_decay=0.9, mixup=0.4, amp="fp16", lr=1e-2)

    def build():
        seed_everything(0)  # the model's weights, the batches, the mixup draws (numpy)
        return TrainState.build(create_model("test_resnet", 3), cfg, 4, 3, torch.device("cpu"), torch.float16)

    trained = build()
    batches = [(torch.randn(4, 3, 16, 16), torch.randint(0, 3, (4,))) for _ in range(4)]
    train_one_epoch(trained, batches)
    trained.epoch, trained.rows, trained.top, trained.stale = 1, [{"epoch": 1}], [(0.5, 1)], 0
    saved = trained.state_dict()
    resumed = build()
    resumed.load_state_dict(saved)
    again = resumed.state_dict()
    assert (resumed.epoch, resumed.step, resumed.rows, resumed.top, resumed.stale) == (1, 4, [{"epoch": 1}],
                                                                                        [(0.5, 1)], 0)
    assert again["scaler"] == saved["scaler"] != build().state_dict()["scaler"]  # the fp16 steps moved it
    for part in ("model", "ema"):
        assert all(torch.equal(again[part][k], saved[part][k]) for k in saved[part]), part
        assert not all(torch.equal(build().state_dict()[part][k], saved[part][k]) for k in saved[part]), part
    moments = [s["exp_avg"] for s in saved["optimizer"]["base"]["state"].values()]
    assert moments and all(torch.equal(a["exp_avg"], m) for a, m in zip(again["optimizer"]["base"]["state"].values(),
                                                                          moments))
    assert again["scheduler"] == saved["scheduler"]


# ---- the ordinal head (kit.models.head_of): K-1 cumulative sigmoids or a softmax over the grades

ORDINAL = dict(comp="ord", metric="qwk", model="test_resnet", img_size=16, epochs=1, batch_size=16, num_workers=0)


@pytest.mark.parametrize("head, outputs", [("cumulative", 9), ("softmax", 10)])
def test_an_ordinal_fold_trains_its_head_and_predicts_per_grade_probabilities(ordinal_comp, head, outputs):
    """best.pt holds a head of K-1 = 9 outputs (cumulative) or 10 (softmax); the OOF and the test predictions are
    10 per-grade probabilities summing to one either way, and a test prediction of the validation images is the
    OOF (train and infer decode the head alike)."""
    from kit.infer import load_fold, predict_fold, predict_images
    from kit.rundir import read_config

    r = fit_fold(TrainConfig(exp=head, ordinal_head=head, tta="hflip", **ORDINAL))
    assert read_config(r.dir)["ordinal_head"] == head and read_config(r.dir)["task_resolved"] == "ordinal"
    ckpt = torch.load(r.dir / "best.pt", weights_only=True)
    assert ckpt["model"]["fc.weight"].shape[0] == outputs
    grades = [str(g) for g in range(10)]
    oof = pd.read_csv(r.dir / "oof.csv", dtype={"id": str})
    p = oof[grades].to_numpy()
    assert (p >= 0).all() and abs(p.sum(1) - 1).max() < 1e-6
    test = predict_fold(r.dir, ordinal_comp, "hflip", device="cpu", num_workers=0)
    assert test.shape == (len(ordinal_comp.test), 10) and (test >= 0).all() and abs(test.sum(1) - 1).max() < 1e-6
    fold = load_fold(r.dir, grades, torch.device("cpu"))
    paths = ordinal_comp.train.set_index("id").loc[oof["id"], "path"]
    again = predict_images([(fold, "hflip")], paths, torch.device("cpu"), num_workers=0)[0]
    assert abs(again - p).max() < 1e-5


def test_a_task_that_is_not_ordinal_ignores_ordinal_head(fit_tiny):
    r = fit_tiny("mc", ordinal_head="cumulative", num_workers=0, tta="none")
    assert torch.load(r.dir / "best.pt", weights_only=True)["model"]["fc.weight"].shape[0] == 10


def test_the_cumulative_head_trains_bce_on_smoothed_grade_above_k_targets_and_mixes_them(monkeypatch):
    """Grades 0, 1, 3, 2 of 4 -> targets [y > k] smoothed towards 0.5 like multi-label ones; with mixup, a mix of
    each row with the batch reversed (timm's multi-label mixup): still non-increasing rows, ordinal distributions."""
    import numpy as np
    import torch.nn.functional as F

    from kit.models import create_model
    from kit.train import TrainState, train_one_epoch

    seen, real = [], F.binary_cross_entropy_with_logits

    def spy(out, target, *a, **k):
        seen.append(target.detach().clone())
        return real(out, target, *a, **k)

    monkeypatch.setattr(F, "binary_cross_entropy_with_logits", spy)
    y = torch.tensor([0, 1, 3, 2])
    t = torch.tensor([[0, 0, 0], [1, 0, 0], [1, 1, 1], [1, 1, 0]], dtype=torch.float32)
    batch = [(torch.randn(4, 3, 16, 16), y)]

    cfg = TrainConfig(model="test_resnet", label_smoothing=0.1)
    train_one_epoch(TrainState.build(create_model("test_resnet", 3), cfg, 1, 3, torch.device("cpu"), None,
                                     "cumulative"), batch)
    assert seen and all(torch.allclose(s, t * 0.9 + 0.05) for s in seen)

    seen.clear()
    np.random.seed(0)  # timm draws the mix from numpy
    cfg = TrainConfig(model="test_resnet", label_smoothing=0.0, mixup=1.0)
    train_one_epoch(TrainState.build(create_model("test_resnet", 3), cfg, 1, 3, torch.device("cpu"), None,
                                     "cumulative"), batch)
    lam = 1 - seen[0][0, 0]  # row 0 (all zeros) mixed with row 3 ([1, 1, 0])
    assert 0 < lam < 1 and torch.allclose(seen[0], lam * t + (1 - lam) * t.flip(0))
    assert (seen[0][:, 1:] <= seen[0][:, :-1]).all()


def other_competition(project, name="other", root=None, n=60):
    """A second tiny competition, n images, 2 folds: data/<name>, or <root>/<name> (outside data_dir)."""
    from kit.competition import load_competition
    from kit.demo import build_demo
    from kit.folds import make_folds, write_folds

    build_demo(root or "data", name=name, n=n, size=16)
    comp = load_competition(str(project / root / name) if root else name)
    write_folds(make_folds(comp, 2), folds_path(comp))
    return comp


def test_two_competitions_with_one_experiment_name_never_share_a_run_folder(tiny_comp, project, fit_tiny):
    a = fit_tiny("r18")
    b = fit_tiny("r18", comp="other") if other_competition(project) else None
    assert a.dir == project / "runs" / "demo" / "r18" / "fold0"
    assert b.dir == project / "runs" / "other" / "r18" / "fold0"
    assert is_complete(a.dir) and is_complete(b.dir)
    assert json.loads((a.dir / "config.json").read_text())["competition"] == str(tiny_comp.root)


def test_a_competition_of_the_same_name_elsewhere_is_refused_before_anything_is_removed(tiny_comp, project, fit_tiny):
    """data/flowers and elsewhere/flowers both map to runs/flowers/: the second may not resume or overwrite the
    first's fold; the same competition moved (same folds) is no clash."""
    other_competition(project, "flowers")
    done = fit_tiny("r18", comp="flowers")
    before = {p.name: p.stat().st_mtime_ns for p in done.dir.iterdir() if p.name != ".lock"}  # the lock is taken
    moved = other_competition(project, "flowers", root="moved")  # the same images and folds at another root
    assert fit_fold(TrainConfig(comp=str(moved.root), exp="r18", fold=1, model="test_resnet", img_size=16,
                                epochs=1, batch_size=32)).dir == done.dir.parent / "fold1"
    second = other_competition(project, "flowers", root="elsewhere", n=50)  # another competition: other folds
    with pytest.raises(KitError, match=r"holds a run of another competition, .*data/flowers .* not of .*elsewhere/"
                                       r"flowers .*both are named 'flowers'.*nothing was written"):
        fit_fold(TrainConfig(comp=str(second.root), exp="r18", fold=0, resume=False, model="test_resnet",
                             img_size=16, epochs=1, batch_size=32))
    assert {p.name: p.stat().st_mtime_ns for p in done.dir.iterdir() if p.name != ".lock"} == before


def test_keep_last_false_drops_last_pt_of_a_finished_fold_and_an_unfinished_one_still_resumes(tiny_comp, project,
                                                                                               interrupted_fit):
    cfg = TrainConfig(exp="k", keep_last=False, model="test_resnet", img_size=16, epochs=3, batch_size=32)
    interrupted_fit(cfg, 2)  # stopped as epoch 3 starts: unfinished, so last.pt stays for the resume
    folder = project / "runs" / "demo" / "k" / "fold0"
    assert (folder / "last.pt").is_file() and not is_complete(folder)
    done = fit_fold(cfg)  # resumes at epoch 3, finishes, then drops last.pt
    assert done.history["epoch"].tolist() == [1, 2, 3]
    assert is_complete(folder) and not (folder / "last.pt").exists()
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir() if p.name != ".lock"}
    with pytest.raises(KitError, match=r"is a finished fold without last.pt .* resume=False .*nothing was removed"):
        fit_fold(cfg)  # rerun as is: nothing to resume, and its outputs are not removed for a fresh start
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir() if p.name != ".lock"} == before
    kept = fit_fold(TrainConfig(exp="kept", model="test_resnet", img_size=16, epochs=1, batch_size=32))
    assert (kept.dir / "last.pt").is_file()  # the default keeps it
    straight = fit_fold(TrainConfig(exp="straight", keep_last=False, model="test_resnet", img_size=16, epochs=3,
                                    batch_size=32))
    assert straight.history.drop(columns="seconds").equals(done.history.drop(columns="seconds"))  # exact resume


def test_average_top_averages_the_best_checkpoints_recomputes_batchnorm_and_predicts(tiny_comp, project, fit_tiny):
    from kit.infer import predict_fold

    r = fit_tiny("avg", epochs=3, save_top=3, average_top=3, tta="none", lr=1e-2)
    best = torch.load(r.dir / "best.pt", weights_only=True)
    epochs = best["averaged"]
    assert sorted(epochs) == [1, 2, 3] and best["epoch"] == epochs[0]  # the best single epoch first
    singles = [torch.load(r.dir / f"top-{e:03d}.pt", weights_only=True)["model"] for e in epochs]
    for k, v in best["model"].items():
        mean = torch.stack([s[k].float() for s in singles]).mean(0)
        if k.endswith(("running_mean", "running_var")):  # recomputed on the training images, not averaged
            assert not torch.allclose(v, mean, atol=1e-6), k
        elif v.is_floating_point():
            assert torch.allclose(v, mean, atol=1e-6), k
    assert r.best_score == best["score"] and (r.dir / "oof.csv").is_file()
    p = predict_fold(r.dir, tiny_comp, "none", "cpu")
    assert p.shape == (len(tiny_comp.test), len(tiny_comp.classes)) and np.allclose(p.sum(1), 1, atol=1e-5)
    again = fit_tiny("avg", epochs=3, save_top=3, average_top=3, tta="none", lr=1e-2)  # a rerun resumes, finished
    assert (r.dir / "best.pt").read_bytes() == (again.dir / "best.pt").read_bytes()  # not averaged twice
    with pytest.raises(KitError, match=r"average_top=3 averages the best 3 checkpoints but save_top=2 keeps 2"):
        TrainConfig(save_top=2, average_top=3)


def test_an_average_that_validates_worse_than_the_best_checkpoint_is_not_kept(tiny_comp, project, fit_tiny,
                                                                             monkeypatch):
    real = kit.train.predict

    def predict(model, loader, *a, desc="predict", **k):  # the average validates as uniform guessing
        p = real(model, loader, *a, desc=desc, **k)
        return np.full_like(p, 1 / p.shape[1]) if desc == "validate average" else p

    monkeypatch.setattr(kit.train, "predict", predict)
    r = fit_tiny("worse", epochs=3, save_top=3, average_top=3, tta="none", lr=1e-2)
    best = torch.load(r.dir / "best.pt", weights_only=True)
    assert "averaged" not in best and best["average_tried"] < best["score"]
    single = torch.load(r.dir / f"top-{best['epoch']:03d}.pt", weights_only=True) if (
        r.dir / f"top-{best['epoch']:03d}.pt").exists() else None
    assert single is None  # the best stayed best.pt: nothing moved aside
    assert r.best_score == best["score"]


def test_a_tta_refused_before_training_leaves_the_folds_earlier_run_in_place(fit_tiny):
    """A fresh start (resume=False, what run-folds --force passes) whose tta the model cannot run is refused
    before it removes anything: the finished fold's checkpoint and OOF stay."""
    r = fit_tiny("cx", model="test_convnext", img_size=32, tta="auto")
    before = sorted(p.name for p in r.dir.iterdir())
    with pytest.raises(KitError, match="cannot predict the views of tta='multiscale'"):
        fit_tiny("cx", model="test_convnext", img_size=32, tta="multiscale", resume=False)
    assert sorted(p.name for p in r.dir.iterdir()) == before


def test_tta_auto_skips_a_preset_the_model_cannot_run_and_a_fixed_one_is_refused_before_training(fit_tiny, capsys):
    """test_convnext at 32 px cannot run multiscale's smaller view: tta='auto' finishes the fold with the other
    presets' OOF and says which it left out; tta='multiscale', or an img_size nothing runs at, is refused before
    an epoch is spent."""
    r = fit_tiny("cx", model="test_convnext", img_size=32, tta="auto")
    out = capsys.readouterr().out
    assert "tta auto: no OOF with 'multiscale', test_convnext cannot predict its views at 32 px" in out
    names = {p.name for p in r.dir.glob("oof-*.csv")}
    assert "oof-multiscale.csv" not in names and {"oof-none.csv", "oof-hflip.csv", "oof-d4.csv"} <= names
    for tta, size, says in (("multiscale", 32, "cannot predict the views of tta='multiscale' at img_size 32"),
                            ("auto", 16, "cannot predict at img_size 16")):
        with pytest.raises(KitError, match=rf"test_convnext {says} \(.*\); choose a larger img_size"):
            fit_tiny(f"cx-{tta}", model="test_convnext", img_size=size, tta=tta, epochs=2)
        assert not (r.dir.parent.parent / f"cx-{tta}" / "fold0" / "history.csv").exists()


def test_tta_auto_skips_the_views_a_vit_asserts_on_and_a_vit_size_it_does_not_take_is_refused(fit_tiny):
    """timm's ViTs assert their input (AssertionError, not RuntimeError): test_vit at 32 px runs 'none' but not
    multiscale's 28 px view (not a multiple of its 16 px patch); at 24 px it runs nothing."""
    r = fit_tiny("v", model="test_vit", img_size=32, tta="auto")
    names = {p.name for p in r.dir.glob("oof-*.csv")}
    assert "oof-multiscale.csv" not in names and "oof-none.csv" in names
    with pytest.raises(KitError, match="test_vit cannot predict the views of tta='multiscale' at img_size 32"):
        fit_tiny("v2", model="test_vit", img_size=32, tta="multiscale", epochs=2)
    with pytest.raises(KitError, match="test_vit cannot predict at img_size 24"):
        fit_tiny("v3", model="test_vit", img_size=24, epochs=2)
