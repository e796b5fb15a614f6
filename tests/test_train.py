import json

import pandas as pd
import pytest
import torch

import kit.train
from kit import KitError
from kit.config import TrainConfig
from kit.folds import folds_hash, folds_path, read_folds
from kit.train import fit_fold, is_complete

TINY = dict(model="test_resnet", img_size=16, batch_size=32)


def test_one_fold_writes_the_run_folder_contract(tiny_comp):
    r = fit_fold(TrainConfig(exp="t", fold=1, epochs=2, **TINY))
    assert is_complete(r.dir) and r.dir.name == "fold1" and r.dir.parent.name == "t"
    folds = read_folds(folds_path(tiny_comp))
    config = json.loads((r.dir / "config.json").read_text())
    assert config["folds_hash"] == folds_hash(folds) and config["seed"] == 42 and config["kit_version"]
    assert config["epochs"] == 2 and config["timm_name"] == "test_resnet" and config["amp_resolved"] == "off"
    history = pd.read_csv(r.dir / "history.csv")
    assert history["epoch"].tolist() == [0, 1] and {"train_loss", "val_loss", "val_accuracy"} <= set(history)
    ckpt = torch.load(r.dir / "best.pt", weights_only=True)  # safe to load
    assert ckpt["epoch"] == r.best_epoch and ckpt["classes"] == [str(c) for c in range(10)]
    torch.load(r.dir / "last.pt", weights_only=True)
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


@pytest.mark.parametrize("extra", [{}, {"sam": "sam", "mixup": 0.4, "ema_decay": 0.9, "accum_steps": 2}])
def test_interrupted_and_resumed_run_ends_with_the_same_weights(tiny_comp, monkeypatch, extra):
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
    assert r.history["epoch"].tolist() == [0, 1, 2, 3]
    runs = tiny_comp.root.parent.parent / "runs"
    for key in ("model", "ema") if extra else ("model",):
        a, b = weights(runs / "straight/fold0/last.pt", key), weights(runs / "resumed/fold0/last.pt", key)
        assert all(torch.equal(a[k], b[k]) for k in a), key
    assert pd.read_csv(runs / "straight/fold0/history.csv").drop(columns="seconds").equals(
        r.history.drop(columns="seconds"))


def test_ema_weights_differ_from_raw_and_are_what_is_saved(tiny_comp):
    r = fit_fold(TrainConfig(exp="ema", epochs=2, ema_decay=0.9, save_top=1, **TINY))
    best, last = weights(r.dir / "best.pt"), torch.load(r.dir / "last.pt", weights_only=True)
    raw, ema = last["model"], last["ema"]
    assert not all(torch.equal(raw[k], ema[k]) for k in raw if raw[k].is_floating_point())
    if r.best_epoch == 1:
        assert all(torch.equal(best[k], ema[k]) for k in best)
    assert not all(torch.equal(best[k], raw[k]) for k in best if best[k].is_floating_point())


def test_top_n_checkpoints_and_early_stopping(tiny_comp, monkeypatch):
    scores = iter([0.5, 0.7, 0.6, 0.4, 0.3, 0.2])
    monkeypatch.setattr(kit.train, "score", lambda *a: next(scores))
    r = fit_fold(TrainConfig(exp="top", epochs=6, save_top=2, patience=3, **TINY))
    assert r.history["epoch"].tolist() == [0, 1, 2, 3, 4]  # stopped 3 epochs after the best (epoch 1)
    assert weights(r.dir / "best.pt", "epoch") == 1
    assert sorted(p.name for p in r.dir.glob("top-*.pt")) == ["top-002.pt"]  # the second best


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
