"""Test-time augmentation on ttach's transforms, run as ONE batched forward per batch.

ttach's ClassificationTTAWrapper runs one forward per view and merges raw outputs; here the
views of a batch are stacked (grouped by size, chunked to fit memory), and merged after softmax.
"""

from __future__ import annotations

import os
from collections import defaultdict

import numpy as np
import torch
import ttach
from torch import nn
from tqdm import tqdm

from . import KitError

PRESETS: dict[str, list] = {
    "none": [],
    "hflip": [ttach.HorizontalFlip()],
    "flips": [ttach.HorizontalFlip(), ttach.VerticalFlip()],
    "d4": [ttach.HorizontalFlip(), ttach.Rotate90(angles=[0, 90, 180, 270])],
    "multiscale": [ttach.Scale(scales=[1, 0.875, 1.125])],
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
                  max_views_batch: int = 1024) -> torch.Tensor:
    """(B, K) probabilities for one batch: all views stacked into as few forwards as memory allows."""
    transformers = views(tta)
    if not transformers:
        return model(x).float().softmax(-1)
    check_tta(tta, x.shape[-2], x.shape[-1])
    by_shape = defaultdict(list)  # scale views change H, W: stack views of equal size together
    for i, t in enumerate(transformers):
        v = t.augment_image(x)
        by_shape[tuple(v.shape[-2:])].append((i, v))
    out = [None] * len(transformers)
    for group in by_shape.values():
        stacked = torch.cat([v for _, v in group])
        logits = torch.cat([model(c) for c in stacked.split(max(max_views_batch, len(x)))])
        for (i, _), p in zip(group, logits.float().softmax(-1).split(len(x))):
            out[i] = transformers[i].deaugment_label(p)
    return merge(torch.stack(out), how)


@torch.no_grad()
def predict(model: nn.Module, loader, tta: str = "none", how: str = "mean", device: str | torch.device = "cpu",
            desc: str = "predict", autocast: bool = False) -> np.ndarray:
    """(N, K) probabilities for a loader, in loader order."""
    return predict_many(model, loader, (tta,), how, device, desc, autocast)[tta]


@torch.no_grad()
def predict_many(model: nn.Module, loader, ttas, how: str = "mean", device: str | torch.device = "cpu",
                 desc: str = "predict", autocast: bool = False) -> dict[str, np.ndarray]:
    """{tta: (N, K) probabilities} from ONE pass over the loader: each batch is decoded once for all presets."""
    model.eval()
    device = torch.device(device)
    chunks = {t: [] for t in ttas}
    for x, _ in tqdm(loader, desc=f"{desc} tta={','.join(ttas)}", leave=False, mininterval=2,
                     disable=os.environ.get("KIT_HEADLESS") == "1"):
        x = x.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            for t in ttas:
                chunks[t].append(predict_batch(model, x, t, how).cpu())
    return {t: torch.cat(c).numpy() for t, c in chunks.items()}
