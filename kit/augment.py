"""Albumentations presets: a registry of builders, picked by name from the config."""

from __future__ import annotations

from typing import Callable

import math

import albumentations as A
import cv2
import numpy as np

from . import KitError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# How an image becomes a size x size square at evaluation (validation, OOF, test) and in the presets that keep
# the whole image (none, light): timm's eval conventions (timm.data.transforms_factory, crop_mode).
#   squash     stretch both sides to size: the aspect ratio is lost
#   crop       short side to floor(size / crop_pct), then the central size x size (timm's 'center', crop_pct)
#   letterbox  long side to size, the rest padded with the mean colour (timm's 'border'): nothing cut, nothing
#              stretched
RESIZE_MODES = ("squash", "crop", "letterbox")
TIMM_CROP_MODES = {"center": "crop", "squash": "squash", "border": "letterbox"}


def geometry(size: int, mode: str = "squash", crop_pct: float = 1.0, mean=IMAGENET_MEAN) -> list:
    """The albumentations steps that make a size x size image by `mode` (RESIZE_MODES)."""
    if mode == "squash":
        return [A.Resize(size, size)]
    if mode == "crop":
        if not 0 < crop_pct <= 1:
            raise KitError(f"crop_pct={crop_pct!r} should be in (0, 1]: the share of the short side kept")
        return [A.SmallestMaxSize(max_size=math.floor(size / crop_pct)), A.CenterCrop(size, size)]
    if mode == "letterbox":
        fill = tuple(round(255 * m) for m in mean)  # normalizes to zero, as timm pads
        return [A.LongestMaxSize(max_size=size),
                A.PadIfNeeded(size, size, border_mode=cv2.BORDER_CONSTANT, fill=fill)]
    raise KitError(f"unknown resize mode {mode!r}; choose one of {RESIZE_MODES}")


PRESETS: dict[str, Callable[[int, list], list]] = {}


def register(name: str):
    def deco(fn):
        PRESETS[name] = fn
        return fn
    return deco


# A preset builder gets the size and the evaluation geometry: none and light keep the whole image as evaluation
# sees it (so training and validation crop, squash or pad alike); medium and mushroom draw their own random
# scaled crops (RandomResizedCrop, as timm trains).

@register("none")
def _none(size: int, base: list) -> list:
    return base


@register("light")
def _light(size: int, base: list) -> list:
    # no flips: they are not label-preserving for every dataset (digits, text, X-rays' sides)
    return [*base,
            A.Affine(scale=(0.9, 1.1), translate_percent=(-0.08, 0.08), rotate=(-10, 10), p=0.7),
            A.RandomBrightnessContrast(0.1, 0.1, p=0.3)]


@register("medium")
def _medium(size: int, base: list) -> list:
    return [A.RandomResizedCrop((size, size), scale=(0.6, 1.0)),
            A.HorizontalFlip(),
            A.Affine(scale=(0.9, 1.1), translate_percent=(-0.06, 0.06), rotate=(-15, 15), p=0.5),
            A.RandomBrightnessContrast(0.2, 0.2, p=0.5),
            A.HueSaturationValue(10, 15, 10, p=0.3),
            A.CoarseDropout(num_holes_range=(1, 4), hole_height_range=(0.05, 0.15), hole_width_range=(0.05, 0.15),
                            p=0.3)]


@register("mushroom")
def _mushroom(size: int, base: list) -> list:
    """The mushroom-competition TOP5 list: scaled crop, erasing, both flips, shift-scale-rotate,
    brightness/contrast, and one of noise/CLAHE/JPEG/gamma/posterize/blur."""
    return [A.RandomResizedCrop((size, size), scale=(0.5, 1.0)),
            A.HorizontalFlip(),
            A.VerticalFlip(),
            A.Affine(scale=(0.9, 1.1), translate_percent=(-0.0625, 0.0625), rotate=(-45, 45), p=0.5),
            A.RandomBrightnessContrast(0.2, 0.2, p=0.5),
            A.OneOf([A.GaussNoise(std_range=(0.02, 0.1)), A.CLAHE(), A.ImageCompression(quality_range=(50, 95)),
                     A.RandomGamma(), A.Posterize(num_bits=(4, 6)), A.Blur(blur_limit=(3, 5))], p=0.5),
            A.CoarseDropout(num_holes_range=(1, 8), hole_height_range=(0.05, 0.12), hole_width_range=(0.05, 0.12),
                            p=0.5)]


def normalization(model) -> tuple[tuple, tuple]:
    """Mean and std the model's pretrained weights expect (timm's pretrained config)."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD))


def train_transform(preset: str, size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD, seed: int | None = None,
                    resize: str = "squash", crop_pct: float = 1.0) -> A.Compose:
    """Albumentations 2 draws from its own generator, which np.random.seed does not reach: seed it here."""
    return A.Compose([*preset_steps(preset, size, resize, crop_pct, mean), A.Normalize(mean, std)], seed=seed)


def eval_transform(size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD, resize: str = "squash",
                   crop_pct: float = 1.0) -> A.Compose:
    """Validation, OOF and test: the image made square by `resize` (see geometry), normalized."""
    return A.Compose([*geometry(size, resize, crop_pct, mean), A.Normalize(mean, std)])


def preset_steps(preset: str, size: int, resize: str = "squash", crop_pct: float = 1.0, mean=IMAGENET_MEAN) -> list:
    if preset not in PRESETS:
        raise KitError(f"unknown augment preset {preset!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[preset](size, geometry(size, resize, crop_pct, mean))


def preview(image: np.ndarray, preset: str, size: int, n: int = 8, seed: int = 0, resize: str = "squash",
            crop_pct: float = 1.0) -> list[np.ndarray]:
    """`n` augmented versions of one HWC uint8 image, before normalization, for a preview grid."""
    aug = A.Compose(preset_steps(preset, size, resize, crop_pct), seed=seed)
    return [aug(image=image)["image"] for _ in range(n)]
