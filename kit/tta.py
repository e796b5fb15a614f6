"""Test-time augmentation on ttach's transforms: the views of a batch stacked into batched forwards.

ttach's ClassificationTTAWrapper runs one forward per view and merges raw outputs; here the
views of a batch are stacked (grouped by size) into forwards no larger than the loader's batch,
and merged after the activation (ACTIVATIONS: the head's probabilities).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch
import ttach
from torch import nn
from tqdm.auto import tqdm  # widget bars in Jupyter, text bars in a terminal

from . import KitError
from .augment import RESIZE_MODES
from .device import headless

PRESETS: dict[str, list] = {
    "none": [],
    "hflip": [ttach.HorizontalFlip()],
    "flips": [ttach.HorizontalFlip(), ttach.VerticalFlip()],
    "d4": [ttach.HorizontalFlip(), ttach.Rotate90(angles=[0, 90, 180, 270])],
    # bilinear, as A.Resize (cv2 INTER_LINEAR) made the training images; ttach's default, nearest, drops or
    # repeats whole pixel rows and columns
    "multiscale": [ttach.Scale(scales=[1, 0.875, 1.125], interpolation="bilinear", align_corners=False)],
}
MERGES = ("mean", "gmean", "logit_mean")
# A TTA name is a preset, or a preset@<resize mode> (kit.augment.RESIZE_MODES): its views of the image made
# square by that mode instead of the fold's own resize (e.g. none@crop for a fold that squashes). tta='auto'
# tries auto_candidates: every preset at the fold's mode and the plain image at each other mode.
NAMES = (*PRESETS, *(f"{p}@{m}" for p in PRESETS for m in RESIZE_MODES))


def cumulative_probs(logits: torch.Tensor) -> torch.Tensor:
    """(N, K-1) logits of P(grade > k) -> (N, K) per-grade probabilities.

    s = sigmoid(logits) is made non-increasing along k by a running minimum (independent sigmoids can cross:
    P(> 3) above P(> 2) would give grade 3 a negative probability); then p_0 = 1 - s_0, p_k = s_{k-1} - s_k,
    p_{K-1} = s_{K-2}: the differences of [1, s, 0], non-negative, each row summing to one."""
    s = torch.sigmoid(logits).cummin(-1).values
    edge = s.new_ones(*s.shape[:-1], 1)
    c = torch.cat([edge, s, torch.zeros_like(edge)], -1)  # P(grade > k) for k = -1 .. K-1
    return c[..., :-1] - c[..., 1:]


# logits -> probabilities, per head (kit.models.head_of); what validation, TTA (before views are merged), test
# inference and explain apply: softmax for one label per image, a sigmoid per class for multi-label (its rows do
# not sum to one; only the 'mean' merge keeps that), per-grade probabilities from an ordinal cumulative head
ACTIVATIONS = {"softmax": lambda z: z.softmax(-1), "sigmoid": torch.sigmoid, "cumulative": cumulative_probs}
# what tta="auto" tries on OOF, cheapest first: a tie goes to fewer views
CANDIDATES = ("none", "hflip", "flips", "multiscale", "d4")


def auto_candidates(resize: str) -> tuple[str, ...]:
    """What tta='auto' predicts OOF with for a fold whose images are made square by `resize`."""
    return (*CANDIDATES, *(f"none@{m}" for m in RESIZE_MODES if m != resize))


def split(tta: str) -> tuple[str, str | None]:
    """(preset, resize mode or None: the fold's own) of a TTA name; an unknown one raises KitError."""
    if tta not in NAMES:
        raise KitError(f"unknown tta {tta!r}; choose a preset {sorted(PRESETS)}, optionally with @<resize mode> "
                       f"{list(RESIZE_MODES)} (e.g. 'hflip@crop'), or 'auto'")
    preset, _, mode = tta.partition("@")
    return preset, mode or None


def n_views(tta: str) -> int:
    return max(1, len(views(tta)))


def views(tta: str) -> list:
    """ttach Transformers, one per view (the identity first)."""
    preset = split(tta)[0]
    return list(ttach.Compose(PRESETS[preset])) if PRESETS[preset] else []


def cannot_run(model: nn.Module, ttas, size: int, device: torch.device) -> dict[str, str]:
    """{tta: why} for each of `ttas` with a view the model cannot run on a size x size image (a multiscale view
    shrinks it below what a deep network's strides allow: a kernel larger than its input; or to a side a ViT's
    patch size or a Swin's window does not divide, or that a fixed-size ViT does not take): one forward of a blank
    image per view, in eval mode, so nothing the model holds changes."""
    was_training, bad = model.training, {}
    model.eval()
    blank = torch.zeros(1, 3, size, size, device=device)
    with torch.no_grad():
        for tta in ttas:
            try:
                for view in views(tta) or [None]:
                    model(view.augment_image(blank) if view else blank)
            except torch.cuda.OutOfMemoryError:  # the device is full, not the view too small: say that instead
                model.train(was_training)
                raise
            except (RuntimeError, AssertionError, ValueError) as e:  # conv shape checks raise RuntimeError; timm's
                # ViT, DeiT, Swin, MaxViT assert their input size (patch size, window, a fixed img_size)
                bad[tta] = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    model.train(was_training)
    return bad


def check_tta(tta: str, height: int, width: int) -> None:
    """Refuse combinations that are geometrically invalid for the input."""
    if split(tta)[0] == "d4" and height != width:
        raise KitError(f"tta='d4' rotates by 90 degrees, which needs square inputs; got {height}x{width}. "
                       "Use 'flips' or resize to a square")


def merge(probs: torch.Tensor, how: str = "mean") -> torch.Tensor:
    """(V, B, K) per-view probabilities -> (B, K)."""
    if how == "mean":
        return probs.mean(0)
    eps = torch.finfo(probs.dtype).tiny
    if how == "gmean":
        p = probs.clamp_min(eps).log().mean(0).exp()
        return p / p.sum(-1, keepdim=True)
    if how == "logit_mean":  # mean of per-view log-probabilities, renormalized: softmax of the mean
        return probs.clamp_min(eps).log().mean(0).softmax(-1)
    raise KitError(f"unknown merge {how!r}; choose one of {MERGES}")


@torch.no_grad()
def predict_batch(model: nn.Module, x: torch.Tensor, tta: str = "none", how: str = "mean",
                  max_images: int | None = None, activation: str = "softmax") -> torch.Tensor:
    """(B, K) probabilities for one batch: views of equal size stacked, each forward at most max_images
    images (default B) and at most max_images input-sized images' pixels (a 1.125 view takes fewer)."""
    transformers = views(tta)
    act = ACTIVATIONS[activation]
    if not transformers:
        return act(model(x).float())
    check_tta(tta, x.shape[-2], x.shape[-1])
    limit = max_images or len(x)
    by_shape = defaultdict(list)  # scale views change H, W: stack views of equal size together
    for i, t in enumerate(transformers):
        by_shape[view_shape(t, x)].append(i)
    out = [None] * len(transformers)
    for (h, w), group in by_shape.items():
        per_forward = max(1, min(limit, limit * x.shape[-2] * x.shape[-1] // (h * w)))
        made = (transformers[i].augment_image(x) for i in group)  # each view made when a forward needs it
        logits = torch.cat([model(c) for c in chunks(made, per_forward)])
        for i, p in zip(group, act(logits.float()).split(len(x))):
            out[i] = transformers[i].deaugment_label(p)
    return merge(torch.stack(out), how)


def view_shape(transformer, x: torch.Tensor) -> tuple[int, int]:
    """(H, W) of a view of x, from one image: only a scale view changes it."""
    return tuple(transformer.augment_image(x[:1]).shape[-2:])


def chunks(tensors, size: int):
    """The tensors' rows, concatenated in order, in chunks of `size` (the last one shorter): as
    torch.cat(tensors).split(size), holding at most one chunk and one tensor at a time."""
    pending, held = [], 0
    for t in tensors:
        while len(t):
            part, t = t[:size - held], t[size - held:]
            pending.append(part)
            held += len(part)
            if held == size:
                yield pending[0] if len(pending) == 1 else torch.cat(pending)
                pending, held = [], 0
    if pending:
        yield pending[0] if len(pending) == 1 else torch.cat(pending)


@torch.no_grad()
def predict(model: nn.Module, loader, tta: str = "none", how: str = "mean", device: str | torch.device = "cpu",
            desc: str = "predict", dtype: torch.dtype | None = None, activation: str = "softmax") -> np.ndarray:
    """(N, K) probabilities for a loader, in loader order; dtype: autocast dtype (see kit.device.inference_dtype)."""
    return predict_many(model, loader, (tta,), how, device, desc, dtype, activation)[tta]


@torch.no_grad()
def predict_many(model: nn.Module, loader, ttas, how: str = "mean", device: str | torch.device = "cpu",
                 desc: str = "predict", dtype: torch.dtype | None = None, activation: str = "softmax"
                 ) -> dict[str, np.ndarray]:
    """{tta: (N, K) probabilities} from ONE pass over the loader: each batch is decoded once for all presets."""
    jobs = [Job(model, t, dtype, how=how, activation=activation) for t in ttas]
    return dict(zip(ttas, predict_models(jobs, loader, device, f"{desc} tta={','.join(ttas)}")))


@dataclass
class Job:
    """One model's predictions in a shared pass: its TTA preset, autocast dtype (None: float32; see
    kit.device.inference_dtype), activation, and which tensor of a batch of several (SharedDecodeDataset)
    it reads."""
    model: nn.Module
    tta: str = "none"
    dtype: torch.dtype | None = None
    input: int = 0
    how: str = "mean"
    activation: str = "softmax"


@torch.no_grad()
def predict_models(jobs: list[Job], loader, device: str | torch.device = "cpu", desc: str = "predict"
                   ) -> list[np.ndarray]:
    """(N, K) probabilities per job, in loader order, from ONE pass over the loader: each batch is decoded
    once and every model (each fold of each experiment) runs on it in memory.

    A batch is (x, targets), or (a tuple of tensors, targets) with job.input choosing one. A forward never
    holds more images than the loader's batch: a batch that fits in memory bounds it.
    """
    device = torch.device(device)
    for job in jobs:
        job.model.eval()
    max_images = getattr(loader, "batch_size", None)  # None (a batch sampler, a list): each batch's own size
    outs = [[] for _ in jobs]
    for xs, _ in tqdm(loader, desc=desc, leave=False, mininterval=2, disable=headless()):
        xs = [x.to(device, non_blocking=True) for x in (xs if isinstance(xs, (tuple, list)) else [xs])]
        for job, out in zip(jobs, outs):
            with torch.autocast(device.type, dtype=job.dtype or torch.float32, enabled=job.dtype is not None):
                out.append(predict_batch(job.model, xs[job.input], job.tta, job.how, max_images,
                                         job.activation).cpu())
    return [torch.cat(c).numpy() for c in outs]
