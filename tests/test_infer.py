"""Test predictions and blends are tied to the checkpoints that made them (kit.infer)."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

import kit
from kit import KitError
from kit.folds import folds_hash, folds_path, read_folds
from kit.infer import infer_and_blend, predict_blend, predict_fold
from kit.io import save_torch, write_json
from kit.models import create_model
from kit.rundir import checkpoint_hash, oof_frame, oof_name


def save_model(fold_path, classes, seed):
    """A best.pt as fit_fold writes it, of an untrained test_resnet: seed picks the weights."""
    torch.manual_seed(seed)
    model = create_model("test_resnet", len(classes))
    save_torch({"model": model.state_dict(), "classes": classes, "timm_name": "test_resnet", "img_size": 16,
                "epoch": 1, "score": 0.0}, fold_path / "best.pt")
    return checkpoint_hash(fold_path / "best.pt")


def fake_fold(fold_path, classes, seed=0, kit_version=kit.__version__):
    """A trained fold's folder as infer reads it (best.pt + config.json), without the training."""
    fold_path.mkdir(parents=True, exist_ok=True)
    write_json({"exp": fold_path.parent.name, "fold": int(fold_path.name.removeprefix("fold")), "mean": [0.5] * 3,
                "std": [0.25] * 3, "channels_last": False, "amp_resolved": "off", "kit_version": kit_version},
               fold_path / "config.json")
    return save_model(fold_path, classes, seed)


def fake_experiment(runs, exp, folds, classes, oofs):
    """Every fold of `exp` with OOF files: oofs(k, part) -> {tta: (rows, K) probabilities}, first one also oof.csv."""
    for k in range(int(folds["fold"].max()) + 1):
        d = runs / exp / f"fold{k}"
        made_by = fake_fold(d, classes, seed=k)
        part = folds[folds["fold"] == k]
        y = part["label"].astype(str).map({c: i for i, c in enumerate(classes)}).to_numpy()
        frames = {t: oof_frame(part["id"], k, y, p, classes, t, folds_hash(folds), made_by)
                  for t, p in oofs(k, y).items()}
        for t, frame in frames.items():
            frame.to_csv(d / oof_name(t), index=False)
        next(iter(frames.values())).to_csv(d / oof_name(None), index=False)


def classes_of(comp):
    return [str(c) for c in comp.classes]


def test_retrained_fold_does_not_reuse_cached_test_predictions(tiny_comp, project):
    fold = project / "runs" / "m" / "fold0"
    fake_fold(fold, classes_of(tiny_comp), seed=0)
    old = predict_fold(fold, tiny_comp, "none", "cpu")
    save_model(fold, classes_of(tiny_comp), seed=1)  # retrained: another best.pt, the old cache survives
    new = predict_fold(fold, tiny_comp, "none", "cpu")
    assert not np.allclose(new, old)
    cache = pd.read_csv(fold / "test_none.csv", dtype=str)
    assert set(cache["checkpoint"]) == {checkpoint_hash(fold / "best.pt")}  # the cache now names the new one
    (fold / "test_none.csv").unlink()
    assert np.allclose(new, predict_fold(fold, tiny_comp, "none", "cpu"), atol=1e-6)  # what best.pt predicts


def test_cache_that_names_no_checkpoint_is_not_used(tiny_comp, project):
    fold = project / "runs" / "m" / "fold0"
    fake_fold(fold, classes_of(tiny_comp))
    classes = classes_of(tiny_comp)
    uniform = pd.DataFrame(1 / len(classes), index=range(len(tiny_comp.test)), columns=classes)
    uniform.insert(0, "id", tiny_comp.test["id"].to_numpy())
    uniform.to_csv(fold / "test_none.csv", index=False)  # as an older kit wrote it: ids and classes only
    p = predict_fold(fold, tiny_comp, "none", "cpu")
    assert not np.allclose(p, 1 / len(classes))


def test_fold_without_its_checkpoint_is_refused_even_with_cached_predictions(tiny_comp, project):
    fold = project / "runs" / "m" / "fold1"
    fake_fold(fold, classes_of(tiny_comp))
    predict_fold(fold, tiny_comp, "none", "cpu")
    (fold / "best.pt").unlink()
    assert (fold / "test_none.csv").is_file()
    with pytest.raises(KitError, match=r"experiment 'm' fold1: .*fold1/best.pt is missing.*--exp m --folds 1 --force"):
        predict_fold(fold, tiny_comp, "none", "cpu")


def test_fold_trained_by_another_kit_version_is_refused(tiny_comp, project):
    folds = read_folds(folds_path(tiny_comp))
    classes = classes_of(tiny_comp)
    fake_experiment(project / "runs", "m", folds, classes, lambda k, y: {"none": np.eye(len(classes))[y]})
    predict_fold(project / "runs" / "m" / "fold2", tiny_comp, "none", "cpu")  # a cache the refusal must not use
    cfg = project / "runs" / "m" / "fold2" / "config.json"
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "kit_version": "0.0.1"}))
    version = rf"experiment 'm' fold2 was trained by kit 0.0.1 .* this is kit {kit.__version__}"
    with pytest.raises(KitError, match=version):
        predict_fold(project / "runs" / "m" / "fold2", tiny_comp, "none", "cpu")
    with pytest.raises(KitError, match=version):  # the OOF side too: nothing of that fold is blended
        infer_and_blend(tiny_comp, folds, ["m"], device="cpu")


def test_honest_score_chooses_the_tta_inside_the_cross_fit(tiny_comp, project):
    """Two presets, equally good on all OOF rows: 'none' right on folds 0 and 1, 'hflip' on folds 0 and 2.
    On all rows the tie goes to 'none' (2/3 in-sample). Nested, each held-out fold picks on the other two:
    fold 0 -> none (tie) right, fold 1 -> hflip (1 vs 1/2) wrong, fold 2 -> none (1 vs 1/2) wrong: 1/3.
    Choosing the TTA on all rows and then cross-fitting only the weights would say 2/3."""
    folds = read_folds(folds_path(tiny_comp))
    classes = classes_of(tiny_comp)

    def oofs(k, y):
        right, wrong = np.eye(len(classes))[y], np.eye(len(classes))[(y + 1) % len(classes)]
        return {"none": right if k in (0, 1) else wrong, "hflip": right if k in (0, 2) else wrong}

    fake_experiment(project / "runs", "m", folds, classes, oofs)
    r = infer_and_blend(tiny_comp, folds, ["m"], device="cpu")
    assert r.scores["tta"].tolist() == ["none"] and r.oof_score == pytest.approx(2 / 3, abs=0.02)
    assert r.honest_score == pytest.approx(1 / 3)  # per fold: 1, 0, 0
    assert "best epoch" in r.honest_leak and r.blend["honest_leak"] == r.honest_leak


def test_oof_left_by_an_earlier_run_with_another_tta_is_not_ranked(tiny_comp, project):
    """Fold 1 was rerun with tta='hflip' after a tta='auto' run: its oof-none.csv (perfect) is the old
    checkpoint's and must not be chosen next to the new hflip OOF."""
    folds = read_folds(folds_path(tiny_comp))
    classes = classes_of(tiny_comp)

    def oofs(k, y):
        return {"hflip": np.eye(len(classes))[y] * 0.5 + 0.05, "none": np.eye(len(classes))[y]}

    fake_experiment(project / "runs", "m", folds, classes, oofs)
    save_model(project / "runs" / "m" / "fold1", classes, seed=7)  # the rerun's best.pt
    stale = project / "runs" / "m" / "fold1"
    for name in ("oof-hflip.csv", "oof.csv"):  # what the rerun wrote again, for its own checkpoint
        frame = pd.read_csv(stale / name, dtype={"id": str})
        frame.assign(checkpoint=checkpoint_hash(stale / "best.pt"), tta="hflip").to_csv(stale / name, index=False)
    r = infer_and_blend(tiny_comp, folds, ["m"], device="cpu")
    assert r.tta_scores["tta"].tolist() == ["hflip"] and r.scores["tta"].tolist() == ["hflip"]


def blend_spec(tiny_comp, project):
    folds = read_folds(folds_path(tiny_comp))
    classes = classes_of(tiny_comp)
    fake_experiment(project / "runs", "m", folds, classes, lambda k, y: {"none": np.eye(len(classes))[y]})
    return infer_and_blend(tiny_comp, folds, ["m"], device="cpu").blend


def test_blend_refuses_a_fold_retrained_after_it_was_fitted(tiny_comp, project):
    spec = blend_spec(tiny_comp, project)
    assert [len(e["checkpoints"]) for e in spec["experiments"]] == [3]
    save_model(project / "runs" / "m" / "fold2", classes_of(tiny_comp), seed=9)
    with pytest.raises(KitError, match=r"fold2/best.pt is checkpoint \w+, not \w+, the one the blend was fitted"):
        predict_blend(tiny_comp, spec, "runs", "cpu")


def test_blend_json_experiment_names_are_names_not_paths(tiny_comp, project):
    spec = blend_spec(tiny_comp, project)
    outside = project / "outside"  # a folder beside runs/ that a '../' name would reach
    (project / "runs" / "m").rename(outside)
    for cache in outside.glob("fold*/test_*.csv"):  # the ones blend_spec made
        cache.unlink()
    spec["experiments"][0]["name"] = "../outside"
    with pytest.raises(KitError, match=r"blend experiment name '\.\./outside' is not a plain name"):
        predict_blend(tiny_comp, spec, "runs", "cpu")
    assert not list(outside.glob("fold*/test_*.csv"))  # nothing was read or written there


@pytest.mark.parametrize("metric", ["accuracy", "log_loss"])
def test_rank_space_is_refused_for_a_metric_that_reads_probabilities(tiny_comp, project, metric):
    spec = blend_spec(tiny_comp, project)
    with pytest.raises(KitError, match=f"space='rank' .* metric={metric!r} reads probabilities"):
        infer_and_blend(tiny_comp, read_folds(folds_path(tiny_comp)), ["m"], metric=metric, space="rank",
                        device="cpu")
    with pytest.raises(KitError, match="space='rank'"):
        predict_blend(tiny_comp, {**spec, "space": "rank", "metric": metric}, "runs", "cpu")


def test_every_oof_file_of_a_trained_fold_names_its_checkpoint(tiny_comp, project):
    from kit.config import TrainConfig
    from kit.train import fit_fold

    r = fit_fold(TrainConfig(exp="m", fold=0, model="test_resnet", img_size=16, epochs=1, tta="auto"))
    files = sorted(r.dir.glob("oof*.csv"))
    assert len(files) == 6  # oof.csv and one per preset
    for f in files:
        assert set(pd.read_csv(f, dtype=str)["checkpoint"]) == {checkpoint_hash(r.dir / "best.pt")}, f


def test_a_fold_config_with_an_unknown_precision_is_refused_naming_the_file(tiny_comp, project):
    fold = project / "runs" / "m" / "fold0"
    fake_fold(fold, classes_of(tiny_comp))
    config = fold / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "amp_resolved": "bf16"}))
    with pytest.raises(KitError, match=rf"{config}: amp_resolved='bf16' is not one of"):
        predict_fold(fold, tiny_comp, "none", "cpu")
