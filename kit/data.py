"""Images on disk -> normalized tensors, read lazily one file at a time."""

from __future__ import annotations

from typing import Sequence

import os

import albumentations as A
import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset

from . import KitError


# Images larger than this many pixels are decoded at a reduced size (JPEG draft mode) or refused:
# a 30000x30000 PNG would need 2.7 GB as RGB before any resize.
MAX_PIXELS = 64_000_000
Image.MAX_IMAGE_PIXELS = None  # our own limit below, with a message that names the file


def read_image(path: str, max_side: int = 0) -> np.ndarray:
    """HWC uint8 RGB from any file PIL reads: grayscale, palette, RGBA (on white), 16-bit (scaled, not
    clipped), EXIF-rotated (turned upright), whatever its extension says."""
    try:
        with Image.open(path) as im:
            if im.width * im.height > MAX_PIXELS:
                if im.format == "JPEG":  # decode at 1/2, 1/4 or 1/8 scale: never the full bitmap
                    im.draft("RGB", (max(max_side, 1024), max(max_side, 1024)))
                else:
                    raise KitError(f"image {path} is {im.width}x{im.height} ({im.width * im.height / 1e6:.0f} MP), "
                                   f"over kit.data.MAX_PIXELS={MAX_PIXELS / 1e6:.0f} MP; downscale it first")
            im = ImageOps.exif_transpose(im)
            return np.asarray(to_rgb(im))
    except FileNotFoundError:
        raise KitError(f"image file {path} does not exist") from None
    except (OSError, SyntaxError, ValueError) as e:  # truncated, empty, not an image, broken header
        raise KitError(f"cannot read image {path}: {e}; delete it, drop its row from train.csv, "
                       "or train with on_bad_image='skip'") from None


def to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16/32-bit grayscale: scale to 8 bits
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
        return Image.fromarray((a * (255.0 / top)).clip(0, 255).astype(np.uint8)).convert("RGB")
    if im.mode == "P" and "transparency" in im.info or im.mode in ("RGBA", "LA", "PA"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def scan_images(paths, desc: str = "checking images") -> pd.DataFrame:
    """Every image decoded once: (path, error) for each file that cannot be read, and nothing else."""
    from tqdm import tqdm

    bad = []
    for p in tqdm(list(paths), desc=desc, mininterval=2, leave=False, disable=os.environ.get("KIT_HEADLESS") == "1"):
        try:
            if os.path.getsize(p) == 0:
                raise KitError(f"image {p} is an empty file (0 bytes)")
            read_image(p)
        except (KitError, OSError) as e:
            bad.append((p, str(e)))
    return pd.DataFrame(bad, columns=["path", "error"])


class ImageDataset(Dataset):
    def __init__(self, paths: Sequence[str], targets: Sequence[int] | None, transform: A.Compose):
        self.paths = list(paths)
        self.targets = None if targets is None else np.asarray(targets, dtype=np.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        image = self.transform(image=read_image(self.paths[i]))["image"]
        x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return x, (-1 if self.targets is None else self.targets[i])


def make_loader(ds: Dataset, batch_size: int, train: bool, num_workers: int = 0, seed: int = 0) -> DataLoader:
    return DataLoader(ds, batch_size=batch_size, shuffle=train, drop_last=train and len(ds) > batch_size,
                      num_workers=num_workers, pin_memory=torch.cuda.is_available(),
                      persistent_workers=num_workers > 0,
                      generator=torch.Generator().manual_seed(seed) if train else None)
