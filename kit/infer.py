"""Test predictions: every fold's checkpoint with the experiment's TTA, averaged over folds."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import KitError
from .augment import eval_transform
from .blendconfig import BlendConfig
from .competition import Competition, load_competition, load_test_competition
from .data import ImageDataset, make_loader
from .device import inference_dtype, pick_device
from .ensemble import (HONEST_LEAK, blend, check_compatible, fit_blend_weights, honest_blend_score,
                       load_tta_candidates, pick_tta, tta_scores)
from .folds import folds_path, read_folds
from .io import read_json, write_json
from .metrics import metric_value
from .models import create_model
from .paths import check_name, exp_dir, resolve
from .rundir import CHECKPOINT, CONFIG, fold_checkpoint, load_best, read_config, read_test_cache, write_test_cache
from .submission import make_submission, write_submission
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
    cached = read_test_cache(fold_path, tta, ids, made_by)  # the numbers every later run reads (text, float64):
    return probs if cached is None else cached  # a blend fitted now and applied later write the same submission


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
    config: BlendConfig = BlendConfig()
    fit_metric: str = "log_loss"  # what the weights were fitted on, config.objective (metric: what they are reported in)
    honest_leak: str = HONEST_LEAK  # what the honest score still does not hold out


def infer_and_blend(comp: Competition, folds: pd.DataFrame, exps: list[str] | str, runs_dir: str | Path = "runs",
                    config: BlendConfig = BlendConfig(), device: str = "auto") -> BlendReport:
    """Per experiment the TTA that scores best on OOF (on config.metric) -> blend weights fitted on those OOF
    (on config.objective, see blendconfig.fit_objective) -> test predictions with each experiment's own TTA,
    averaged over all its folds -> submission (of config.submission_kind).

    The honest score repeats the TTA choice and the weight fit on the other folds for each held-out fold;
    what it cannot hold out (each fold's best epoch) is said in BlendReport.honest_leak and blend.json."""
    exps = [e for e in exps.split(",") if e] if isinstance(exps, str) else list(exps)
    if not exps:
        raise KitError("no experiments to blend; pass exps=['exp_a', 'exp_b']")
    metric = config.metric
    candidates = [load_tta_candidates(runs_dir, e, folds) for e in exps]  # per experiment, fewest views first
    check_compatible([c[0] for c in candidates])
    y = candidates[0][0].oof["target"].to_numpy()
    fold = candidates[0][0].oof["fold"].to_numpy()
    loaded = [pick_tta(c, y, metric) for c in candidates]
    tta_table = pd.concat([tta_scores(c, y, metric) for c in candidates], ignore_index=True)
    preds = [e.probs for e in loaded]
    w = fit_blend_weights(preds, y, config)
    oof_probs = blend(preds, w, config)
    honest, spread = honest_blend_score([[e.probs for e in c] for c in candidates], y, fold, config)
    n_folds = int(folds["fold"].max()) + 1
    no_tta = [tta_table[(tta_table["experiment"] == e) & (tta_table["tta"] == "none")][f"oof_{metric}"] for e in exps]
    scores = pd.DataFrame({"experiment": exps, "tta": [e.tta for e in loaded],
                           f"oof_{metric}_no_tta": [v.iloc[0] if len(v) else np.nan for v in no_tta],
                           f"oof_{metric}": [metric_value(metric, y, p) for p in preds], "weight": w})
    spec = {"experiments": [{"name": e.name, "tta": e.tta, "weight": float(wi), "n_folds": n_folds,
                             "checkpoints": list(e.checkpoints)} for e, wi in zip(loaded, w)],
            "config": config.to_dict(), "fit_objective": config.objective,
            "classes": loaded[0].classes, "folds_hash": loaded[0].folds_hash,
            "oof_score": metric_value(metric, y, oof_probs), "honest_score": honest, "honest_std": spread,
            "honest_leak": HONEST_LEAK, "scores": scores.to_dict("records")}
    test_probs = predict_blend(comp, spec, runs_dir, device)
    return BlendReport(scores, tta_table, pd.Series(w, index=exps, name="weight"), spec["oof_score"], honest,
                       spread, y, oof_probs, test_probs, make_submission(comp, test_probs, config.submission_kind),
                       loaded[0].classes, spec, config, fit_metric=config.objective)


def predict_blend(comp: Competition, spec: dict, runs_dir: str | Path = "runs", device: str = "auto") -> np.ndarray:
    """Test probabilities from a blend spec alone (blend.json): no OOF, folds or training data needed. Each
    fold's best.pt must be the checkpoint the blend was fitted with."""
    if [str(c) for c in comp.classes] != spec["classes"]:
        raise KitError(f"the blend was fitted on classes {spec['classes']}, the competition has {comp.classes}")
    config = BlendConfig.from_blend(spec)
    for e in spec["experiments"]:
        check_name("blend experiment", e["name"])  # names, not paths: nothing outside runs_dir is read
        if len(e.get("checkpoints", [])) != e["n_folds"]:
            raise KitError(f"the blend's experiment {e['name']!r} records no checkpoint per fold (a blend.json "
                           "written by an older kit): fit the blend again (kit blend --exps ...)")
    used = [e for e in spec["experiments"] if e["weight"] > 0]  # a zero weight costs no inference
    per_exp = [predict_test(runs_dir, e["name"], comp, e["tta"], e["n_folds"], device, e["checkpoints"])
               for e in used]
    return blend(per_exp, np.array([e["weight"] for e in used]), config)


def submission_from_blend(comp: str | Path, blend_json: str | Path | dict, data_dir: str | Path = "data",
                          runs_dir: str | Path = "runs", device: str = "auto") -> tuple[Competition, pd.DataFrame]:
    """The saved blend (blend.json, or what it holds) applied to a (new) test set: checkpoints + blend.json,
    nothing else; the submission is of the kind the blend's config names."""
    spec = blend_json if isinstance(blend_json, dict) else read_json(blend_json)
    config = BlendConfig.from_blend(spec)
    c = load_test_competition(comp, spec["classes"], data_dir)  # labels are strings, as train.csv spells them
    return c, make_submission(c, predict_blend(c, spec, runs_dir, device), config.submission_kind)


def save_blend(report: BlendReport, path: str | Path) -> Path:
    return write_json(report.blend, path)


@dataclass
class Submitted:
    comp: Competition
    submission: pd.DataFrame
    path: Path  # the submission written, <out_dir>/<name>.csv
    blend_path: Path  # the blend.json beside it
    blend: dict  # what blend_path holds
    report: BlendReport | None  # None when a saved blend was applied: no OOF, nothing to report


def blend_and_submit(comp: str | Path, exps: list[str] | str = (), config: BlendConfig = BlendConfig(),
                     blend_json: str | Path = "", name: str = "submission", out_dir: str | Path = "submissions",
                     data_dir: str | Path = "data", runs_dir: str | Path = "runs", device: str = "auto",
                     submission_kind: str = "") -> Submitted:
    """The whole infer-and-submit step, one code path for `kit blend`, the infer notebook and the Kaggle
    bundle's notebook: load the competition -> fit the blend of `exps` with `config` (infer_and_blend), or
    apply the saved `blend_json` with the config it was fitted with (`config` is then not used) -> write
    <out_dir>/<name>.csv, checked against the sample -> save the blend beside it as <name>.blend.json.

    submission_kind: '' keeps config's (a saved blend's own); 'auto', 'label' or 'probability' replaces it,
    and blend.json records the one used."""
    if not blend_json and not exps:
        raise KitError("no experiments to blend: pass exps (kit blend --exps exp_a,exp_b), or blend_json to apply a "
                       "saved blend")
    if blend_json:
        spec = read_saved_blend(blend_json, submission_kind)
        c, sub = submission_from_blend(comp, spec, data_dir, runs_dir, device)
        report = None
    else:
        config = replace(config, submission_kind=submission_kind) if submission_kind else config
        c = load_competition(comp, data_dir)
        report = infer_and_blend(c, read_folds(folds_path(c, runs_dir)), exps, runs_dir, config, device)
        spec, sub = report.blend, report.submission
    path = write_submission(sub, c, resolve(out_dir) / f"{name}.csv")
    blend_path = write_json(spec, path.with_suffix(".blend.json"))
    return Submitted(c, sub, path, blend_path, spec, report)


def read_saved_blend(blend_json: str | Path, submission_kind: str = "") -> dict:
    """blend.json (relative to the project root), its config normalized and submission_kind replaced if given."""
    path = resolve(blend_json)
    if not path.is_file():
        raise KitError(f"blend_json {path} does not exist; `kit blend --exps ...` writes "
                       "submissions/<name>.blend.json beside the submission")
    spec = read_json(path)
    config = BlendConfig.from_blend(spec, str(path))
    config = replace(config, submission_kind=submission_kind) if submission_kind else config
    return {**spec, "config": config.to_dict()}
