"""Test predictions: every fold's checkpoint with the experiment's TTA, averaged over folds."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import KitError
from .augment import eval_transform
from .competition import Competition
from .data import ImageDataset, make_loader
from .ensemble import blend, check_compatible, fit_blend_weights, honest_blend_score, load_oof
from .io import read_json, write_csv, write_json
from .metrics import METRICS, metric_value
from .models import create_model
from .paths import exp_dir
from .submission import make_submission
from .train import CHECKPOINT, CONFIG, pick_device
from .tta import predict


def predict_fold(fold_path: Path, comp: Competition, tta: str, device: str = "auto", batch_size: int = 128,
                 num_workers: int = 0) -> np.ndarray:
    """(N_test, K) probabilities of one fold's best checkpoint; cached as test_<tta>.csv in the fold folder."""
    cache = fold_path / f"test_{tta}.csv"
    if cache.is_file():
        cached = pd.read_csv(cache, dtype={"id": str})
        if cached["id"].tolist() == comp.test["id"].tolist():
            return cached.drop(columns="id").to_numpy(float)
    cfg = read_json(fold_path / CONFIG)
    ckpt = torch.load(fold_path / CHECKPOINT, map_location="cpu", weights_only=True)
    if ckpt["classes"] != [str(c) for c in comp.classes]:
        raise KitError(f"{fold_path / CHECKPOINT} was trained on classes {ckpt['classes']}, the competition has "
                       f"{[str(c) for c in comp.classes]}")
    dev = pick_device(device)
    model = create_model(ckpt["timm_name"], len(ckpt["classes"]))
    model.load_state_dict(ckpt["model"])
    model.to(dev)
    ds = ImageDataset(comp.test["path"], None, eval_transform(ckpt["img_size"], cfg["mean"], cfg["std"]))
    probs = predict(model, make_loader(ds, batch_size, False, num_workers), tta, device=dev,
                    desc=f"{cfg['exp']} fold {cfg['fold']} test", autocast=dev.type == "cuda")
    write_csv(pd.DataFrame(probs, columns=ckpt["classes"]).assign(id=comp.test["id"].to_numpy())
              [["id", *ckpt["classes"]]], cache)
    return probs


def predict_test(runs_dir: str | Path, exp: str, comp: Competition, tta: str, n_folds: int,
                 device: str = "auto") -> np.ndarray:
    """Mean over ALL folds (not the last one by accident) of the per-fold test probabilities."""
    d = exp_dir(runs_dir, exp)
    per_fold = [predict_fold(d / f"fold{k}", comp, tta, device) for k in range(n_folds)]
    return np.mean(per_fold, axis=0)


@dataclass
class BlendReport:
    scores: pd.DataFrame  # experiment, tta, oof score, weight
    weights: pd.Series
    oof_score: float  # in-sample: weights fitted and scored on the same OOF rows
    honest_score: float  # weights fitted on the other folds, scored on the held-out fold
    honest_std: float
    y: np.ndarray
    oof_probs: np.ndarray
    test_probs: np.ndarray
    submission: pd.DataFrame
    classes: list[str]


def infer_and_blend(comp: Competition, folds: pd.DataFrame, exps: list[str], runs_dir: str | Path = "runs",
                    method: str = "slsqp", metric: str = "accuracy", device: str = "auto") -> BlendReport:
    """OOF of every experiment -> blend weights -> test predictions with each experiment's TTA -> submission."""
    if not exps:
        raise KitError("no experiments to blend; pass exps=['exp_a', 'exp_b']")
    loaded = [load_oof(runs_dir, e, folds) for e in exps]
    check_compatible(loaded)
    y = loaded[0].oof["target"].to_numpy()
    fold = loaded[0].oof["fold"].to_numpy()
    preds = [e.probs for e in loaded]
    w = fit_blend_weights(preds, y, method, metric)
    oof_probs = blend(preds, w)
    honest, spread = honest_blend_score(preds, y, fold, method, metric)
    n_folds = int(folds["fold"].max()) + 1
    test_probs = blend([predict_test(runs_dir, e.name, comp, e.tta, n_folds, device) for e in loaded], w)
    scores = pd.DataFrame({"experiment": exps, "tta": [e.tta for e in loaded],
                           f"oof_{metric}": [metric_value(metric, y, p) for p in preds], "weight": w})
    return BlendReport(scores, pd.Series(w, index=exps, name="weight"), metric_value(metric, y, oof_probs),
                       sign(metric) * honest, spread, y, oof_probs, test_probs, make_submission(comp, test_probs),
                       loaded[0].classes)


def sign(metric: str) -> int:
    """score() negates losses; this turns them back into the metric's own units."""
    return 1 if METRICS[metric][1] else -1


def save_blend(report: BlendReport, path: str | Path, method: str, metric: str, folds_hash: str) -> Path:
    """Everything needed to re-run inference on a new test set with no training data."""
    return write_json({"experiments": report.scores.to_dict("records"), "method": method, "metric": metric,
                       "folds_hash": folds_hash, "classes": report.classes, "oof_score": report.oof_score,
                       "honest_score": report.honest_score, "honest_std": report.honest_std}, path)
