"""Albumentations presets: a registry of builders, picked by name from the config."""

from __future__ import annotations

from typing import Callable

import albumentations as A
import numpy as np

from . import KitError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

PRESETS: dict[str, Callable[[int], list]] = {}


def register(name: str):
    def deco(fn):
        PRESETS[name] = fn
        return fn
    return deco


@register("none")
def _none(size: int) -> list:
    return [A.Resize(size, size)]


@register("light")
def _light(size: int) -> list:
    # no flips: they are not label-preserving for every dataset (digits, text, X-rays' sides)
    return [A.Resize(size, size),
            A.Affine(scale=(0.9, 1.1), translate_percent=(-0.08, 0.08), rotate=(-10, 10), p=0.7),
            A.RandomBrightnessContrast(0.1, 0.1, p=0.3)]


@register("medium")
def _medium(size: int) -> list:
    return [A.RandomResizedCrop((size, size), scale=(0.6, 1.0)),
            A.HorizontalFlip(),
            A.Affine(scale=(0.9, 1.1), translate_percent=(-0.06, 0.06), rotate=(-15, 15), p=0.5),
            A.RandomBrightnessContrast(0.2, 0.2, p=0.5),
            A.HueSaturationValue(10, 15, 10, p=0.3),
            A.CoarseDropout(num_holes_range=(1, 4), hole_height_range=(0.05, 0.15), hole_width_range=(0.05, 0.15),
                            p=0.3)]


@register("mushroom")
def _mushroom(size: int) -> list:
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


def train_transform(preset: str, size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD, seed: int | None = None) -> A.Compose:
    """Albumentations 2 draws from its own generator, which np.random.seed does not reach: seed it here."""
    if preset not in PRESETS:
        raise KitError(f"unknown augment preset {preset!r}; choose one of {sorted(PRESETS)}")
    return A.Compose([*PRESETS[preset](size), A.Normalize(mean, std)], seed=seed)


def eval_transform(size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> A.Compose:
    return A.Compose([A.Resize(size, size), A.Normalize(mean, std)])


def preview(image: np.ndarray, preset: str, size: int, n: int = 8, seed: int = 0) -> list[np.ndarray]:
    """`n` augmented versions of one HWC uint8 image, before normalization, for a preview grid."""
    if preset not in PRESETS:
        raise KitError(f"unknown augment preset {preset!r}; choose one of {sorted(PRESETS)}")
    aug = A.Compose(PRESETS[preset](size), seed=seed)
    return [aug(image=image)["image"] for _ in range(n)]
