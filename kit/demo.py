"""The embedded demo competition: scikit-learn's 1,797 handwritten digits as RGB PNG files in the
Kaggle layout, with hidden test labels that play the private leaderboard."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from . import KitError
from .io import write_csv
from .metrics import metric_value
from .paths import resolve

SOLUTION_DIR = "_leaderboard"  # beside the competitions, never read by the notebooks

EXPERIMENTS = {  # `kit demo`'s experiments, tiny timm models: the demo must run in minutes on 2 CPU cores
    "effnet": dict(model="test_efficientnet", img_size=32, epochs=12, lr=3e-3),
    "resnet": dict(model="test_resnet", img_size=32, epochs=12, lr=3e-3),
}


def build_demo(data_dir: str | Path = "data", name: str = "demo", size: int = 32, test_frac: float = 0.2,
               n: int = 0, seed: int = 0) -> Path:
    """Write data/<name>/ (train.csv, train/, test/, sample_submission.csv) and the hidden solution.

    Deterministic for the same arguments. n > 0 keeps a stratified subset of n images (tiny test runs).
    """
    digits = load_digits()
    images, labels = digits.images, digits.target
    idx = np.arange(len(labels))
    if n:
        idx, _ = train_test_split(idx, train_size=n, stratify=labels, random_state=seed)
    tr, te = train_test_split(idx, test_size=test_frac, stratify=labels[idx], random_state=seed)
    root = resolve(data_dir) / name
    if root.exists():
        shutil.rmtree(root)
    for sub in ("train", "test"):
        (root / sub).mkdir(parents=True)
    rng = np.random.default_rng(seed)
    # shuffled, meaningless ids: neither order nor name leaks the label
    ids = [f"{i:05x}" for i in rng.choice(16**5, size=len(idx), replace=False)]
    id_of = dict(zip(idx.tolist(), ids))
    for sub, part in (("train", tr), ("test", te)):
        for i in part:
            to_png(images[i], size).save(root / sub / f"{id_of[i]}.png")
    write_csv(pd.DataFrame({"image_id": [id_of[i] for i in tr], "label": labels[tr]}), root / "train.csv")
    test = pd.DataFrame({"image_id": [id_of[i] for i in te], "label": labels[te]}).sort_values("image_id")
    write_csv(test.assign(label=0), root / "sample_submission.csv")
    write_csv(test, resolve(data_dir) / SOLUTION_DIR / f"{name}.csv")
    return root


def to_png(image8: np.ndarray, size: int) -> Image.Image:
    """An 8x8 image with values 0..16 -> a size x size RGB image (bicubic, as a scanner would blur)."""
    gray = Image.fromarray((image8 * (255 / 16)).astype(np.uint8), mode="L")
    return gray.resize((size, size), Image.BICUBIC).convert("RGB")


def leaderboard_score(submission: str | Path, data_dir: str | Path = "data", name: str = "demo",
                      metric: str = "accuracy") -> float:
    """Grade a submission against the hidden labels, like a private leaderboard."""
    solution_path = resolve(data_dir) / SOLUTION_DIR / f"{name}.csv"
    if not solution_path.is_file():
        raise KitError(f"no hidden solution at {solution_path}; build the demo with `kit demo-data`")
    solution = pd.read_csv(solution_path, dtype={"image_id": str})
    sub = pd.read_csv(submission, dtype=str, keep_default_na=False)  # as written: an empty label is not a missing id
    if "image_id" not in sub or "label" not in sub:
        raise KitError(f"{submission} needs columns ['image_id', 'label']; it has {list(sub.columns)}")
    merged = solution.merge(sub, on="image_id", how="left", suffixes=("", "_pred"))
    if merged["label_pred"].isna().any():
        raise KitError(f"{submission} lacks {int(merged['label_pred'].isna().sum())} test id(s)")
    k = int(solution["label"].max()) + 1
    pred = pd.to_numeric(merged["label_pred"], errors="coerce")
    bad = merged["label_pred"][pred.isna() | (pred % 1 != 0) | (pred < 0) | (pred >= k)]
    if len(bad):
        raise KitError(f"{submission}: column 'label' has {len(bad)} value(s) that are not a digit class 0..{k - 1}, "
                       f"e.g. {bad.astype(str).unique()[:5].tolist()}; write one class number per row")
    return metric_value(metric, merged["label"].to_numpy(), np.eye(k)[pred.astype(int).to_numpy()])
