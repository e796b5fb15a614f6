"""Test predictions: every fold's checkpoint with the experiment's TTA, averaged over folds."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import KitError
from .augment import eval_transform
from .competition import Competition, load_test_competition
from .data import ImageDataset, make_loader
from .device import inference_dtype, pick_device
from .ensemble import (HONEST_LEAK, blend, check_compatible, check_space, fit_blend_weights, fit_objective,
                       honest_blend_score, load_tta_candidates, pick_tta, tta_scores)
from .io import read_json, write_json
from .metrics import metric_value
from .models import create_model
from .paths import check_name, exp_dir
from .rundir import CHECKPOINT, CONFIG, fold_checkpoint, load_best, read_config, read_test_cache, write_test_cache
from .submission import make_submission
from .tta import predict


def predict_fold(fold_path: Path, comp: Competition, tta: str, device: str = "auto", batch_size: int = 128,
                 num_workers: int = 0, checkpoint: str = "") -> np.ndarray:
    """(N_test, K) probabilities of one fold's best checkpoint; cached as test_<tta>.csv in the fold folder,
    with the hash of the checkpoint that made it: a retrained fold predicts afresh.

    checkpoint: the hash this best.pt must have (the one a blend was fitted with), if given."""
    made_by = fold_checkpoint(fold_path)  # refuses a fold without its checkpoint, or trained by another kit version
    if checkpoint and made_by != checkpoint:
        raise KitError(f"{fold_path / CHECKPOINT} is checkpoint {made_by}, not {checkpoint}, the one the blend was "
                       "fitted with: the fold was retrained since. Fit the blend again (kit blend --exps ...)")
    ids = comp.test["id"].tolist()
    cached = read_test_cache(fold_path, tta, ids, made_by)
    if cached is not None:
        return cached
    cfg = read_config(fold_path)
    ckpt = load_best(fold_path)
    if ckpt["classes"] != [str(c) for c in comp.classes]:
        raise KitError(f"{fold_path / CHECKPOINT} was trained on classes {ckpt['classes']}, the competition has "
                       f"{[str(c) for c in comp.classes]}")
    dev = pick_device(device)
    model = create_model(ckpt["timm_name"], len(ckpt["classes"]))
    model.load_state_dict(ckpt["model"])
    model.to(dev, memory_format=torch.channels_last if cfg.get("channels_last", True) else torch.preserve_format)
    ds = ImageDataset(comp.test["path"], None, eval_transform(ckpt["img_size"], cfg["mean"], cfg["std"]),
                      ckpt["img_size"])
    dtype = inference_dtype(cfg["amp_resolved"], dev, source=str(fold_path / CONFIG))
    probs = predict(model, make_loader(ds, batch_size, False, num_workers), tta, device=dev,
                    desc=f"{cfg['exp']} fold {cfg['fold']} test", dtype=dtype)
    write_test_cache(fold_path, tta, ids, probs, ckpt["classes"], made_by)  # not where it is read-only (Kaggle)
    return probs


def predict_test(runs_dir: str | Path, exp: str, comp: Competition, tta: str, n_folds: int,
                 device: str = "auto", checkpoints: list[str] | None = None) -> np.ndarray:
    """Mean over ALL folds (not the last one by accident) of the per-fold test probabilities; checkpoints:
    the hash each fold's best.pt must have."""
    d = exp_dir(runs_dir, exp)
    checkpoints = checkpoints or [""] * n_folds
    per_fold = [predict_fold(d / f"fold{k}", comp, tta, device, checkpoint=checkpoints[k]) for k in range(n_folds)]
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
    fit_metric: str = "log_loss"  # what the weights were fitted on (metric: what they are reported in)
    honest_leak: str = HONEST_LEAK  # what the honest score still does not hold out


def infer_and_blend(comp: Competition, folds: pd.DataFrame, exps: list[str] | str, runs_dir: str | Path = "runs",
                    method: str = "caruana", metric: str = "accuracy", space: str = "prob", power: float = 2.0,
                    device: str = "auto", fit_metric: str = "auto") -> BlendReport:
    """Per experiment the TTA that scores best on OOF -> blend weights fitted on those OOF (on fit_metric,
    see ensemble.fit_objective) -> test predictions with each experiment's own TTA, averaged over all its
    folds -> submission.

    The honest score repeats the TTA choice and the weight fit on the other folds for each held-out fold;
    what it cannot hold out (each fold's best epoch) is said in BlendReport.honest_leak and blend.json."""
    exps = [e for e in exps.split(",") if e] if isinstance(exps, str) else list(exps)
    if not exps:
        raise KitError("no experiments to blend; pass exps=['exp_a', 'exp_b']")
    check_space(space, metric)
    objective = fit_objective(fit_metric, metric, space)
    candidates = [load_tta_candidates(runs_dir, e, folds) for e in exps]  # per experiment, fewest views first
    check_compatible([c[0] for c in candidates])
    y = candidates[0][0].oof["target"].to_numpy()
    fold = candidates[0][0].oof["fold"].to_numpy()
    loaded = [pick_tta(c, y, metric) for c in candidates]
    tta_table = pd.concat([tta_scores(c, y, metric) for c in candidates], ignore_index=True)
    preds = [e.probs for e in loaded]
    w = fit_blend_weights(preds, y, method, metric, space=space, power=power, fit_metric=objective)
    oof_probs = blend(preds, w, space, power)
    honest, spread = honest_blend_score([[e.probs for e in c] for c in candidates], y, fold, method, metric, space,
                                        power, objective)
    n_folds = int(folds["fold"].max()) + 1
    no_tta = [tta_table[(tta_table["experiment"] == e) & (tta_table["tta"] == "none")][f"oof_{metric}"] for e in exps]
    scores = pd.DataFrame({"experiment": exps, "tta": [e.tta for e in loaded],
                           f"oof_{metric}_no_tta": [v.iloc[0] if len(v) else np.nan for v in no_tta],
                           f"oof_{metric}": [metric_value(metric, y, p) for p in preds], "weight": w})
    spec = {"experiments": [{"name": e.name, "tta": e.tta, "weight": float(wi), "n_folds": n_folds,
                             "checkpoints": list(e.checkpoints)} for e, wi in zip(loaded, w)],
            "method": method, "metric": metric, "fit_metric": objective, "space": space, "power": power,
            "classes": loaded[0].classes, "folds_hash": loaded[0].folds_hash,
            "oof_score": metric_value(metric, y, oof_probs), "honest_score": honest, "honest_std": spread,
            "honest_leak": HONEST_LEAK, "scores": scores.to_dict("records")}
    test_probs = predict_blend(comp, spec, runs_dir, device)
    return BlendReport(scores, tta_table, pd.Series(w, index=exps, name="weight"), spec["oof_score"], honest,
                       spread, y, oof_probs, test_probs, make_submission(comp, test_probs), loaded[0].classes, spec,
                       fit_metric=objective)


def predict_blend(comp: Competition, spec: dict, runs_dir: str | Path = "runs", device: str = "auto") -> np.ndarray:
    """Test probabilities from a blend spec alone (blend.json): no OOF, folds or training data needed. Each
    fold's best.pt must be the checkpoint the blend was fitted with."""
    if [str(c) for c in comp.classes] != spec["classes"]:
        raise KitError(f"the blend was fitted on classes {spec['classes']}, the competition has {comp.classes}")
    check_space(spec["space"], spec["metric"])
    for e in spec["experiments"]:
        check_name("blend experiment", e["name"])  # names, not paths: nothing outside runs_dir is read
        if len(e.get("checkpoints", [])) != e["n_folds"]:
            raise KitError(f"the blend's experiment {e['name']!r} records no checkpoint per fold (a blend.json "
                           "written by an older kit): fit the blend again (kit blend --exps ...)")
    used = [e for e in spec["experiments"] if e["weight"] > 0]  # a zero weight costs no inference
    per_exp = [predict_test(runs_dir, e["name"], comp, e["tta"], e["n_folds"], device, e["checkpoints"])
               for e in used]
    return blend(per_exp, np.array([e["weight"] for e in used]), spec["space"], spec["power"])


def submission_from_blend(comp: str | Path, blend_json: str | Path, data_dir: str | Path = "data",
                          runs_dir: str | Path = "runs", device: str = "auto") -> tuple[Competition, pd.DataFrame]:
    """The saved blend applied to a (new) test set: checkpoints + blend.json, nothing else."""
    spec = read_json(blend_json)
    c = load_test_competition(comp, spec["classes"], data_dir)  # labels are strings, as train.csv spells them
    return c, make_submission(c, predict_blend(c, spec, runs_dir, device))


def save_blend(report: BlendReport, path: str | Path) -> Path:
    return write_json(report.blend, path)
