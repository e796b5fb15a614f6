import json

import pandas as pd
import pytest
import torch

from kit import KitError
from kit.config import TrainConfig
from kit.folds import folds_hash, folds_path, read_folds
from kit.train import fit_fold, is_complete


def test_one_fold_writes_the_run_folder_contract(tiny_comp):
    cfg = TrainConfig(exp="t", fold=1, model="test_resnet", img_size=16, epochs=2, batch_size=32)
    r = fit_fold(cfg)
    assert is_complete(r.dir) and r.dir.name == "fold1" and r.dir.parent.name == "t"
    folds = read_folds(folds_path(tiny_comp))
    config = json.loads((r.dir / "config.json").read_text())
    assert config["folds_hash"] == folds_hash(folds) and config["seed"] == 42 and config["kit_version"]
    assert config["epochs"] == 2 and config["timm_name"] == "test_resnet"
    history = pd.read_csv(r.dir / "history.csv")
    assert history["epoch"].tolist() == [0, 1] and {"train_loss", "val_loss", "val_accuracy"} <= set(history)
    ckpt = torch.load(r.dir / "best.pt", weights_only=True)  # safe to load
    assert ckpt["epoch"] == r.best_epoch and ckpt["classes"] == [str(c) for c in range(10)]
    oof = pd.read_csv(r.dir / "oof.csv", dtype={"id": str})
    val_ids = set(folds.loc[folds["fold"] == 1, "id"])
    assert set(oof["id"]) == val_ids and len(oof) == len(val_ids)
    assert (oof["tta"] == "none").all() and (oof["folds_hash"] == folds_hash(folds)).all()
    assert oof[[str(c) for c in range(10)]].sum(axis=1).sub(1).abs().max() < 1e-4


def test_same_seed_same_result(tiny_comp):
    a = fit_fold(TrainConfig(exp="a", model="test_resnet", img_size=16, epochs=1, batch_size=32))
    b = fit_fold(TrainConfig(exp="b", model="test_resnet", img_size=16, epochs=1, batch_size=32))
    assert a.history["train_loss"].equals(b.history["train_loss"])


def test_fold_out_of_range_is_explained(tiny_comp):
    with pytest.raises(KitError, match=r"fold=7 but folds.csv has folds 0..2"):
        fit_fold(TrainConfig(exp="x", fold=7, model="test_resnet", img_size=16, epochs=1))


def test_missing_folds_file_says_how_to_make_it(project):
    from kit.demo import build_demo

    build_demo("data", n=60, size=16)
    with pytest.raises(KitError, match="write it once with the EDA notebook or `kit folds`"):
        fit_fold(TrainConfig(exp="x", model="test_resnet", img_size=16, epochs=1))
