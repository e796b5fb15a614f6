"""Images on disk -> normalized tensors, read lazily one file at a time."""

from __future__ import annotations

from typing import Sequence

import albumentations as A
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from . import KitError


def read_image(path: str) -> np.ndarray:
    """HWC uint8 RGB, whatever the file's mode (grayscale, palette, RGBA)."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise KitError(f"image file {path} does not exist") from None
    except OSError as e:
        raise KitError(f"cannot read image {path}: {e}; delete it or drop its row from train.csv") from None


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
