"""The LR range test (Leslie Smith; fastai's lr_find): the fold's model trained for a few hundred updates with
the learning rate rising exponentially from `start` to `end`, the loss recorded at each; where it falls fastest,
and where it is lowest, say which learning rate to train with.

Written here rather than taken from a library: torch-lr-finder and fastai each bring their own training loop,
and the test must run kit's own (its loss per head, mixup, accumulation-free AdamW groups with the backbone's
lr_scale, AMP, channels_last) to say anything about kit's training. Nothing is written to the fold's folder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import KitError
from .config import TrainConfig
from .device import seed_everything, set_threads


@dataclass
class LRCurve:
    table: pd.DataFrame  # step, lr (the head's; the backbone's is lr * backbone_lr_mult), loss, smoothed
    suggested: float  # the lr of the lowest smoothed loss / 10: a safe peak lr for the cosine schedule
    steepest: float  # the lr where the smoothed loss falls fastest (per unit of log lr)


def lr_find(cfg: TrainConfig, start: float = 1e-7, end: float = 10.0, steps: int = 100, diverge: float = 4.0,
            beta: float = 0.98) -> LRCurve:
    """Train fold cfg.fold's model (fresh, as fit_fold starts it) for up to `steps` updates of one micro-batch,
    the head's lr rising exponentially from start to end (the backbone's at backbone_lr_mult of it), no SAM; stop
    when the smoothed loss exceeds `diverge` times its minimum or turns non-finite. smoothed: the loss's
    exponential moving average with factor beta, bias-corrected (fastai's)."""
    from .models import create_model, head_of
    from .sam import sam_update
    from .train import TrainState, load_fold, make_loaders, training_batch, training_loss
    from .augment import normalization

    if not 0 < start < end:
        raise KitError(f"lr_find: start={start} and end={end} must satisfy 0 < start < end")
    if steps < 5:
        raise KitError(f"lr_find: steps={steps}; at least 5 updates make a curve")
    seed_everything(cfg.seed)
    set_threads(cfg.threads)
    fold = load_fold(cfg)
    n_outputs, activation = head_of(fold.task, cfg.ordinal_head, len(fold.classes))
    model = create_model(cfg.model, n_outputs, cfg.pretrained, cfg.weights).to(fold.device)
    mean, std = normalization(model)
    loaders = make_loaders(cfg, fold, mean, std)
    state = TrainState.build(model, cfg, len(loaders.train), n_outputs, fold.device, fold.dtype, activation)
    loss_fn, factor = training_loss(state), (end / start) ** (1 / (steps - 1))
    state.forward.train()
    rows, avg, best = [], 0.0, math.inf
    batches = iter(())
    for step in range(steps):
        try:
            x, t = next(batches)
        except StopIteration:  # another pass over the training rows
            loaders.reseed(cfg.seed * 1000 + step)
            batches = iter(loaders.train)
            x, t = next(batches)
        lr = start * factor ** step
        for group in state.opt.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        loss, _ = sam_update(state.forward, state.opt, [training_batch(state, x, t, state.mixup)], loss_fn,
                             state.scaler, state.dtype, cfg.clip_grad, sam=False)
        avg = beta * avg + (1 - beta) * loss
        smoothed = avg / (1 - beta ** (step + 1))
        rows.append({"step": step + 1, "lr": lr, "loss": loss, "smoothed": smoothed})
        if not np.isfinite(smoothed) or smoothed > diverge * best:
            break
        best = min(best, smoothed)
    table = pd.DataFrame(rows)
    return LRCurve(table, *suggestions(table))


def suggestions(table: pd.DataFrame) -> tuple[float, float]:
    """(lr of the lowest smoothed loss / 10, lr of the steepest fall of the smoothed loss against log lr), from
    the finite rows; the steepest fall skips the first tenth, where the average is still settling."""
    ok = table[np.isfinite(table["smoothed"])]
    if len(ok) < 3:
        raise KitError(f"lr_find: the loss diverged after {len(ok)} update(s); lower start")
    suggested = float(ok["lr"].iloc[int(ok["smoothed"].to_numpy().argmin())]) / 10
    skip = max(1, len(ok) // 10)
    slope = np.gradient(ok["smoothed"].to_numpy(), np.log(ok["lr"].to_numpy()))
    steepest = float(ok["lr"].iloc[skip + int(slope[skip:].argmin())]) if len(ok) > skip else suggested
    return suggested, steepest
