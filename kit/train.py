"""One fold's training: best checkpoint by validation metric, history.csv, OOF predictions and the
resolved config, written atomically under runs/<exp>/fold<k>/; last.pt makes it resumable."""

from __future__ import annotations

import os
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from timm.scheduler import CosineLRScheduler
from timm.utils import ModelEmaV3
from torch import nn
from tqdm import tqdm

from . import KitError, __version__
from .augment import eval_transform, normalization, train_transform
from .competition import load_competition
from .config import TrainConfig, resolved
from .data import DECODE_MARGIN, ImageDataset, make_loader, scan_images
from .ensemble import OOF, RESERVED, oof_frame, oof_name
from .folds import attach_folds, folds_hash, folds_path, read_folds
from .io import save_torch, write_csv, write_json
from .metrics import metric_value, score
from .models import create_model, resolve_model
from .paths import fold_dir, resolve
from .sam import SAM, sam_update
from .tta import CANDIDATES as TTA_CANDIDATES
from .tta import predict, predict_many

CHECKPOINT = "best.pt"
LAST = "last.pt"
HISTORY = "history.csv"
CONFIG = "config.json"
IMAGE_CACHE = ".image_cache"  # under runs_dir: hidden, so it is never taken for an experiment
# headless runs (the runner sets KIT_HEADLESS) log one line per epoch instead of bars: bars become
# thousands of lines in a log file
HEADLESS = os.environ.get("KIT_HEADLESS") == "1"


@dataclass
class FoldResult:
    dir: Path
    best_score: float
    best_epoch: int
    history: pd.DataFrame
    oof: pd.DataFrame


@dataclass
class Progress:
    """What an epoch boundary must carry over, saved in last.pt."""
    epoch: int = 0  # the next epoch to run
    step: int = 0  # optimizer updates so far
    rows: list = field(default_factory=list)  # history
    top: list = field(default_factory=list)  # [(score, epoch)] of the kept checkpoints, best first
    stale: int = 0  # epochs since the best one


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise KitError(f"device={name!r} but torch sees no CUDA GPU; use device='cpu' or 'auto'")
    return torch.device(name)


def amp_dtype(amp: str, device: torch.device):
    """None (full precision), torch.bfloat16 or torch.float16."""
    if amp == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    return {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def is_complete(d: Path) -> bool:
    """A fold is done when its OOF file exists: it is written last."""
    return all((d / f).is_file() for f in (CHECKPOINT, HISTORY, CONFIG, OOF))


def stale_reason(d: Path) -> str:
    """Why a complete fold folder must not be mixed into this run: other folds or another kit version."""
    from .io import read_json

    cfg = read_json(d / CONFIG)
    if cfg.get("kit_version") != __version__:
        return f"made by kit {cfg.get('kit_version')}, this is kit {__version__}"
    path = folds_path(cfg["competition"], cfg["runs_dir"])  # the recorded root: no need to rescan its images
    now = folds_hash(read_folds(path))
    if cfg.get("folds_hash") != now:
        return f"made on other folds (hash {cfg.get('folds_hash')}, {path} now has {now})"
    return ""


def param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    """Backbone at lr * backbone_lr_mult, head at lr; no weight decay on biases and norm weights."""
    head = {id(p) for p in model.get_classifier().parameters()}
    groups = {}
    for p in model.parameters():
        part = "head" if id(p) in head else "backbone"
        decay = p.ndim > 1
        g = groups.setdefault((part, decay), {"params": [], "part": part,
                                              "lr": cfg.lr * (1 if part == "head" else cfg.backbone_lr_mult),
                                              "weight_decay": cfg.weight_decay if decay else 0.0})
        g["params"].append(p)
    return list(groups.values())


def set_backbone_frozen(model: nn.Module, frozen: bool) -> None:
    head = {id(p) for p in model.get_classifier().parameters()}
    for p in model.parameters():
        if id(p) not in head:
            p.requires_grad_(not frozen)


def fit_fold(cfg: TrainConfig) -> FoldResult:
    seed_everything(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    comp = load_competition(cfg.comp, cfg.data_dir, cfg.id_col, cfg.label_col)
    folds = read_folds(folds_path(comp, cfg.runs_dir))
    table = attach_folds(comp, folds)
    n_folds = int(table["fold"].max()) + 1
    if not 0 <= cfg.fold < n_folds:
        raise KitError(f"fold={cfg.fold} but folds.csv has folds 0..{n_folds - 1}")
    for c in comp.classes:
        if str(c) in RESERVED:
            raise KitError(f"class name {c!r} collides with an OOF column name {sorted(RESERVED)}; rename the class")
    timm_name, size = resolve_model(cfg.model, cfg.img_size)
    device = pick_device(cfg.device)
    dtype = amp_dtype(cfg.amp, device)
    out = fold_dir(cfg.runs_dir, cfg.exp, cfg.fold)
    meta = dict(folds_hash=folds_hash(folds), n_folds=n_folds, classes=[str(c) for c in comp.classes],
                timm_name=timm_name, img_size_resolved=size, competition=str(comp.root), device_resolved=str(device),
                amp_resolved=str(dtype).replace("torch.", "") if dtype else "off", kit_version=__version__)

    model = create_model(cfg.model, len(comp.classes), cfg.pretrained, cfg.weights).to(device)
    mean, std = normalization(model)
    remove_stale_temps(out)
    cache = resolve(cfg.runs_dir) / IMAGE_CACHE if cfg.image_cache else None
    readable = readable_images(table["path"], cfg.on_bad_image, DECODE_MARGIN * size, cache)
    meta["skipped_images"] = table["path"][~readable].tolist()
    y = comp.targets
    is_val = (table["fold"] == cfg.fold).to_numpy()
    is_train = ~is_val & readable
    val_ok = readable[is_val]  # unreadable validation images are predicted as uniform: no information
    train_ds = ImageDataset(table["path"][is_train], y[is_train], train_transform(cfg.augment, size, mean, std, cfg.seed),
                            size, cache)
    val_ds = ImageDataset(table["path"][is_val & readable], y[is_val & readable], eval_transform(size, mean, std), size,
                          cache)
    if (cfg.mixup > 0 or cfg.cutmix > 0) and cfg.batch_size % 2:
        raise KitError(f"mixup/cutmix need an even batch_size; got {cfg.batch_size}")
    train_dl = make_loader(train_ds, cfg.batch_size, True, cfg.num_workers, cfg.seed)
    val_dl = make_loader(val_ds, cfg.batch_size * 2, False, cfg.num_workers)
    write_json(resolved(cfg, **meta, mean=mean, std=std), out / CONFIG)

    # NHWC helps on CPU too: oneDNN's convolutions (depthwise ones above all) prefer it; bench/ measures it
    channels_last = cfg.channels_last
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt, sched, scaler, ema, mixup = training_parts(model, cfg, len(train_dl), len(comp.classes), device, dtype)
    forward_model = torch.compile(model) if cfg.torch_compile else model

    state = Progress()
    if cfg.resume and (out / LAST).is_file():
        state = load_last(out / LAST, model, opt, sched, scaler, ema, meta)
        print(f"resuming {cfg.exp} fold {cfg.fold} at epoch {state.epoch} from {out / LAST}")

    bar = tqdm(range(state.epoch, cfg.epochs), desc=f"{cfg.exp} fold {cfg.fold}", initial=state.epoch,
               total=cfg.epochs, mininterval=2, disable=HEADLESS)
    for epoch in bar:
        t0 = time.time()
        # reseeded from (seed, epoch): a resumed epoch draws the same batches, augmentations and mixes
        seed_everything(cfg.seed * 1000 + epoch)
        train_dl.generator.manual_seed(cfg.seed * 1000 + epoch)
        train_ds.transform.set_random_seed(cfg.seed * 1000 + epoch)
        set_backbone_frozen(model, epoch < cfg.freeze_epochs)
        mix = mixup if mixup is not None and epoch < cfg.epochs - cfg.mixup_off_epochs else None
        with oom_hint(cfg):
            train_loss, state.step = train_one_epoch(forward_model, train_dl, opt, sched, scaler, ema, mix, cfg,
                                                     dtype, channels_last, device, state.step)
        eval_model = ema.module if ema is not None else model
        probs = predict(eval_model, val_dl, "none", device=device, desc="validate", autocast=dtype is not None)
        val_y = y[is_val & readable]
        row = dict(epoch=epoch, train_loss=train_loss, val_loss=metric_value("log_loss", val_y, probs),
                   **{f"val_{cfg.metric}": metric_value(cfg.metric, val_y, probs)},
                   lr=opt.param_groups[-1]["lr"], seconds=time.time() - t0)
        state.rows.append(row)
        improved = keep_top(out, state, score(cfg.metric, val_y, probs), epoch, cfg.save_top,
                            lambda: checkpoint(eval_model, meta, epoch, row[f"val_{cfg.metric}"]))
        state.stale = 0 if improved else state.stale + 1
        state.epoch = epoch + 1
        write_csv(pd.DataFrame(state.rows), out / HISTORY)
        save_last(out / LAST, model, opt, sched, scaler, ema, state, meta)
        bar.set_postfix(loss=f"{train_loss:.3f}", **{cfg.metric: f"{row[f'val_{cfg.metric}']:.4f}"})
        tqdm.write(f"epoch {epoch + 1}/{cfg.epochs}  train_loss {train_loss:.4f}  val_loss {row['val_loss']:.4f}  "
                   f"val_{cfg.metric} {row[f'val_{cfg.metric}']:.4f}{'  *best' if improved else ''}  "
                   f"{row['seconds']:.1f}s")
        if cfg.patience and state.stale >= cfg.patience:
            print(f"early stop after epoch {epoch}: no improvement for {cfg.patience} epoch(s)")
            break
    bar.close()

    best = torch.load(out / CHECKPOINT, map_location=device, weights_only=True)
    model.load_state_dict(best["model"])
    ttas = TTA_CANDIDATES if cfg.tta == "auto" else (cfg.tta,)
    oofs = {tta: oof_frame(table["id"][is_val], cfg.fold, y[is_val], with_uniform_rows(probs, val_ok), meta["classes"],
                           tta, meta["folds_hash"])
            for tta, probs in predict_many(model, val_dl, ttas, device=device, desc="oof",
                                           autocast=dtype is not None).items()}
    for tta, frame in oofs.items():
        write_csv(frame, out / oof_name(tta))
    oof = oofs[ttas[0]]
    write_csv(oof, out / OOF)  # last: its presence marks the fold complete (auto: the no-TTA predictions)
    history = pd.DataFrame(state.rows)
    best_row = history.set_index("epoch").loc[best["epoch"]]
    return FoldResult(out, float(best_row[f"val_{cfg.metric}"]), int(best["epoch"]), history, oof)


def readable_images(paths: pd.Series, on_bad_image: str, min_side: int = 0, cache_dir: Path | None = None
                    ) -> np.ndarray:
    """Decode every image once (at the scale training reads it, into the cache; a cached image was
    decoded before): stop with the list of unreadable ones, or (skip) mark them out."""
    bad = scan_images(paths, desc=f"checking {len(paths)} images", min_side=min_side, cache_dir=cache_dir)
    if len(bad) and on_bad_image == "error":
        listing = "\n".join(f"  {r.path}: {r.error}" for r in bad.head(20).itertuples())
        raise KitError(f"{len(bad)} image(s) cannot be read:\n{listing}\nfix or delete them, or set "
                       "on_bad_image='skip' to leave them out (they get uniform OOF probabilities)")
    if len(bad):
        print(f"skipping {len(bad)} unreadable image(s); the first: {bad['path'].iloc[0]}")
    return ~paths.isin(set(bad["path"])).to_numpy()


def training_parts(model: nn.Module, cfg: TrainConfig, batches_per_epoch: int, n_classes: int, device, dtype):
    """Optimizer (SAM wrapper; plain steps when sam='off'), per-update cosine schedule, fp16 scaler, EMA, mixup."""
    groups = param_groups(model, cfg)
    if cfg.sam == "off":
        opt = SAM(groups, torch.optim.AdamW, rho=0.0)  # the same wrapper: one code path, plain steps only
    else:
        opt = SAM(groups, torch.optim.AdamW, rho=cfg.sam_rho, adaptive=cfg.sam == "asam")
    updates_per_epoch = max(1, batches_per_epoch // cfg.accum_steps)
    sched = CosineLRScheduler(opt, t_initial=cfg.epochs * updates_per_epoch,
                              warmup_t=cfg.warmup_epochs * updates_per_epoch, warmup_lr_init=cfg.lr / 100,
                              lr_min=cfg.lr / 100, t_in_epochs=False)
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
    ema = ModelEmaV3(model, decay=cfg.ema_decay) if cfg.ema_decay > 0 else None
    mixup = Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, label_smoothing=cfg.label_smoothing,
                  num_classes=n_classes) if cfg.mixup > 0 or cfg.cutmix > 0 else None
    return opt, sched, scaler, ema, mixup


def train_one_epoch(model, loader, opt: SAM, sched, scaler, ema, mixup, cfg: TrainConfig, dtype, channels_last: bool,
                    device, step: int) -> tuple[float, int]:
    """One pass over the loader in updates of accum_steps micro-batches; returns (mean loss, step)."""
    model.train()
    soft_loss = SoftTargetCrossEntropy()

    def loss_fn(m, x, t):
        out = m(x)
        return soft_loss(out, t) if t.ndim == 2 else F.cross_entropy(out, t, label_smoothing=cfg.label_smoothing)

    total, n, pending, skipped = 0.0, 0, [], 0
    batches = tqdm(loader, desc="train", leave=False, mininterval=2, disable=HEADLESS)
    for i, (x, t) in enumerate(batches):
        x, t = x.to(device, non_blocking=True), t.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if mixup is not None:
            x, t = mixup(x, t)  # mixed once: both SAM passes see this batch and its soft targets
        pending.append((x, t))
        if len(pending) < cfg.accum_steps and i < len(loader) - 1:
            continue
        use_sam = cfg.sam != "off" and step % cfg.sam_every == 0
        loss, stepped = sam_update(model, opt, pending, loss_fn, scaler, dtype, cfg.clip_grad, sam=use_sam)
        skipped = 0 if stepped else skipped + 1
        # without a scaler a non-finite loss is fatal at once; with one, only when it keeps skipping
        if (not np.isfinite(loss) and scaler is None) or skipped >= MAX_SKIPPED_STEPS:
            raise KitError(f"loss is {loss} at step {step} (epoch {step // max(1, len(loader) // cfg.accum_steps)}); "
                           f"the weights were not updated with it and no checkpoint was written from it. Lower lr "
                           f"(now {opt.param_groups[-1]['lr']:.2e}), set clip_grad, or amp='off' if fp16 overflows")
        step += 1
        sched.step_update(step)
        if ema is not None and stepped:
            ema.update(model, step=step)
        size = sum(len(b[0]) for b in pending)
        total, n, pending = total + loss * size, n + size, []
    return total / max(n, 1), step


MAX_SKIPPED_STEPS = 20  # consecutive fp16 steps skipped for inf/NaN before the fold stops


@contextmanager
def oom_hint(cfg: TrainConfig):
    try:
        yield
    except torch.cuda.OutOfMemoryError as e:
        raise KitError(f"CUDA out of memory with batch_size={cfg.batch_size}, img_size={cfg.img_size or 'native'}"
                       f", model={cfg.model}: lower batch_size and raise accum_steps to keep the effective batch "
                       f"(batch_size * accum_steps), lower img_size, or use amp='bf16'. ({str(e)[:200]})") from None


def with_uniform_rows(probs: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Predictions for the readable rows, uniform probabilities for the skipped ones."""
    if ok.all():
        return probs
    full = np.full((len(ok), probs.shape[1]), 1.0 / probs.shape[1])
    full[ok] = probs
    return full


def remove_stale_temps(folder: Path) -> None:
    """A kill between write and rename leaves .<name>.<random>.tmp files: never complete, safe to drop."""
    for tmp in folder.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


def checkpoint(model: nn.Module, meta: dict, epoch: int, value: float) -> dict:
    """weights_only-safe: tensors, strings and numbers only."""
    return {"model": model.state_dict(), "classes": meta["classes"], "timm_name": meta["timm_name"],
            "img_size": meta["img_size_resolved"], "epoch": epoch, "score": value}


def keep_top(out: Path, state: Progress, value: float, epoch: int, n: int, make) -> bool:
    """Keep the best n checkpoints (best.pt is the best; the others top-<epoch>.pt); True if a new best."""
    ranked = sorted(state.top + [(value, epoch)], key=lambda t: -t[0])
    if (value, epoch) not in ranked[:n]:
        return False
    ckpt = make()
    new_best = ranked[0] == (value, epoch)
    if new_best and state.top:  # the old best moves aside if it stays in the top n
        old = out / CHECKPOINT
        if n > 1 and old.is_file():
            os.replace(old, out / f"top-{state.top[0][1]:03d}.pt")
    save_torch(ckpt, out / (CHECKPOINT if new_best else f"top-{epoch:03d}.pt"))
    for _, e in ranked[n:]:
        (out / f"top-{e:03d}.pt").unlink(missing_ok=True)
    state.top = ranked[:n]
    return new_best


def save_last(path: Path, model, opt, sched, scaler, ema, state: Progress, meta: dict) -> None:
    save_torch({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None,
                "ema": ema.module.state_dict() if ema is not None else None,
                "epoch": state.epoch, "step": state.step, "rows": state.rows,
                "top": [list(t) for t in state.top], "stale": state.stale,
                "folds_hash": meta["folds_hash"], "timm_name": meta["timm_name"], "kit_version": meta["kit_version"]},
               path)


def load_last(path: Path, model, opt, sched, scaler, ema, meta: dict) -> Progress:
    last = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("folds_hash", "timm_name", "kit_version"):
        if last.get(key) != meta[key]:
            raise KitError(f"{path} was made with {key}={last.get(key)!r}, this run has {meta[key]!r}; "
                           "rerun with resume=False (kit run-folds --force) to start this fold afresh")
    model.load_state_dict(last["model"])
    opt.load_state_dict(last["optimizer"])
    sched.load_state_dict(last["scheduler"])
    if scaler is not None and last["scaler"] is not None:
        scaler.load_state_dict(last["scaler"])
    if ema is not None and last["ema"] is not None:
        ema.module.load_state_dict(last["ema"])
    return Progress(last["epoch"], last["step"], last["rows"], [tuple(t) for t in last["top"]], last["stale"])
