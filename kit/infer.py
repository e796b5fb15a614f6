"""Test predictions: every fold's checkpoint with the experiment's TTA, averaged over folds."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import KitError
from .augment import eval_transform
from .blendconfig import BlendConfig, blend_runs
from .competition import Competition, load_competition, load_test_competition
from .data import AUTO_WORKERS, SharedDecodeDataset, loader_workers, make_loader
from .device import inference_dtype, pick_device
from .ensemble import (HONEST_LEAK, Blender, check_compatible, fit_blender, fixed_tta, honest_blend_score,
                       load_tta_candidates, pick_tta, tta_scores)
from .folds import folds_path, read_folds
from .io import read_json, write_csv, write_json
from .metrics import metric_value
from .models import create_model, fold_geometry, fold_head
from .paths import check_name, comp_name, comp_runs, exp_dir, resolve
from .rundir import (CHECKPOINT, CONFIG, fold_checkpoint, full_dir, load_best, oof_targets, read_config,
                     read_test_cache, write_test_cache)
from .submission import make_submission, write_submission
from .thresholds import apply_decision, decision_kind, fit_decision
from .tta import Job, predict_models, split


def predict_fold(fold_path: Path, comp: Competition, tta: str, device: str = "auto", batch_size: int = 128,
                 num_workers: int = AUTO_WORKERS, checkpoint: str = "") -> np.ndarray:
    """(N_test, K) probabilities of one fold's best checkpoint (predict_folds)."""
    return predict_folds(comp, [(fold_path, tta, checkpoint)], device, batch_size, num_workers)[0]


def predict_folds(comp: Competition, folds: list[tuple[Path, str, str]], device: str = "auto",
                  batch_size: int = 128, num_workers: int = AUTO_WORKERS) -> list[np.ndarray]:
    """(N_test, K) probabilities per (fold folder, TTA preset, checkpoint): read from the fold's test cache
    (test_<tta>.csv) where its best.pt made it, the others predicted in ONE pass over the test set
    (predict_images) and cached with the hash of the checkpoint that made them: a retrained fold predicts
    afresh. Every fold is checked before any image is read.

    checkpoint: the hash the fold's best.pt must have (the one a blend was fitted with), or '' for any."""
    check_loader(batch_size, num_workers)
    ids = comp.test["id"].tolist()
    made = [checked_checkpoint(path, checkpoint) for path, _, checkpoint in folds]
    out = [read_test_cache(path, tta, ids, h) for (path, tta, _), h in zip(folds, made)]
    todo = [i for i, p in enumerate(out) if p is None]
    if not todo:
        return out
    dev = pick_device(device)
    classes = [str(c) for c in comp.classes]
    models = [(load_fold(folds[i][0], classes, dev), folds[i][1]) for i in todo]
    probs = predict_images(models, comp.test["path"], dev, batch_size, num_workers, f"test, {len(todo)} fold model(s)")
    for i, p in zip(todo, probs):
        path, tta, _ = folds[i]
        write_test_cache(path, tta, ids, p, classes, made[i])  # not where it is read-only (Kaggle)
        cached = read_test_cache(path, tta, ids, made[i])  # the numbers every later run reads (text, float64):
        out[i] = p if cached is None else cached  # a blend fitted now and applied later write the same submission
    return out


def check_loader(batch_size: int, num_workers: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise KitError(f"batch_size={batch_size!r}: test images per batch, a positive integer (e.g. 64; lower it if "
                       "the GPU runs out of memory)")
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < AUTO_WORKERS:
        raise KitError(f"num_workers={num_workers!r}: loader processes, 0 or more, or -1 for auto (0 on CPU, the "
                       "cores per GPU on CUDA)")


def checked_checkpoint(fold_path: Path, checkpoint: str = "") -> str:
    """The hash of the fold's best.pt, refused if it is missing, made by another kit version (fold_checkpoint),
    or not `checkpoint` (if given)."""
    made_by = fold_checkpoint(fold_path)
    if checkpoint and made_by != checkpoint:
        raise KitError(f"{fold_path / CHECKPOINT} is checkpoint {made_by}, not {checkpoint}, the one the blend was "
                       "fitted with: the fold was retrained since. Fit the blend again (kit blend --exps ...)")
    return made_by


@dataclass
class FoldModel:
    """A fold's best.pt loaded for test predictions, with what its input and output need."""
    path: Path
    model: torch.nn.Module
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    dtype: torch.dtype | None  # autocast, as its OOF was predicted (kit.device.inference_dtype)
    activation: str  # its head's (kit.models.head_of): softmax, sigmoid (multi-label) or cumulative (ordinal)
    resize: str = "squash"  # how its validation images were made square (kit.augment.geometry)
    crop_pct: float = 1.0

    def input(self, tta: str = "none") -> tuple:
        """What its images go through with a TTA (tta@mode: another resize mode than the fold's): models with the
        same input share one resize and normalization of each image."""
        return self.size, self.mean, self.std, split(tta)[1] or self.resize, self.crop_pct


def load_fold(fold_path: Path, classes: list[str], device: torch.device) -> FoldModel:
    """The fold's best.pt with the head its config.json says it trained (kit.models.fold_head)."""
    cfg = read_config(fold_path)
    ckpt = load_best(fold_path)
    if ckpt["classes"] != classes:
        raise KitError(f"{fold_path / CHECKPOINT} was trained on classes {ckpt['classes']}, the competition has "
                       f"{classes}")
    n_outputs, activation = fold_head(cfg, len(ckpt["classes"]))
    model = create_model(ckpt["timm_name"], n_outputs)
    model.load_state_dict(ckpt["model"])
    model.to(device, memory_format=torch.channels_last if cfg.get("channels_last", True) else torch.preserve_format)
    return FoldModel(fold_path, model, ckpt["img_size"], tuple(cfg["mean"]), tuple(cfg["std"]),
                     inference_dtype(cfg["amp_resolved"], device, source=str(fold_path / CONFIG)), activation,
                     *fold_geometry(cfg))


def predict_images(models: list[tuple[FoldModel, str]], paths, device: torch.device, batch_size: int = 128,
                   num_workers: int = AUTO_WORKERS, desc: str = "test") -> list[np.ndarray]:
    """(N, K) probabilities per (fold model, TTA preset) for the images at `paths`, in ONE pass: each image
    decoded once (SharedDecodeDataset), resized and normalized once per distinct model input, and every
    model run on the batch in memory, with its own TTA and precision; batch_size also bounds each forward.
    num_workers: loader processes, AUTO_WORKERS: from the device (kit.data.loader_workers)."""
    inputs = list(dict.fromkeys(m.input(tta) for m, tta in models))
    ds = SharedDecodeDataset(paths, [(eval_transform(size, mean, std, resize, pct), size)
                                     for size, mean, std, resize, pct in inputs])
    jobs = [Job(m.model, tta, m.dtype, inputs.index(m.input(tta)), activation=m.activation) for m, tta in models]
    loader = make_loader(ds, batch_size, False, loader_workers(num_workers, torch.device(device)))
    return predict_models(jobs, loader, device, desc)


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
    oof_rows: pd.DataFrame | None = None  # id and fold of each row of oof_probs (and y)
    teacher_oof: np.ndarray | None = None  # what <name>.oof.csv holds: oof_probs, a stack's cross-fitted ones
    # per fold k, the blend (weights or meta-model) refitted on the other folds' OOF rows of the experiments it uses,
    # with their chosen TTA: what blends fold k's test predictions for a student of fold k (<name>.test-fold<k>.csv)
    fold_blenders: list[Blender] | None = None


def infer_and_blend(comp: Competition, folds: pd.DataFrame, exps: list[str] | str, runs_dir: str | Path = "runs",
                    config: BlendConfig = BlendConfig(), device: str = "auto", batch_size: int = 128,
                    num_workers: int = AUTO_WORKERS) -> BlendReport:
    """Per experiment the TTA that scores best on OOF (on config.metric) -> blend weights fitted on those OOF
    (on config.objective, see blendconfig.fit_objective) -> test predictions with each experiment's own TTA,
    averaged over all its folds -> submission (of config.submission_kind). batch_size, num_workers: the test
    pass's (predict_images).

    The honest score repeats the TTA choice and the weight fit on the other folds for each held-out fold;
    what it cannot hold out (each fold's best epoch) is said in BlendReport.honest_leak and blend.json."""
    exps = exp_names(exps)
    if not exps:
        raise KitError("no experiments to blend; pass exps=['exp_a', 'exp_b']")
    metric = config.metric
    runs = comp_runs(runs_dir, comp)
    tried = [load_tta_candidates(runs, e, folds) for e in exps]  # per experiment, fewest views first
    candidates = [fixed_tta(c, config.tta) for c in tried]  # what the blend may choose from
    check_compatible([c[0] for c in candidates])
    y = oof_targets(candidates[0][0].oof, len(candidates[0][0].classes))
    fold = candidates[0][0].oof["fold"].to_numpy()
    loaded = [pick_tta(c, y, metric) for c in candidates]
    tta_table = pd.concat([tta_scores(c, y, metric) for c in tried], ignore_index=True)
    preds = [e.probs for e in loaded]
    blender = fit_blender(preds, y, config)
    w = blender.weights
    oof_probs = blender(preds, config, comp.task == "multilabel")
    kind, classes = decision_kind(comp.task, metric), loaded[0].classes
    # a stack's meta-model saw every OOF row: its teacher rows (kit.teacher) are the cross-fitted ones instead
    crossfit = np.zeros_like(oof_probs) if config.method == "stack" else None
    honest, spread = honest_blend_score([[e.probs for e in c] for c in candidates], y, fold, config, kind, classes,
                                        crossfit)
    n_folds = int(folds["fold"].max()) + 1
    # a pseudo-label student of fold k must not learn fold k's labels through its teacher's weights or meta-model;
    # refitted on the experiments blend_jobs predicts with (weight > 0)
    fold_blenders = [fit_blender([p[fold != k] for p, wi in zip(preds, w) if wi > 0], y[fold != k], config)
                     for k in range(n_folds)]
    no_tta = [tta_table[(tta_table["experiment"] == e) & (tta_table["tta"] == "none")][f"oof_{metric}"] for e in exps]
    scores = pd.DataFrame({"experiment": exps, "tta": [e.tta for e in loaded],
                           f"oof_{metric}_no_tta": [v.iloc[0] if len(v) else np.nan for v in no_tta],
                           f"oof_{metric}": [metric_value(metric, y, p) for p in preds], "weight": w})
    spec = {"experiments": [{"name": e.name, "tta": e.tta, "weight": float(wi), "n_folds": n_folds,
                             "checkpoints": list(e.checkpoints), **full_model(runs, e.name, config)}
                            for e, wi in zip(loaded, w)],
            "config": config.to_dict(), "fit_objective": config.objective, "task": comp.task,
            "competition": comp_name(comp), **({"stack": blender.stack} if blender.stack else {}),
            "classes": classes, "folds_hash": loaded[0].folds_hash,
            "oof_score": metric_value(metric, y, oof_probs), "honest_score": honest, "honest_std": spread,
            "honest_leak": HONEST_LEAK, "scores": scores.to_dict("records"),
            **fitted_decision(kind, y, oof_probs, metric, classes)}
    test_probs = predict_blend(comp, spec, runs_dir, device, batch_size, num_workers)
    return BlendReport(scores, tta_table, pd.Series(w, index=exps, name="weight"), spec["oof_score"], honest,
                       spread, y, oof_probs, test_probs,
                       make_submission(comp, decided(test_probs, spec), config.submission_kind),
                       loaded[0].classes, spec, config, fit_metric=config.objective,
                       oof_rows=loaded[0].oof[["id", "fold"]].reset_index(drop=True),
                       teacher_oof=oof_probs if crossfit is None else crossfit, fold_blenders=fold_blenders)


def full_model(runs: Path, exp: str, config: BlendConfig) -> dict:
    """{'full_checkpoint': hash of the experiment's full-data best.pt} when the blend uses full-data models."""
    if config.models == "folds":
        return {}
    folder = full_dir(exp_dir(runs, exp))
    if not (folder / CHECKPOINT).is_file():
        raise KitError(f"models={config.models!r} needs {exp!r}'s full-data model, {folder / CHECKPOINT} does not "
                       f"exist: train it with kit fit-full --exp {exp}")
    from .config import training_changes
    from .full import NOT_INHERITED

    folds_cfg, full_cfg = read_config(exp_dir(runs, exp) / "fold0"), read_config(folder)
    changed = {k: v for k, v in training_changes(folds_cfg, full_cfg).items() if k not in NOT_INHERITED}
    if changed or full_cfg.get("folds_hash") != folds_cfg.get("folds_hash"):
        what = ", ".join(changed) or "folds_hash"
        raise KitError(f"{folder} was trained with other parameters or folds than {exp!r}'s folds ({what}): its TTA "
                       f"and weights are the folds'; retrain it: kit fit-full --exp {exp} --force")
    return {"full_checkpoint": fold_checkpoint(folder)}


def predict_blend(comp: Competition, spec: dict, runs_dir: str | Path = "runs", device: str = "auto",
                  batch_size: int = 128, num_workers: int = AUTO_WORKERS) -> np.ndarray:
    """Test probabilities from a blend spec alone (blend.json): no OOF, folds or training data needed. Each
    fold's best.pt must be the checkpoint the blend was fitted with. Every fold of every experiment is
    predicted in one pass over the test set (predict_folds). runs_dir: the folder holding runs/<comp>/ of the
    competition the blend was fitted on (a Kaggle bundle's runs/)."""
    if [str(c) for c in comp.classes] != spec["classes"]:
        raise KitError(f"the blend was fitted on classes {spec['classes']}, the competition has {comp.classes}")
    config = BlendConfig.from_blend(spec)
    for e in spec["experiments"]:
        check_name("blend experiment", e["name"])  # names, not paths: nothing outside runs_dir is read
        if len(e.get("checkpoints", [])) != e["n_folds"]:
            raise KitError(f"the blend's experiment {e['name']!r} records no checkpoint per fold (a blend.json "
                           "written by an older kit): fit the blend again (kit blend --exps ...)")
    used, jobs = blend_jobs(spec, runs_dir)
    if config.method == "stack" and spec.get("stack") is None:
        raise KitError("the blend.json says method='stack' but holds no meta-model ('stack'): fit the blend again")
    mine = by_model(jobs, predict_folds(comp, [j for _, _, j in jobs], device, batch_size, num_workers))
    # an experiment's folds averaged; with models='both', that mean and the full model half each
    per_exp = [np.mean([np.mean(ps, axis=0) for ps in mine[e["name"]].values()], axis=0) for e in used]
    return blender_of(spec)[0](per_exp, config, blend_task(spec) == "multilabel")


def blend_jobs(spec: dict, runs_dir: str | Path) -> tuple[list[dict], list[tuple]]:
    """(the experiments a blend uses, [(experiment, 'fold'|'full', (folder, tta, checkpoint))]): the models that
    predict its test set, by BlendConfig.models: each experiment's folds, its full-data model, or both."""
    models = BlendConfig.from_blend(spec).models
    used = [e for e in spec["experiments"] if e["weight"] > 0]  # a zero weight costs no inference
    runs = blend_runs(spec, runs_dir)
    jobs = []
    for e in used:
        if models != "full":
            made = e.get("checkpoints") or [""] * e["n_folds"]  # checked by predict_blend; the estimate needs none
            jobs += [(e["name"], "fold", (exp_dir(runs, e["name"]) / f"fold{k}", e["tta"], made[k]))
                     for k in range(e["n_folds"])]
        if models != "folds":
            if "full_checkpoint" not in e:
                raise KitError(f"the blend uses full-data models (models={models!r}) but records none for "
                               f"{e['name']!r}: train it (kit fit-full --exp {e['name']}) and fit the blend again")
            jobs.append((e["name"], "full", (full_dir(exp_dir(runs, e["name"])), e["tta"], e["full_checkpoint"])))
    return used, jobs


def estimate_seconds(spec: dict, paths: list[str], n_images: int, runs_dir: str | Path = "runs",
                     device: str = "auto", batch_size: int = 128, num_workers: int = AUTO_WORKERS) -> float:
    """Seconds the blend's test inference takes on this machine for n_images: loading every model it uses (its
    folds, full-data models or both: blend_jobs), plus n_images times the time per image measured on `paths` (a
    few test images, after one untimed pass for lazy setup), each through every model with its TTA in one pass,
    as predict_blend runs them. No test cache is read or written. Another machine (Kaggle's GPU) scales it by its
    speed."""
    check_loader(batch_size, num_workers)
    dev = pick_device(device)
    start = time.perf_counter()
    models = [(load_fold(folder, spec["classes"], dev), tta)
              for _, _, (folder, tta, _) in blend_jobs(spec, runs_dir)[1]]
    loading = time.perf_counter() - start
    predict_images(models, paths[:batch_size], dev, batch_size, num_workers, "warm-up")
    start = time.perf_counter()
    predict_images(models, paths, dev, batch_size, num_workers, "timing")
    return loading + (time.perf_counter() - start) / len(paths) * n_images


def estimate_test_run(blend_json: str | Path, comp: str | Path, data_dir: str | Path = "data",
                      runs_dir: str | Path = "runs", sample: int = 32, device: str = "auto",
                      batch_size: int = 128) -> tuple[float, int]:
    """(seconds, test images): estimate_seconds for the competition's test set here, timed on its first
    `sample` images."""
    spec = read_saved_blend(blend_json)
    paths = load_test_competition(comp, spec["classes"], data_dir, blend_task(spec)).test["path"].tolist()
    if not paths:
        raise KitError(f"the test set of {comp!r} has no images to time")
    return estimate_seconds(spec, paths[:sample], len(paths), runs_dir, device, batch_size), len(paths)


def submission_from_blend(comp: str | Path, blend_json: str | Path | dict, data_dir: str | Path = "data",
                          runs_dir: str | Path = "runs", device: str = "auto", batch_size: int = 128,
                          num_workers: int = AUTO_WORKERS) -> tuple[Competition, pd.DataFrame]:
    """The saved blend (blend.json, or what it holds) applied to a (new) test set: checkpoints + blend.json,
    nothing else; the submission is of the kind the blend's config names."""
    spec = blend_json if isinstance(blend_json, dict) else read_json(blend_json)
    config = BlendConfig.from_blend(spec)
    # labels are strings, as train.csv spells them; the task decides the submission's form (a label list...)
    c = load_test_competition(comp, spec["classes"], data_dir, blend_task(spec))
    probs = predict_blend(c, spec, runs_dir, device, batch_size, num_workers)
    return c, make_submission(c, decided(probs, spec), config.submission_kind)


def fitted_decision(kind: str, y: np.ndarray, oof_probs: np.ndarray, metric: str, classes: list) -> dict:
    """The blend's decision (kit.thresholds.decision_kind), fitted on the blended OOF: per-class thresholds for
    a multi-label F-beta, cut points on the expected grade for an ordinal task; and its in-sample OOF score.
    The honest score already holds them out (honest_blend_score fits them on the other folds). {} if none."""
    if not kind:
        return {}
    values = fit_decision(kind, y, oof_probs, metric, classes)
    decided_oof = apply_decision(kind, oof_probs, values, classes)
    return {kind: values, f"{kind}_oof_score": metric_value(metric, y, decided_oof)}


def blend_task(spec: dict) -> str:
    """The task a blend was fitted for; a blend.json from before it was recorded: multi-label if it has
    thresholds (only multi-label blends had them), else single-label."""
    return spec.get("task") or ("multilabel" if spec.get("thresholds") else "multiclass")


def decided(probs: np.ndarray, spec: dict) -> np.ndarray:
    """The blend's thresholds or cut points applied to its probabilities, if it has any."""
    for kind in ("thresholds", "cut_points"):
        if spec.get(kind):
            return apply_decision(kind, probs, spec[kind], spec["classes"])
    return probs


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
                     submission_kind: str = "", batch_size: int = 128, num_workers: int = AUTO_WORKERS) -> Submitted:
    """The whole infer-and-submit step, one code path for `kit blend`, the infer notebook and the Kaggle
    bundle's notebook: load the competition -> fit the blend of `exps` with `config` (infer_and_blend), or
    apply the saved `blend_json` with the config it was fitted with (`config` is then not used) -> write
    <out_dir>/<name>.csv, checked against the sample -> save the blend beside it as <name>.blend.json.

    submission_kind: '' keeps config's (a saved blend's own); 'auto', 'label' or 'probability' replaces it,
    and blend.json records the one used. batch_size: test images per batch (and per forward, TTA views
    included); num_workers: loader processes, -1 (AUTO_WORKERS): 0 on CPU, the cores per GPU on CUDA."""
    check_loader(batch_size, num_workers)  # before the blend is fitted
    if not blend_json and not exps:
        raise KitError("no experiments to blend: pass exps (kit blend --exps exp_a,exp_b), or blend_json to apply a "
                       "saved blend")
    if blend_json:
        spec = read_saved_blend(blend_json, submission_kind)
        c, sub = submission_from_blend(comp, spec, data_dir, runs_dir, device, batch_size, num_workers)
        report = None
    else:
        config = replace(config, submission_kind=submission_kind) if submission_kind else config
        c = trained_competition(comp, exps, data_dir, runs_dir, config.metric)
        report = infer_and_blend(c, read_folds(folds_path(c, runs_dir)), exps, runs_dir, config, device, batch_size,
                                 num_workers)
        spec, sub = report.blend, report.submission
    path = write_submission(sub, c, resolve(out_dir) / f"{name}.csv")
    blend_path = write_json(spec, path.with_suffix(".blend.json"))
    if report is not None:  # what distillation (OOF) and pseudo-labels (test) train on: kit.teacher
        per_fold = fold_test_probs(c, spec, runs_dir, device, batch_size, num_workers, report.fold_blenders)
        write_blend_probs(report, c, blend_path, per_fold)
    return Submitted(c, sub, path, blend_path, spec, report)


def write_blend_probs(report: BlendReport, comp: Competition, blend_path: Path, per_fold: list[np.ndarray]) -> None:
    """Beside <name>.blend.json: <name>.oof.csv (id, fold, the blended OOF probability per class, folds_hash),
    <name>.test.csv (id, the blended test probability per class) and <name>.test-fold<k>.csv (the blend of each
    experiment's fold-k model alone: what a student of fold k may learn from, kit.teacher)."""
    from .teacher import blend_test_path, oof_probs_path

    oof = pd.concat([report.oof_rows, pd.DataFrame(report.teacher_oof, columns=report.classes)], axis=1)
    write_csv(oof.assign(folds_hash=report.blend["folds_hash"]), oof_probs_path(blend_path))
    for k, probs in [(None, report.test_probs), *enumerate(per_fold)]:
        test = pd.DataFrame(probs, columns=report.classes)
        test.insert(0, "id", comp.test["id"].to_numpy())
        write_csv(test, blend_test_path(blend_path, k))


def fold_test_probs(comp: Competition, spec: dict, runs_dir: str | Path = "runs", device: str = "auto",
                    batch_size: int = 128, num_workers: int = AUTO_WORKERS,
                    blenders: list[Blender] | None = None) -> list[np.ndarray]:
    """Per fold k, the blend of each experiment's fold-k test predictions: models that never trained on fold k's
    rows, blended by blenders[k] (BlendReport.fold_blenders: weights or meta-model fitted on the other folds, so
    fold k's labels reach a student of fold k through neither), else by the blend's own. Read from the folds'
    test caches predict_blend just wrote (the fold models of blend_jobs, whatever the blend's own `models`)."""
    folds_only = {**spec, "config": {**spec["config"], "models": "folds"}}
    used, jobs = blend_jobs(folds_only, runs_dir)
    mine = by_model(jobs, predict_folds(comp, [j for _, _, j in jobs], device, batch_size, num_workers))
    blender, config = blender_of(spec)
    return [(blenders[k] if blenders else blender)([mine[e["name"]]["fold"][k] for e in used], config,
                                                   blend_task(spec) == "multilabel")
            for k in range(used[0]["n_folds"])]


def by_model(jobs: list[tuple], probs: list[np.ndarray]) -> dict[str, dict[str, list[np.ndarray]]]:
    """{experiment: {'fold': [per fold], 'full': [its full-data model's]}}: blend_jobs' predictions by experiment."""
    out: dict[str, dict[str, list]] = {}
    for (name, kind, _), p in zip(jobs, probs):
        out.setdefault(name, {}).setdefault(kind, []).append(p)
    return out


def blender_of(spec: dict) -> tuple[Blender, BlendConfig]:
    """The fitted blend a blend.json holds (weights of the experiments it uses, or its meta-model), and its config."""
    used = [e for e in spec["experiments"] if e["weight"] > 0]
    return Blender(np.array([e["weight"] for e in used]), spec.get("stack")), BlendConfig.from_blend(spec)


def exp_names(exps: list[str] | str) -> list[str]:
    """Experiment names from a list or 'a,b' (kit blend --exps)."""
    return [e for e in exps.split(",") if e] if isinstance(exps, str) else list(exps)


def fold0_config(comp, exp: str, runs_dir: str | Path = "runs") -> dict:
    """fold 0's config.json of the competition's experiment `exp`: how the experiment was trained; {} before it
    has one (the blend then refuses the unfinished experiment)."""
    folder = exp_dir(comp_runs(runs_dir, comp), exp) / "fold0"
    return read_config(folder) if (folder / CONFIG).is_file() else {}


def first_fold_config(comp, exps: list[str] | str, runs_dir: str | Path = "runs") -> dict:
    """fold0_config of the first experiment: how the blend's experiments were trained."""
    names = exp_names(exps)
    return fold0_config(comp, names[0], runs_dir) if names else {}


def blend_metric(metric: str, comp, exps: list[str] | str, runs_dir: str | Path = "runs") -> str:
    """What a blend is reported in and its TTA chosen on: `metric` if given, else the metric the experiments
    were trained on (fold 0 of the first), else BlendConfig's default. `kit blend` and the infer notebook."""
    return metric or (first_fold_config(comp, exps, runs_dir).get("metric") if exps else "") or BlendConfig.metric


def trained_competition(comp: str | Path, exps: list[str] | str, data_dir: str | Path = "data",
                        runs_dir: str | Path = "runs", metric: str = "") -> Competition:
    """The competition as the first experiment's training read it: its id and label columns and its task
    (an ordinal or multi-label override, or a task detected from the metric, decides the blend's decision and
    the submission's form), from fold 0's config.json (fold0_config); detected afresh without one."""
    configs = {e: fold0_config(comp, e, runs_dir) for e in exp_names(exps)}
    cfg = next(iter(configs.values()), {})
    if not cfg:
        return load_competition(comp, data_dir, metric=metric)
    tasks = {e: c.get("task_resolved") for e, c in configs.items()}
    if len({t for t in tasks.values() if t}) > 1:
        raise KitError(f"the experiments were trained for different tasks ({tasks}); a blend averages one kind of "
                       "prediction: blend the experiments of one task")
    return load_competition(comp, data_dir, cfg.get("id_col", ""), cfg.get("label_col", ""),
                            task=cfg.get("task_resolved") or cfg.get("task", "auto"), metric=cfg.get("metric", metric))


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
