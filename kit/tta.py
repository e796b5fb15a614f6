"""Test-time augmentation on ttach's transforms: the views of a batch stacked into batched forwards.

ttach's ClassificationTTAWrapper runs one forward per view and merges raw outputs; here the
views of a batch are stacked (grouped by size) into forwards no larger than the loader's batch,
and merged after softmax.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch
import ttach
from torch import nn
from tqdm import tqdm

from . import KitError
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
# what tta="auto" tries on OOF, cheapest first: a tie goes to fewer views
CANDIDATES = ("none", "hflip", "flips", "multiscale", "d4")


def n_views(tta: str) -> int:
    return max(1, len(views(tta)))


def views(tta: str) -> list:
    """ttach Transformers, one per view (the identity first)."""
    if tta not in PRESETS:
        raise KitError(f"unknown tta {tta!r}; choose one of {sorted(PRESETS)}")
    return list(ttach.Compose(PRESETS[tta])) if PRESETS[tta] else []


def check_tta(tta: str, height: int, width: int) -> None:
    """Refuse combinations that are geometrically invalid for the input."""
    if tta == "d4" and height != width:
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
                  max_images: int | None = None) -> torch.Tensor:
    """(B, K) probabilities for one batch: views of equal size stacked, each forward at most max_images
    images (default B) and at most max_images input-sized images' pixels (a 1.125 view takes fewer)."""
    transformers = views(tta)
    if not transformers:
        return model(x).float().softmax(-1)
    check_tta(tta, x.shape[-2], x.shape[-1])
    limit = max_images or len(x)
    by_shape = defaultdict(list)  # scale views change H, W: stack views of equal size together
    for i, t in enumerate(transformers):
        v = t.augment_image(x)
        by_shape[tuple(v.shape[-2:])].append((i, v))
    out = [None] * len(transformers)
    for (h, w), group in by_shape.items():
        stacked = torch.cat([v for _, v in group])
        per_forward = max(1, min(limit, limit * x.shape[-2] * x.shape[-1] // (h * w)))
        logits = torch.cat([model(c) for c in stacked.split(per_forward)])
        for (i, _), p in zip(group, logits.float().softmax(-1).split(len(x))):
            out[i] = transformers[i].deaugment_label(p)
    return merge(torch.stack(out), how)


@torch.no_grad()
def predict(model: nn.Module, loader, tta: str = "none", how: str = "mean", device: str | torch.device = "cpu",
            desc: str = "predict", dtype: torch.dtype | None = None) -> np.ndarray:
    """(N, K) probabilities for a loader, in loader order; dtype: autocast dtype (see kit.device.inference_dtype)."""
    return predict_many(model, loader, (tta,), how, device, desc, dtype)[tta]


@torch.no_grad()
def predict_many(model: nn.Module, loader, ttas, how: str = "mean", device: str | torch.device = "cpu",
                 desc: str = "predict", dtype: torch.dtype | None = None) -> dict[str, np.ndarray]:
    """{tta: (N, K) probabilities} from ONE pass over the loader: each batch is decoded once for all presets.

    A forward never holds more images than the loader's batch: a batch that fits in memory bounds it.
    """
    model.eval()
    device = torch.device(device)
    max_images = getattr(loader, "batch_size", None)  # None (a batch sampler, a list): each batch's own size
    chunks = {t: [] for t in ttas}
    for x, _ in tqdm(loader, desc=f"{desc} tta={','.join(ttas)}", leave=False, mininterval=2,
                     disable=headless()):
        x = x.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            for t in ttas:
                chunks[t].append(predict_batch(model, x, t, how, max_images).cpu())
    return {t: torch.cat(c).numpy() for t, c in chunks.items()}
