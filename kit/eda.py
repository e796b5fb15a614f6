"""What the EDA notebook shows: class balance, image sizes and modes, unreadable files."""

from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm


def image_stats(paths, desc: str = "image headers") -> pd.DataFrame:
    """Width, height, mode and format from each file's header (cheap: no full decode); errors kept per file."""
    rows = []
    for p in tqdm(list(paths), desc=desc, mininterval=2, leave=False):
        try:
            with Image.open(p) as im:
                rows.append((p, im.width, im.height, im.mode, im.format, ""))
        except Exception as e:  # noqa: BLE001 - report every unreadable file, whatever the reason
            rows.append((p, np.nan, np.nan, "", "", f"{type(e).__name__}: {e}"))
    return pd.DataFrame(rows, columns=["path", "width", "height", "mode", "format", "error"])


def size_summary(stats: pd.DataFrame) -> pd.DataFrame:
    """How many images have each (width, height, mode, format)."""
    ok = stats[stats["error"] == ""]
    return (ok.groupby(["width", "height", "mode", "format"]).size().rename("images")
            .sort_values(ascending=False).reset_index())


def class_counts(train: pd.DataFrame) -> pd.DataFrame:
    counts = train["label"].value_counts().sort_index()
    return pd.DataFrame({"label": counts.index, "images": counts.to_numpy(),
                         "share": (counts / counts.sum()).round(4).to_numpy()})


def per_class_accuracy(y: np.ndarray, probs: np.ndarray, classes: list[str]) -> pd.DataFrame:
    pred = probs.argmax(1)
    return pd.DataFrame({"class": classes, "images": [(y == k).sum() for k in range(len(classes))],
                         "accuracy": [(pred[y == k] == k).mean() if (y == k).any() else np.nan
                                      for k in range(len(classes))]})
