"""Test predictions: every fold's checkpoint with the experiment's TTA, averaged over folds."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import KitError
from .augment import eval_transform
from .competition import Competition, load_test_competition
from .data import ImageDataset, make_loader
from .ensemble import blend, check_compatible, fit_blend_weights, honest_blend_score, load_best_tta
from .io import read_json, write_csv, write_json
from .metrics import metric_value
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
    model.to(dev, memory_format=torch.channels_last if cfg.get("channels_last", True) else torch.preserve_format)
    ds = ImageDataset(comp.test["path"], None, eval_transform(ckpt["img_size"], cfg["mean"], cfg["std"]),
                      ckpt["img_size"])
    probs = predict(model, make_loader(ds, batch_size, False, num_workers), tta, device=dev,
                    desc=f"{cfg['exp']} fold {cfg['fold']} test", autocast=dev.type == "cuda")
    if os.access(fold_path, os.W_OK):  # /kaggle/input is read-only: no cache there
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
    scores: pd.DataFrame  # experiment, chosen tta, OOF score without and with it, weight
    tta_scores: pd.DataFrame  # every experiment x TTA preset tried, OOF score
    weights: pd.Series
    oof_score: float  # in-sample: weights fitted and scored on the same OOF rows
    honest_score: float  # weights fitted on the other folds, scored on the held-out fold
    honest_std: float
    y: np.ndarray
    oof_probs: np.ndarray
    test_probs: np.ndarray
    submission: pd.DataFrame
    classes: list[str]
    blend: dict  # what blend.json holds: enough to predict a new test set without any training data


def infer_and_blend(comp: Competition, folds: pd.DataFrame, exps: list[str] | str, runs_dir: str | Path = "runs",
                    method: str = "caruana", metric: str = "accuracy", space: str = "prob", power: float = 2.0,
                    device: str = "auto") -> BlendReport:
    """Per experiment the TTA that scores best on OOF -> blend weights on those OOF -> test predictions with
    each experiment's own TTA, averaged over all its folds -> submission."""
    exps = [e for e in exps.split(",") if e] if isinstance(exps, str) else list(exps)
    if not exps:
        raise KitError("no experiments to blend; pass exps=['exp_a', 'exp_b']")
    chosen = [load_best_tta(runs_dir, e, folds, metric) for e in exps]
    loaded = [e for e, _ in chosen]
    tta_table = pd.concat([t for _, t in chosen], ignore_index=True)
    check_compatible(loaded)
    y = loaded[0].oof["target"].to_numpy()
    fold = loaded[0].oof["fold"].to_numpy()
    preds = [e.probs for e in loaded]
    w = fit_blend_weights(preds, y, method, metric, space=space, power=power)
    oof_probs = blend(preds, w, space, power)
    honest, spread = honest_blend_score(preds, y, fold, method, metric, space, power)
    n_folds = int(folds["fold"].max()) + 1
    no_tta = [tta_table[(tta_table["experiment"] == e) & (tta_table["tta"] == "none")][f"oof_{metric}"] for e in exps]
    scores = pd.DataFrame({"experiment": exps, "tta": [e.tta for e in loaded],
                           f"oof_{metric}_no_tta": [v.iloc[0] if len(v) else np.nan for v in no_tta],
                           f"oof_{metric}": [metric_value(metric, y, p) for p in preds], "weight": w})
    spec = {"experiments": [{"name": e.name, "tta": e.tta, "weight": float(wi), "n_folds": n_folds}
                            for e, wi in zip(loaded, w)],
            "method": method, "metric": metric, "space": space, "power": power, "classes": loaded[0].classes,
            "folds_hash": loaded[0].folds_hash, "oof_score": metric_value(metric, y, oof_probs),
            "honest_score": honest, "honest_std": spread, "scores": scores.to_dict("records")}
    test_probs = predict_blend(comp, spec, runs_dir, device)
    return BlendReport(scores, tta_table, pd.Series(w, index=exps, name="weight"), spec["oof_score"], honest,
                       spread, y, oof_probs, test_probs, make_submission(comp, test_probs), loaded[0].classes, spec)


def predict_blend(comp: Competition, spec: dict, runs_dir: str | Path = "runs", device: str = "auto") -> np.ndarray:
    """Test probabilities from a blend spec alone (blend.json): no OOF, folds or training data needed."""
    if [str(c) for c in comp.classes] != spec["classes"]:
        raise KitError(f"the blend was fitted on classes {spec['classes']}, the competition has {comp.classes}")
    used = [e for e in spec["experiments"] if e["weight"] > 0]  # a zero weight costs no inference
    per_exp = [predict_test(runs_dir, e["name"], comp, e["tta"], e["n_folds"], device) for e in used]
    return blend(per_exp, np.array([e["weight"] for e in used]), spec["space"], spec["power"])


def submission_from_blend(comp: str | Path, blend_json: str | Path, data_dir: str | Path = "data",
                          runs_dir: str | Path = "runs", device: str = "auto") -> tuple[Competition, pd.DataFrame]:
    """The saved blend applied to a (new) test set: checkpoints + blend.json, nothing else."""
    spec = read_json(blend_json)
    c = load_test_competition(comp, [label_value(x) for x in spec["classes"]], data_dir)
    return c, make_submission(c, predict_blend(c, spec, runs_dir, device))


def label_value(label: str):
    """blend.json keeps classes as strings; integer labels go back to ints for the submission."""
    return int(label) if label.lstrip("-").isdigit() else label


def save_blend(report: BlendReport, path: str | Path) -> Path:
    return write_json(report.blend, path)
