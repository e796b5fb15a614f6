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
    (metric='' ) or the one given (kit.grade with the digits as the classes)."""
    from .grade import grade

    solution_path = resolve(data_dir) / SOLUTION_DIR / f"{name}.csv"
    if not solution_path.is_file():
        raise KitError(f"no hidden solution at {solution_path}; build the demo with `kit demo-data`")
    side = solution_path.with_suffix(".json")
    task, own = (read_json(side)["task"], read_json(side)["metric"]) if side.is_file() else ("multiclass", "accuracy")
    classes = ["0", "1"] if task == "binary" else [str(d) for d in range(10)]
    return grade(submission, solution_path, metric or own, task, classes,
                 "a digit class 0..9" if task != "binary" else "0 or 1", id_col="image_id", label_col="label")[1]
