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
from .io import read_json, write_csv, write_json
from .metrics import metric_value
from .paths import resolve

SOLUTION_DIR = "_leaderboard"  # beside the competitions, never read by the notebooks

EXPERIMENTS = {  # `kit demo`'s experiments, tiny timm models: the demo must run in minutes on 2 CPU cores
    "effnet": dict(model="test_efficientnet", img_size=32, epochs=12, lr=3e-3),
    "resnet": dict(model="test_resnet", img_size=32, epochs=12, lr=3e-3),
}


# task -> (the leaderboard's metric, what the sample's target column holds)
TASKS = {"multiclass": ("accuracy", "0"), "binary": ("roc_auc", "0.5"), "ordinal": ("qwk", "0"),
         "multilabel": ("f_beta:1", "0")}


def build_demo(data_dir: str | Path = "data", name: str = "demo", size: int = 32, test_frac: float = 0.2,
               n: int = 0, seed: int = 0, task: str = "multiclass") -> Path:
    """Write data/<name>/ (train.csv, train/, test/, sample_submission.csv) and the hidden solution, for one
    of TASKS: multiclass (the digit), binary (digit >= 5, a probability scored by AUC), ordinal (the digit's
    value, scored by QWK) or multilabel (which digits appear, on two digits side by side, mean F1).

    Deterministic for the same arguments. n > 0 keeps a stratified subset of n images (tiny test runs).
    """
    if task not in TASKS:
        raise KitError(f"demo task={task!r}; use one of {list(TASKS)}")
    digits = load_digits()
    images, labels = demo_images(digits.images, digits.target, task, seed)
    idx = np.arange(len(digits.target))
    if n:
        idx, _ = train_test_split(idx, train_size=n, stratify=digits.target, random_state=seed)
    tr, te = train_test_split(idx, test_size=test_frac, stratify=digits.target[idx], random_state=seed)
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
    metric, blank = TASKS[task]
    write_csv(test.assign(label=blank), root / "sample_submission.csv")
    write_csv(test, resolve(data_dir) / SOLUTION_DIR / f"{name}.csv")
    write_json({"task": task, "metric": metric}, resolve(data_dir) / SOLUTION_DIR / f"{name}.json")
    return root


def demo_images(images: np.ndarray, digits: np.ndarray, task: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The task's 8x8 (16x16 for multilabel) images and labels from the digits: multilabel puts each digit
    beside a fixed random partner, its label the digits that appear ('3 7', or '3' for two 3s)."""
    if task == "binary":
        return images, (digits >= 5).astype(int)
    if task != "multilabel":
        return images, digits
    partner = np.random.default_rng(seed + 1).permutation(len(digits))
    pairs = np.zeros((len(digits), 16, 16))
    pairs[:, 4:12, :8], pairs[:, 4:12, 8:] = images, images[partner]
    labels = [" ".join(map(str, sorted({int(a), int(b)}))) for a, b in zip(digits, digits[partner])]
    return pairs, np.array(labels, dtype=object)


def to_png(image8: np.ndarray, size: int) -> Image.Image:
    """An 8x8 image with values 0..16 -> a size x size RGB image (bicubic, as a scanner would blur)."""
    gray = Image.fromarray((image8 * (255 / 16)).astype(np.uint8), mode="L")
    return gray.resize((size, size), Image.BICUBIC).convert("RGB")


def leaderboard_score(submission: str | Path, data_dir: str | Path = "data", name: str = "demo",
                      metric: str = "") -> float:
    """Grade a submission against the hidden labels, like a private leaderboard, on the demo task's metric
    (metric='' ) or the one given."""
    solution_path = resolve(data_dir) / SOLUTION_DIR / f"{name}.csv"
    if not solution_path.is_file():
        raise KitError(f"no hidden solution at {solution_path}; build the demo with `kit demo-data`")
    side = solution_path.with_suffix(".json")
    task, own = (read_json(side)["task"], read_json(side)["metric"]) if side.is_file() else ("multiclass", "accuracy")
    metric = metric or own
    solution = pd.read_csv(solution_path, dtype={"image_id": str, "label": str}, keep_default_na=False)
    sub = pd.read_csv(submission, dtype=str, keep_default_na=False)  # as written: an empty label is not a missing id
    if "image_id" not in sub or "label" not in sub:
        raise KitError(f"{submission} needs columns ['image_id', 'label']; it has {list(sub.columns)}")
    merged = solution.merge(sub, on="image_id", how="left", suffixes=("", "_pred"))
    if merged["label_pred"].isna().any():
        raise KitError(f"{submission} lacks {int(merged['label_pred'].isna().sum())} test id(s)")
    if task == "multilabel":
        truth, pred = digit_sets(merged["label"], submission), digit_sets(merged["label_pred"], submission)
        return metric_value(metric, truth, pred)
    if task == "binary":
        p = pd.to_numeric(merged["label_pred"], errors="coerce")
        if p.isna().any():
            raise KitError(f"{submission}: column 'label' needs one probability per row; "
                           f"{int(p.isna().sum())} are not numbers")
        return metric_value(metric, merged["label"].astype(int).to_numpy(), np.c_[1 - p, p])
    k = 10 if task == "ordinal" else int(solution["label"].astype(int).max()) + 1
    pred = pd.to_numeric(merged["label_pred"], errors="coerce")
    bad = merged["label_pred"][pred.isna() | (pred % 1 != 0) | (pred < 0) | (pred >= k)]
    if len(bad):
        raise KitError(f"{submission}: column 'label' has {len(bad)} value(s) that are not a digit class 0..{k - 1}, "
                       f"e.g. {bad.astype(str).unique()[:5].tolist()}; write one class number per row")
    return metric_value(metric, merged["label"].astype(int).to_numpy(), np.eye(k)[pred.astype(int).to_numpy()])


def digit_sets(cells: pd.Series, source) -> np.ndarray:
    """'3 7' -> a 0/1 row over the ten digits; anything but digits is refused, naming the file."""
    out = np.zeros((len(cells), 10), dtype=int)
    for i, cell in enumerate(cells.astype(str)):
        parts = cell.split()
        if not all(p in {str(d) for d in range(10)} for p in parts):
            raise KitError(f"{source}: label {cell!r} is not a space-separated list of digits 0..9")
        out[i, [int(p) for p in parts]] = 1
    return out
