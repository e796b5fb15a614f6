"""One fold's training: the best checkpoint by validation metric, the history, OOF predictions and the
resolved config, written atomically into runs/<comp>/<exp>/fold<k>/ (kit.rundir names the files); the state saved
at every epoch boundary makes the run resumable."""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

import albumentations as A
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from timm.scheduler import CosineLRScheduler
from timm.utils import ModelEmaV3
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm  # widget bars in Jupyter, text bars in a terminal

from . import KitError, __version__, rundir, teacher, tracking
from .augment import eval_transform, normalization, train_transform
from .competition import ORDINAL_TASKS, load_competition
from .config import TrainConfig, resolved
from .data import DECODE_MARGIN, ImageDataset, SharedDecodeDataset, loader_workers, make_loader, readable_images
from .device import amp_dtype, dtype_name, headless, inference_dtype, pick_device, seed_everything, set_threads
from .folds import attach_folds, folds_hash, folds_path, read_folds
from .lock import fold_lock
from .metrics import check_targets, lookup, metric_value, score
from .models import create_model, cumulative_targets, eval_geometry, head_of, resolve_model
from .paths import comp_runs, exp_dir, fold_dir, resolve
from .rundir import CHECKPOINT, IMAGE_CACHE, RESERVED
from .sam import SAM, sam_update
from .tta import Job, auto_candidates, cannot_run, predict, predict_many, predict_models, split


@dataclass
class FoldResult:
    dir: Path
    best_score: float
    best_epoch: int
    history: pd.DataFrame
    oof: pd.DataFrame


@dataclass
class Fold:
    """One fold of the competition: its rows, where it trains, and what config.json records beyond the
    parameters (meta)."""
    table: pd.DataFrame  # the training rows with their path and fold
    y: np.ndarray  # their targets
    is_val: np.ndarray  # the rows of this fold: its validation and OOF rows
    classes: list[str]
    task: str  # the competition's task, resolved (kit.competition.detect_task)
    size: int  # the side the model sees
    device: torch.device
    dtype: torch.dtype | None  # training's autocast
    eval_dtype: torch.dtype | None  # validation's and OOF's autocast: the rule test predictions follow too
    meta: dict
    test: pd.DataFrame = field(default_factory=pd.DataFrame)  # the test images (id, path): pseudo-labels' source


@dataclass
class Loaders:
    """The fold's batches: training (reseeded every epoch) and validation."""
    train: DataLoader
    val: DataLoader  # the readable validation rows, in table order
    val_y: np.ndarray  # their targets
    val_ok: np.ndarray  # which validation rows are readable: the others get uniform OOF probabilities
    skipped: list[str]  # the unreadable images left out (on_bad_image='skip')
    eval_transform: Callable[[str], A.Compose]  # resize mode -> the validation transform with that mode

    def reseed(self, seed: int) -> None:
        """The batches' order and augmentations from `seed`; the loader's workers take their seeds from its
        generator (kit.data.seed_worker)."""
        self.train.generator.manual_seed(seed)
        self.train.dataset.transform.set_random_seed(seed)


@dataclass
class TrainState:
    """The training of one fold between two updates: what train_one_epoch steps, what last.pt saves
    (state_dict) and a resume loads (load_state_dict)."""
    cfg: TrainConfig
    model: nn.Module
    opt: SAM
    sched: CosineLRScheduler
    scaler: torch.amp.GradScaler | None  # fp16 only
    ema: ModelEmaV3 | None
    mixup: Mixup | None
    device: torch.device
    dtype: torch.dtype | None  # autocast
    forward: nn.Module  # the model as trained: torch.compile'd with cfg.torch_compile, else the model itself
    epoch: int = 0  # epochs done (epochs are numbered from 1 everywhere: logs, history, checkpoints)
    step: int = 0  # optimizer updates so far
    rows: list = field(default_factory=list)  # history
    top: list = field(default_factory=list)  # [(score, epoch)] of the kept checkpoints, best first
    stale: int = 0  # epochs since the best one
    # the head (kit.models.head_of): softmax and cross-entropy; sigmoid (multi-label) or cumulative (ordinal, its
    # targets [y > k]) and BCE
    activation: str = "softmax"
    n_outputs: int = 0  # the model's outputs: the classes, or the K-1 cumulative ones

    @classmethod
    def build(cls, model: nn.Module, cfg: TrainConfig, batches_per_epoch: int, n_outputs: int, device,
              dtype, activation: str = "softmax") -> TrainState:
        """Optimizer (SAM wrapper; plain steps when sam='off'), per-update cosine schedule, fp16 scaler, EMA,
        mixup (of the loss's targets: one-hot classes, or 0/1 rows for the sigmoid heads), for `model` (already
        on `device`) with n_outputs outputs and `activation` (head_of)."""
        if cfg.channels_last:  # NHWC helps on CPU too: oneDNN's convolutions (depthwise ones above all) prefer it;
            # bench/ measures it
            model = model.to(memory_format=torch.channels_last)
        groups = param_groups(model, cfg)
        if cfg.sam == "off":
            opt = SAM(groups, torch.optim.AdamW, rho=0.0)  # the same wrapper: one code path, plain steps only
        else:
            opt = SAM(groups, torch.optim.AdamW, rho=cfg.sam_rho, adaptive=cfg.sam == "asam")
        per_epoch = updates_per_epoch(batches_per_epoch, cfg.accum_steps)
        # warmup_lr_init and lr_min are for the head; param_groups' lr_scale keeps the backbone's ratio
        sched = CosineLRScheduler(opt, t_initial=cfg.epochs * per_epoch, warmup_t=cfg.warmup_epochs * per_epoch,
                                  warmup_lr_init=cfg.lr / 100, lr_min=cfg.lr / 100, t_in_epochs=False)
        scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
        # timm's decay warmup, min(ema_decay, 1 - (1 + step) ** -2/3): a fixed 0.999 over a fold's few hundred
        # updates would leave the EMA mostly the first weights (~92% after 85 updates). With the warmup it
        # averages about the last step ** 2/3 updates, and ema_decay is the cap, reached after
        # (1 / (1 - ema_decay)) ** 1.5 updates (32 for 0.9, 31.6k for 0.999). timm's default power;
        # resume-exact: it reads only the step.
        ema = ModelEmaV3(model, decay=cfg.ema_decay, use_warmup=True) if cfg.ema_decay > 0 else None
        mixup = Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, label_smoothing=cfg.label_smoothing,
                      num_classes=n_outputs, multi_label=activation != "softmax"
                      ) if cfg.mixup > 0 or cfg.cutmix > 0 else None
        forward = torch.compile(model) if cfg.torch_compile else model
        return cls(cfg, model, opt, sched, scaler, ema, mixup, device, dtype, forward, activation=activation,
                   n_outputs=n_outputs)

    @property
    def eval_model(self) -> nn.Module:
        """What is validated and saved as a checkpoint: the EMA when there is one."""
        return self.ema.module if self.ema is not None else self.model

    def state_dict(self) -> dict:
        """weights_only-safe: tensors, numbers, strings, lists and dicts."""
        return {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "ema": self.ema.module.state_dict() if self.ema is not None else None,
                "epoch": self.epoch, "step": self.step, "rows": self.rows, "top": [list(t) for t in self.top],
                "stale": self.stale}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        if self.scaler is not None and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and state["ema"] is not None:
            self.ema.module.load_state_dict(state["ema"])
        self.epoch, self.step, self.rows, self.stale = state["epoch"], state["step"], state["rows"], state["stale"]
        self.top = [tuple(t) for t in state["top"]]


def fit_fold(cfg: TrainConfig) -> FoldResult:
    """The day of one fold: set up, resume (or start afresh), train epoch by epoch, predict its OOF."""
    runs = comp_runs(cfg.runs_dir, cfg.comp)
    out = rundir.full_dir(exp_dir(runs, cfg.exp)) if cfg.full else fold_dir(runs, cfg.exp, cfg.fold)
    if cfg.full and (cfg.patience or cfg.average_top > 1):
        raise KitError("full=True trains without validation: patience and average_top need one (set them to 0)")
    fold = load_fold(cfg)  # reads only: before the lock, so that a refusal below writes nothing at all
    # never write over another competition's run (one of the same folder name)
    rundir.check_competition(out, fold.meta["competition"], fold.meta["folds_hash"])
    with fold_lock(out):  # one writer per fold folder (kit.lock)
        seed_everything(cfg.seed)
        set_threads(cfg.threads)
        trackers = tracking.open_trackers(cfg, out)  # imports each library: a missing one stops before any removal
        rundir.remove_stale_temps(out)
        # before anything is written: a resume must continue the same training, a fresh start leaves nothing
        # of an older run behind (its checkpoints, OOF and cached test predictions would pass for this run's)
        last = rundir.read_last(out, cfg.to_dict(), fold.meta) if cfg.resume else None
        done = rundir.full_complete(out, cfg.epochs) if cfg.full else rundir.is_complete(out)
        if last is None and cfg.resume and done:  # finished, its last.pt dropped (keep_last)
            raise KitError(f"{out} is a finished fold without last.pt (keep_last=False drops it): nothing to resume. "
                           f"Use its outputs as they are, or train it afresh with resume=False "
                           f"({rundir.retrain_command(out)}); nothing was removed")
        n_outputs, activation = head_of(fold.task, cfg.ordinal_head, len(fold.classes))
        model = create_model(cfg.model, n_outputs, cfg.pretrained, cfg.weights).to(fold.device)
        fixed = () if cfg.tta == "auto" or cfg.full else (cfg.tta,)  # refused now, not after the epochs
        for tta, why in cannot_run(model, dict.fromkeys(("none", *fixed)), fold.size, fold.device).items():
            # before any removal: a refused run leaves the fold's earlier outputs as they were
            raise KitError(f"{cfg.model} cannot predict {f'the views of tta={tta!r} ' if tta != 'none' else ''}"
                           f"at img_size {fold.size} ({why}); choose a larger "
                           f"img_size{' or another tta' if tta != 'none' else ''}; nothing of {out} was removed")
        if last is None:
            rundir.remove_run_outputs(out)
        mean, std = normalization(model)
        loaders = make_loaders(cfg, fold, mean, std)
        rundir.write_config(out, resolved(cfg, **fold.meta, skipped_images=loaders.skipped, mean=mean, std=std))
        state = TrainState.build(model, cfg, len(loaders.train), n_outputs, fold.device, fold.dtype, activation)
        if last is not None:
            state.load_state_dict(last)
            print(f"resuming {cfg.exp} fold {cfg.fold} at epoch {state.epoch + 1} from {out / rundir.LAST}")

        metric = f"val_{cfg.metric}"
        with tracking.tracked(cfg, out, last is not None, trackers) as tracker:  # nothing with track='off'
            where = "full" if cfg.full else f"fold {cfg.fold}"
            stopped = bool(cfg.patience) and state.stale >= cfg.patience  # resumed after its early stop: no more
            first = cfg.epochs + 1 if stopped else state.epoch + 1
            bar = tqdm(range(first, cfg.epochs + 1), desc=f"{cfg.exp} {where}",
                       initial=state.epoch, total=cfg.epochs, mininterval=2, disable=headless())
            for epoch in bar:  # numbered from 1
                row, improved = run_epoch(state, loaders, fold, out)
                tracker.log_epoch(epoch, row)
                bar.set_postfix(loss=f"{row['train_loss']:.3f}", **{cfg.metric: f"{row[metric]:.4f}"})
                validated = "" if cfg.full else (f"  val_loss {row['val_loss']:.4f}  {metric} {row[metric]:.4f}"
                                                 f"{'  *best' if improved else ''}")  # full: nothing validated
                tqdm.write(f"epoch {epoch}/{cfg.epochs}  train_loss {row['train_loss']:.4f}{validated}  "
                           f"{row['seconds']:.1f}s")
                if cfg.patience and state.stale >= cfg.patience:
                    print(f"early stop after epoch {epoch}: no improvement for {cfg.patience} epoch(s)")
                    break
            bar.close()
            if cfg.full:  # no validation rows, no OOF: its best.pt is the last epoch's
                tracker.log_artifacts(out / rundir.HISTORY, out / rundir.CONFIG)
                if not cfg.keep_last:
                    (out / rundir.LAST).unlink(missing_ok=True)
                return FoldResult(out, float("nan"), state.epoch, pd.DataFrame(state.rows), pd.DataFrame())
            if cfg.average_top > 1:
                average_checkpoints(state, loaders, fold, out)
            result = predict_oof(state, loaders, fold, out)
            if not cfg.keep_last:  # complete without it (its OOF is written): only a resume reads it
                (out / rundir.LAST).unlink(missing_ok=True)
            tracker.log_artifacts(out / rundir.HISTORY, out / rundir.CONFIG)
            return result


def load_fold(cfg: TrainConfig) -> Fold:
    """The competition's rows with their folds, this fold checked against them, the model's size, the device."""
    comp = load_competition(cfg.comp, cfg.data_dir, cfg.id_col, cfg.label_col, task=cfg.task, metric=cfg.metric)
    folds = read_folds(folds_path(comp, cfg.runs_dir))
    table = attach_folds(comp, folds)
    n_folds = int(table["fold"].max()) + 1
    if not cfg.full and not 0 <= cfg.fold < n_folds:
        raise KitError(f"fold={cfg.fold} but folds.csv has folds 0..{n_folds - 1}")
    for c in comp.classes:
        if str(c) in RESERVED:
            raise KitError(f"class name {c!r} collides with an OOF column name {sorted(RESERVED)}; rename the class")
    check_targets(cfg.metric, lookup(cfg.metric), comp.targets[:1], np.zeros((1, len(comp.classes))))
    timm_name, size = resolve_model(cfg.model, cfg.img_size)
    resize, crop_pct = eval_geometry(timm_name, cfg.resize, cfg.crop_pct)
    device = pick_device(cfg.device)
    dtype = amp_dtype(cfg.amp, device)
    classes = [str(c) for c in comp.classes]
    meta = dict(folds_hash=folds_hash(folds), n_folds=n_folds, classes=classes, timm_name=timm_name,
                img_size_resolved=size, resize_resolved=resize, crop_pct_resolved=crop_pct, competition=str(comp.root),
                device_resolved=str(device), amp_resolved=dtype_name(dtype), kit_version=__version__,
                task_resolved=comp.task)
    is_val = np.zeros(len(table), bool) if cfg.full else (table["fold"] == cfg.fold).to_numpy()  # full: all train
    return Fold(table, comp.targets, is_val, classes, comp.task, size, device, dtype,
                inference_dtype(meta["amp_resolved"], device), meta, comp.test)


def make_loaders(cfg: TrainConfig, fold: Fold, mean, std) -> Loaders:
    """Every image decoded once first (into the cache): unreadable ones stop the fold or are left out."""
    cache = resolve(cfg.runs_dir) / IMAGE_CACHE if cfg.image_cache else None
    paths = fold.table["path"]
    readable = readable_images(paths, cfg.on_bad_image, DECODE_MARGIN * fold.size, cache)
    is_train, is_val = ~fold.is_val & readable, fold.is_val & readable
    resize, crop_pct = fold.meta["resize_resolved"], fold.meta["crop_pct_resolved"]
    evaluation = partial(eval_transform, fold.size, mean, std, crop_pct=crop_pct)  # of a resize mode
    train_paths, train_targets = training_rows(cfg, fold, is_train)
    train_ds = ImageDataset(train_paths, train_targets,
                            train_transform(cfg.augment, fold.size, mean, std, cfg.seed, resize, crop_pct),
                            fold.size, cache)
    val_ds = ImageDataset(paths[is_val], fold.y[is_val], evaluation(resize=resize), fold.size, cache)
    if (cfg.mixup > 0 or cfg.cutmix > 0) and cfg.batch_size % 2:
        raise KitError(f"mixup/cutmix need an even batch_size; got {cfg.batch_size}")
    workers = loader_workers(cfg.num_workers, fold.device)
    return Loaders(make_loader(train_ds, cfg.batch_size, True, workers, cfg.seed),
                   make_loader(val_ds, cfg.batch_size * 2, False, workers), fold.y[is_val], readable[fold.is_val],
                   paths[~readable].tolist(), lambda mode: evaluation(resize=mode))


def training_rows(cfg: TrainConfig, fold: Fold, is_train: np.ndarray) -> tuple[list[str], np.ndarray]:
    """The training side's image paths and targets: its rows with their labels; with distill, soft targets mixing
    each row's (smoothed) label with the teacher blend's OOF probability of it; with pseudo, the teacher's
    confident test images added (their top class, or its probabilities). kit.teacher reads and checks both."""
    paths, y = fold.table["path"][is_train].tolist(), fold.y[is_train]
    if not (cfg.distill or cfg.pseudo):
        return paths, y
    if fold.task == "multilabel" or fold.task in ORDINAL_TASKS and cfg.ordinal_head == "cumulative":
        raise KitError("distill and pseudo train on soft class targets: single-label tasks (a softmax head) only")
    if cfg.mixup > 0 or cfg.cutmix > 0:
        raise KitError("distill and pseudo give soft targets, which timm's Mixup does not mix: set mixup=0 and "
                       "cutmix=0, or leave distill and pseudo empty")
    k = len(fold.classes)
    targets = teacher.smoothed(y, k, cfg.label_smoothing)
    if cfg.distill:
        rows = fold.table[is_train]
        probs = teacher.teacher_probs(cfg.distill, rows["id"], rows["fold"], fold.classes, fold.meta["folds_hash"])
        targets = (1 - cfg.distill_weight) * targets + cfg.distill_weight * probs
    if cfg.pseudo:
        extra, soft = teacher.pseudo_labels(cfg.pseudo, fold.test, fold.classes, cfg.pseudo_threshold,
                                            cfg.pseudo_soft, cfg.label_smoothing, None if cfg.full else cfg.fold)
        paths, targets = paths + extra, np.concatenate([targets, soft])
    return paths, targets.astype(np.float32)


def run_epoch(state: TrainState, loaders: Loaders, fold: Fold, out: Path) -> tuple[dict, bool]:
    """Epoch state.epoch + 1: train, validate, keep its checkpoint if it ranks, save the state. Returns its
    history row and whether it is the new best."""
    cfg, epoch, t0 = state.cfg, state.epoch + 1, time.time()
    # reseeded from (seed, epoch): a resumed epoch draws the same batches, augmentations and mixes
    seed_everything(cfg.seed * 1000 + epoch)
    loaders.reseed(cfg.seed * 1000 + epoch)
    with oom_hint(cfg):
        train_loss = train_one_epoch(state, loaders.train)
    if cfg.full:  # nothing to validate on: each epoch's weights are the newest, best.pt the last epoch's
        return full_epoch(state, fold, out, epoch, train_loss, time.time() - t0), True
    probs = predict(state.eval_model, loaders.val, "none", device=fold.device, desc="validate", dtype=fold.eval_dtype,
                    activation=state.activation)
    metric = f"val_{cfg.metric}"
    row = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss(loaders.val_y, probs),
           metric: metric_value(cfg.metric, loaders.val_y, probs), "lr": state.opt.param_groups[-1]["lr"],
           "seconds": time.time() - t0}
    state.rows.append(row)
    value = score(cfg.metric, loaders.val_y, probs)
    state.top = rundir.keep_top(out, state.top, value, epoch, cfg.save_top,
                                lambda: rundir.checkpoint(state.eval_model, fold.meta, epoch, row[metric]))
    improved = state.top[0] == (value, epoch)
    state.stale = 0 if improved else state.stale + 1
    state.epoch = epoch
    rundir.write_history(out, state.rows)
    rundir.save_last(out, state.state_dict(), fold.meta, cfg.to_dict())
    return row, improved


def full_epoch(state: TrainState, fold: Fold, out: Path, epoch: int, train_loss: float, seconds: float) -> dict:
    """A full-data epoch's bookkeeping: its history row (no validation columns to fill: NaN), best.pt replaced by
    this epoch's weights (EMA when on), the state saved for a resume."""
    cfg = state.cfg
    row = {"epoch": epoch, "train_loss": train_loss, "val_loss": float("nan"), f"val_{cfg.metric}": float("nan"),
           "lr": state.opt.param_groups[-1]["lr"], "seconds": seconds}
    state.rows.append(row)
    state.top = rundir.keep_top(out, state.top, float(epoch), epoch, 1,
                                lambda: rundir.checkpoint(state.eval_model, fold.meta, epoch, float("nan")))
    state.epoch = epoch
    rundir.write_history(out, state.rows)
    rundir.save_last(out, state.state_dict(), fold.meta, cfg.to_dict())
    return row


def predict_oof(state: TrainState, loaders: Loaders, fold: Fold, out: Path) -> FoldResult:
    """The best checkpoint's predictions of the fold's validation rows, with each TTA (cfg.tta='auto': every
    candidate), written last: they mark the fold complete."""
    cfg = state.cfg
    best = rundir.load_best(out, map_location=fold.device)
    state.model.load_state_dict(best["model"])
    made_by = rundir.checkpoint_hash(out / CHECKPOINT)  # every OOF row names the checkpoint that predicted it
    ttas = auto_candidates(fold.meta["resize_resolved"]) if cfg.tta == "auto" else (cfg.tta,)
    if cfg.tta == "auto":  # a view too small for the model is no candidate: the others still are
        skipped = cannot_run(state.model, ttas, fold.size, fold.device)
        for tta, why in skipped.items():
            print(f"tta auto: no OOF with {tta!r}, {cfg.model} cannot predict its views at {fold.size} px ({why})")
        ttas = tuple(t for t in ttas if t not in skipped)
    preds = predict_views(state, loaders, ttas, fold)
    ids, y = fold.table["id"][fold.is_val], rundir.encode_targets(fold.y[fold.is_val])
    oofs = {tta: rundir.oof_frame(ids, cfg.fold, y, with_uniform_rows(probs, loaders.val_ok), fold.classes, tta,
                                  fold.meta["folds_hash"], made_by) for tta, probs in preds.items()}
    rundir.write_oofs(out, oofs, ttas[0])  # auto: the no-TTA predictions are the fold's oof
    history = pd.DataFrame(state.rows)
    best_row = history.set_index("epoch").loc[best["epoch"]]
    value = best["score"] if best.get("averaged") else float(best_row[f"val_{cfg.metric}"])
    return FoldResult(out, float(value), int(best["epoch"]), history, oofs[ttas[0]])


def average_checkpoints(state: TrainState, loaders: Loaders, fold: Fold, out: Path) -> None:
    """The best cfg.average_top checkpoints (best.pt and its top-<epoch>.pt) averaged into best.pt: the mean of
    every floating-point tensor (timm's avg_checkpoints), then BatchNorm running statistics recomputed over the
    training images (torch.optim.swa_utils.update_bn: averaged weights do not match averaged statistics), then
    validated. best.pt records the averaged epochs and its validation score; the best single checkpoint stays as
    top-<epoch>.pt. An average that validates worse than the best checkpoint alone is not kept (best.pt records
    its score as average_tried). A resumed finish whose best.pt is averaged (or tried) already does nothing."""
    from torch.optim.swa_utils import update_bn

    cfg = state.cfg
    best = rundir.load_best(out, map_location=fold.device)
    epochs = [e for _, e in state.top[:cfg.average_top]]
    if best.get("averaged") or "average_tried" in best or len(epochs) < 2:  # done (or tried) already
        return
    others = [rundir.load_top(out, e, map_location=fold.device)["model"] for e in epochs[1:]]
    averaged = {k: (torch.stack([v.float(), *(o[k].float() for o in others)]).mean(0).to(v.dtype)
                    if v.is_floating_point() else v) for k, v in best["model"].items()}
    model = state.eval_model
    model.load_state_dict(averaged)
    with torch.autocast(fold.device.type, dtype=fold.dtype or torch.float32, enabled=fold.dtype is not None):
        update_bn(loaders.train, model, fold.device)
    probs = predict(model, loaders.val, "none", device=fold.device, desc="validate average", dtype=fold.eval_dtype,
                    activation=state.activation)
    value = metric_value(cfg.metric, loaders.val_y, probs)
    if (value < best["score"]) == lookup(cfg.metric).greater_is_better and value != best["score"]:
        # worse than the best checkpoint alone: keep that one, and say the average was tried (a rerun skips it)
        rundir.save_checkpoint(out, {**best, "average_tried": float(value)})
        tqdm.write(f"the average of epochs {epochs} validates worse (val_{cfg.metric} {value:.4f}) than epoch "
                   f"{best['epoch']} alone ({best['score']:.4f}): best.pt stays epoch {best['epoch']}")
        return
    rundir.keep_best_aside(out, int(best["epoch"]))
    ckpt = rundir.checkpoint(model, fold.meta, int(best["epoch"]), value)
    rundir.save_checkpoint(out, {**ckpt, "averaged": epochs})
    tqdm.write(f"averaged the checkpoints of epochs {epochs}: val_{cfg.metric} {value:.4f} (the best alone "
               f"{best['score']:.4f})")


def predict_views(state: TrainState, loaders: Loaders, ttas, fold: Fold) -> dict[str, np.ndarray]:
    """{tta: the validation rows' probabilities} in one pass. A TTA at another resize mode than the fold's
    (tta@mode) reads the image made square that way: then every image is decoded once and resized per mode
    (as test inference does, kit.infer.predict_images)."""
    own = fold.meta["resize_resolved"]
    modes = list(dict.fromkeys(split(t)[1] or own for t in ttas))
    if modes == [own]:
        return predict_many(state.model, loaders.val, ttas, device=fold.device, desc="oof", dtype=fold.eval_dtype,
                            activation=state.activation)
    ds = SharedDecodeDataset(loaders.val.dataset.paths, [(loaders.eval_transform(m), fold.size) for m in modes])
    jobs = [Job(state.model, t, fold.eval_dtype, modes.index(split(t)[1] or own), activation=state.activation)
            for t in ttas]
    loader = make_loader(ds, loaders.val.batch_size, False, loaders.val.num_workers)
    return dict(zip(ttas, predict_models(jobs, loader, fold.device, f"oof tta={','.join(ttas)}")))


def param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    """Backbone at lr * backbone_lr_mult, head at lr; no weight decay on biases and norm weights.

    The multiplier is timm's `lr_scale`: timm's schedulers compute one value from the shared base
    (`initial_lr`, lr) and scale it per group, so the ratio holds through warmup and at the floor too
    (per-group bases with an absolute warmup_lr_init and lr_min would give both parts one LR at the ends)."""
    head = {id(p) for p in model.get_classifier().parameters()}
    groups = {}
    for p in model.parameters():
        part = "head" if id(p) in head else "backbone"
        decay = p.ndim > 1
        scale = 1.0 if part == "head" else cfg.backbone_lr_mult
        g = groups.setdefault((part, decay), {"params": [], "part": part, "lr": cfg.lr * scale, "lr_scale": scale,
                                              "initial_lr": cfg.lr,
                                              "weight_decay": cfg.weight_decay if decay else 0.0})
        g["params"].append(p)
    return list(groups.values())


def set_backbone_frozen(model: nn.Module, frozen: bool) -> None:
    head = {id(p) for p in model.get_classifier().parameters()}
    for p in model.parameters():
        if id(p) not in head:
            p.requires_grad_(not frozen)


def updates_per_epoch(batches: int, accum_steps: int) -> int:
    """What train_one_epoch does: one update per accum_steps micro-batches and one for a partial group at
    the end (the loader's length already leaves out a dropped last batch)."""
    return max(1, math.ceil(batches / accum_steps))


def train_one_epoch(state: TrainState, loader) -> float:
    """Epoch state.epoch + 1 over the loader in updates of accum_steps micro-batches: the backbone frozen for
    the first freeze_epochs, mixup off for the last mixup_off_epochs. Advances state.step; returns the mean loss."""
    cfg, model, epoch = state.cfg, state.forward, state.epoch + 1
    set_backbone_frozen(state.model, epoch <= cfg.freeze_epochs)
    mixup = state.mixup if epoch <= cfg.epochs - cfg.mixup_off_epochs else None
    model.train()
    loss_fn = training_loss(state)
    total, n, pending, skipped = 0.0, 0, [], 0
    batches = tqdm(loader, desc="train", leave=False, mininterval=2, disable=headless())
    for i, (x, t) in enumerate(batches):
        pending.append(training_batch(state, x, t, mixup))
        if len(pending) < cfg.accum_steps and i < len(loader) - 1:
            continue
        use_sam = cfg.sam != "off" and state.step % cfg.sam_every == 0
        loss, stepped = sam_update(model, state.opt, pending, loss_fn, state.scaler, state.dtype, cfg.clip_grad,
                                   sam=use_sam)
        skipped = 0 if stepped else skipped + 1
        # without a scaler a non-finite loss is fatal at once; with one, only when it keeps skipping
        if (not np.isfinite(loss) and state.scaler is None) or skipped >= MAX_SKIPPED_STEPS:
            raise KitError(f"loss is {loss} at step {state.step} (epoch {epoch}); "
                           f"the weights were not updated with it and no checkpoint was written from it. Lower lr "
                           f"(now {state.opt.param_groups[-1]['lr']:.2e}), set clip_grad, or amp='off' if fp16 "
                           "overflows")
        state.step += 1
        state.sched.step_update(state.step)
        if state.ema is not None and stepped:
            state.ema.update(model, step=state.step)
        size = sum(len(b[0]) for b in pending)
        total, n, pending = total + loss * size, n + size, []
    return total / max(n, 1)


def training_loss(state: TrainState):
    """loss_fn(model, x, targets) of the fold's head: cross-entropy with label smoothing (soft targets after
    mixup), or BCE on 0/1 rows smoothed towards 0.5 (multi-label, ordinal cumulative)."""
    cfg, soft_loss = state.cfg, SoftTargetCrossEntropy()

    def loss_fn(m, x, t):
        out = m(x)
        if state.activation != "softmax":  # mixup's targets come smoothed already; 0/1 ones are smoothed towards 0.5
            soft = t if t.is_floating_point() else t.float() * (1 - cfg.label_smoothing) + 0.5 * cfg.label_smoothing
            return F.binary_cross_entropy_with_logits(out, soft)
        return soft_loss(out, t) if t.ndim == 2 else F.cross_entropy(out, t, label_smoothing=cfg.label_smoothing)
    return loss_fn


def training_batch(state: TrainState, x: torch.Tensor, t: torch.Tensor, mixup=None) -> tuple:
    """A loader batch on the device as the loss takes it: cumulative targets, channels_last, mixed."""
    x, t = x.to(state.device, non_blocking=True), t.to(state.device, non_blocking=True)
    if state.activation == "cumulative":  # grades -> [y > k]: mixup mixes these rows (ordinal distributions)
        t = cumulative_targets(t, state.n_outputs)
    if state.cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    if mixup is not None and len(x) > 1:
        # timm mixes a batch with its reverse and refuses an odd one. batch_size is even and the loader
        # drops a short last batch, so only a training fold smaller than batch_size (one batch, nothing
        # dropped) can be odd: its last sample (another one each epoch, shuffled) sits this epoch out
        # rather than the whole fold failing. A batch of one is trained unmixed.
        x, t = x[:len(x) // 2 * 2], t[:len(t) // 2 * 2]
        x, t = mixup(x, t)  # mixed once: both SAM passes see this batch and its soft targets
    return x, t


MAX_SKIPPED_STEPS = 20  # consecutive fp16 steps skipped for inf/NaN before the fold stops


@contextmanager
def oom_hint(cfg: TrainConfig):
    try:
        yield
    except torch.cuda.OutOfMemoryError as e:
        raise KitError(f"CUDA out of memory with batch_size={cfg.batch_size}, img_size={cfg.img_size or 'native'}"
                       f", model={cfg.model}: lower batch_size and raise accum_steps to keep the effective batch "
                       f"(batch_size * accum_steps), lower img_size, or use amp='bf16'. ({str(e)[:200]})") from None


def val_loss(y: np.ndarray, probs: np.ndarray) -> float:
    """Log loss of the true class, or for multi-label targets the mean binary log loss over every cell."""
    if np.ndim(y) == 1:
        return metric_value("log_loss", y, probs)
    p = np.clip(probs.astype(np.float64), 1e-7, 1 - 1e-7)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def with_uniform_rows(probs: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Predictions for the readable rows, uniform probabilities for the skipped ones."""
    if ok.all():
        return probs
    full = np.full((len(ok), probs.shape[1]), 1.0 / probs.shape[1])
    full[ok] = probs
    return full
