"""What the EDA notebook shows: class balance, image sizes and modes, unreadable files."""

from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm  # widget bars in Jupyter, text bars in a terminal

from .competition import sort_classes


def image_stats(paths, desc: str = "image headers") -> pd.DataFrame:
    """Size, mode and format from each file's header, what kit will handle for it (note), and for
    files that cannot be decoded, the error."""
    from .data import MAX_PIXELS, read_image
    from .device import headless

    rows = []
    for p in tqdm(list(paths), desc=desc, mininterval=2, leave=False, disable=headless()):
        try:
            with Image.open(p) as im:
                w, h, mode, fmt = im.width, im.height, im.mode, im.format
                rotated = im.getexif().get(0x0112, 1) not in (1, None)
            read_image(p)  # the full decode: truncated files fail only here
            rows.append((p, w, h, mode, fmt, notes(p, w, h, mode, fmt, rotated, MAX_PIXELS), ""))
        except Exception as e:  # noqa: BLE001 - report every unreadable file, whatever the reason
            rows.append((p, np.nan, np.nan, "", "", "", str(e) or type(e).__name__))
    return pd.DataFrame(rows, columns=["path", "width", "height", "mode", "format", "note", "error"])


def notes(path: str, w: int, h: int, mode: str, fmt: str, rotated: bool, max_pixels: int) -> str:
    """What read_image does for this file that the user may want to know."""
    out = []
    ext = path.rsplit(".", 1)[-1].lower()
    if fmt and {"jpg": "jpeg", "tif": "tiff"}.get(ext, ext) != fmt.lower():
        out.append(f"{fmt} named .{ext}")
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        out.append("16-bit, scaled to 8")
    if mode in ("RGBA", "LA", "PA", "P"):
        out.append(f"{mode}, put on white" if mode != "P" else "palette")
    if mode in ("L", "1"):
        out.append("grayscale")
    if rotated:
        out.append("EXIF-rotated, turned upright")
    if w * h > max_pixels:
        out.append("very large, decoded reduced")
    return "; ".join(out)


def size_summary(stats: pd.DataFrame) -> pd.DataFrame:
    """How many images have each (width, height, mode, format)."""
    ok = stats[stats["error"] == ""]
    return (ok.groupby(["width", "height", "mode", "format"]).size().rename("images")
            .sort_values(ascending=False).reset_index())


def stripped_spaces(comp) -> pd.DataFrame:
    """How many ids and labels (per file and column) had surrounding spaces that kit stripped: 'cat ' and
    'cat' are one class, ' 007' is the image 007. No rows when nothing was stripped."""
    rows = [(file, column, n) for (file, column), n in comp.stripped.items()]
    return pd.DataFrame(rows, columns=["file", "column", "values stripped"])


def class_counts(train: pd.DataFrame) -> pd.DataFrame:
    counts = train["label"].value_counts()
    counts = counts.reindex(sort_classes(counts.index))  # kit's class order: '2' before '10'
    return pd.DataFrame({"label": counts.index, "images": counts.to_numpy(),
                         "share": (counts / counts.sum()).round(4).to_numpy()})


def per_class_accuracy(y: np.ndarray, probs: np.ndarray, classes: list[str]) -> pd.DataFrame:
    pred = probs.argmax(1)
    return pd.DataFrame({"class": classes, "images": [(y == k).sum() for k in range(len(classes))],
                         "accuracy": [(pred[y == k] == k).mean() if (y == k).any() else np.nan
                                      for k in range(len(classes))]})
