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
    "effnet": dict(model="test_efficientnet", img_size=32, epochs=20, lr=3e-2),  # slower to learn than the resnet
    "resnet": dict(model="test_resnet", img_size=32, epochs=12, lr=3e-3),
}


# task -> (the leaderboard's metric, what the sample's target column holds)
TASKS = {"multiclass": ("accuracy", "0"), "binary": ("roc_auc", "0.5"), "ordinal": ("qwk", "0"),
         "multilabel": ("f_beta:1", "0")}


def build_demo(data_dir: str | Path = "data", name: str = "demo", size: int = 32, test_frac: float = 0.2,
               n: int = 0, seed: int = 0, task: str = "multiclass", renders: int = 0, test_renders: int = 0) -> Path:
    """Write data/<name>/ (train.csv, train/, test/, sample_submission.csv) and the hidden solution, for one
    of TASKS: multiclass (the digit), binary (digit >= 5, a probability scored by AUC), ordinal (the digit's
    value, scored by QWK) or multilabel (which digits appear, on two digits side by side, mean F1).

    Deterministic for the same arguments. n > 0 keeps a stratified subset of n images (tiny test runs).
    renders > 0: the hard demo, each digit rendered that many times (hard_render: smaller, shifted, recoloured,
    on clutter of faint other digits, partly occluded, noisy), with a `group` column naming the digit, so that
    all renderings of one digit stay on one side of the train/test split and of every fold (group folds).
    test_renders: each test digit's renderings, if not `renders`: a larger leaderboard costs only inference.
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
    if renders:  # every rendering its own meaningless id; the digit's group id is as meaningless
        if task == "multilabel":
            raise KitError("the hard demo (renders > 0) renders single digits: use it with multiclass, binary or "
                           "ordinal")
        draw = np.random.default_rng(seed + 2)
        times = {"train": renders, "test": test_renders or renders}
        ids = iter(f"{i:06x}" for i in rng.choice(16**6, size=len(tr) * times["train"] + len(te) * times["test"],
                                                  replace=False))
        rows = {"train": [], "test": []}
        for sub, part in (("train", tr), ("test", te)):
            for i in part:
                for _ in range(times[sub]):
                    image_id = next(ids)
                    hard_render(images[i], size, draw, digits.images).save(root / sub / f"{image_id}.png")
                    rows[sub].append((image_id, labels[i], id_of[i]))
        train = pd.DataFrame(rows["train"], columns=["image_id", "label", "group"])
        write_csv(train.sample(frac=1, random_state=seed), root / "train.csv")  # renderings not side by side
        test = pd.DataFrame(rows["test"], columns=["image_id", "label", "group"])[["image_id", "label"]]
        test = test.sort_values("image_id")
    else:
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


def hard_render(image8: np.ndarray, size: int, rng: np.random.Generator, pool: np.ndarray) -> Image.Image:
    """An 8x8 digit (values 0..16) drawn hard to read on a size x size RGB canvas: a tinted, textured background
    with two faint other digits of `pool` as clutter; the digit at 45-70% of the side, anywhere, light or dark,
    in a random colour; a random patch over part of the canvas a third of the time; pixel noise."""
    canvas = rng.uniform(0.2, 0.6, 3) * np.ones((size, size, 3)) + rng.normal(0, 0.08, (size, size, 3))
    for _ in range(2):  # clutter: other digits, smaller and fainter
        side = int(rng.integers(size // 3, size // 2))
        y, x = rng.integers(0, size - side, 2)
        canvas[y:y + side, x:x + side] += scaled(pool[rng.integers(len(pool))], side)[..., None] * \
            rng.uniform(-0.2, 0.2, 3)
    side = int(rng.integers(int(size * 0.55), int(size * 0.8)))
    y, x = rng.integers(0, size - side, 2)
    canvas[y:y + side, x:x + side] += scaled(image8, side)[..., None] * rng.choice([-1, 1]) * rng.uniform(0.45, 0.8, 3)
    if rng.random() < 1 / 3:  # an occluding patch
        h, w = rng.integers(size // 6, size // 4, 2)
        py, px = rng.integers(0, size - h), rng.integers(0, size - w)
        canvas[py:py + h, px:px + w] = rng.uniform(0, 1, 3)
    canvas += rng.normal(0, rng.uniform(0.02, 0.08), canvas.shape)
    return Image.fromarray((np.clip(canvas, 0, 1) * 255).astype(np.uint8))


def gray(image8: np.ndarray, side: int) -> Image.Image:
    """An 8x8 image with values 0..16 -> a side x side 8-bit grayscale image (bicubic, as a scanner would blur)."""
    return Image.fromarray((image8 * (255 / 16)).astype(np.uint8), mode="L").resize((side, side), Image.BICUBIC)


def scaled(image8: np.ndarray, side: int) -> np.ndarray:
    """gray() as side x side floats in 0..1."""
    return np.asarray(gray(image8, side), dtype=np.float64) / 255


def to_png(image8: np.ndarray, size: int) -> Image.Image:
    """gray() as an RGB image: the plain demo's."""
    return gray(image8, size).convert("RGB")


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


def day_table(exps: list[str], metric: str, data_dir: str | Path = "data", runs_dir: str | Path = "runs",
              name: str = "demo", comp: str = "demo") -> pd.DataFrame:
    """The demo's closing table: per row the OOF, honest and leaderboard score (in `metric`) of each experiment
    alone without TTA and with the TTA chosen on its OOF, the blend the infer notebook wrote
    (submissions/<name>.csv), and stacking (a logistic regression on the experiments' log-probabilities), the
    cheap move beyond it.

    Each row is a blend of its own, written as `kit blend` writes one (its `submission` column names it):
    <exp>-none.csv, <exp>.csv, <name>-stack.csv, each with its blend.json. honest: what was chosen
    (TTA, weights, the meta-model) fitted on the other folds and scored on the held-out one."""
    rows = []
    for e in exps:
        rows.append(scored_row(f"{e}, no TTA", [e], f"{e}-none", metric, data_dir, runs_dir, comp, tta="none"))
        rows.append(scored_row(f"{e}, TTA chosen on OOF", [e], e, metric, data_dir, runs_dir, comp))
    path = resolve("submissions") / f"{name}.csv"
    blend = read_json(path.with_suffix(".blend.json"))
    method = blend["config"]["method"]
    weights = ", ".join(f"{x['experiment']} {x['weight']:.2f}" for x in blend["scores"])
    rows.append(table_row(f"blend ({BLEND_NAMES.get(method, method)}: {weights})", blend, path, metric, data_dir,
                          comp))
    rows.append(scored_row("stacking", exps, f"{name}-stack", metric, data_dir, runs_dir, comp, method="stack"))
    return pd.DataFrame(rows)


def scored_row(row: str, exps: list[str], out: str, metric: str, data_dir: str | Path = "data",
               runs_dir: str | Path = "runs", comp: str = "demo", **config) -> dict:
    """One row of day_table: the blend of `exps` with BlendConfig(metric, **config) written as
    submissions/<out>.csv and .blend.json, its OOF and honest score, and its leaderboard score."""
    from .blendconfig import BlendConfig
    from .infer import blend_and_submit

    done = blend_and_submit(comp, exps, BlendConfig(metric=metric, **config), name=out, data_dir=data_dir,
                            runs_dir=runs_dir)
    return table_row(row, done.blend, done.path, metric, data_dir, comp)


def table_row(row: str, blend: dict, path: Path, metric: str, data_dir: str | Path, comp: str) -> dict:
    """A row of day_table from a blend.json and its submission: TTA per experiment, OOF and honest score, the
    submission graded against the hidden labels."""
    return {"row": row, "tta": ", ".join(x["tta"] for x in blend["scores"]), "submission": path.name,
            f"oof_{metric}": blend["oof_score"], f"honest_{metric}": blend["honest_score"],
            f"leaderboard_{metric}": leaderboard_score(path, data_dir, comp, metric)}


def confident_rows(blend_json: str | Path, threshold: float, n_folds: int, comp: str = "demo",
                   data_dir: str | Path = "data") -> list[int]:
    """Per fold k, how many test images a pseudo-label student of fold k would add at `threshold`: counted by
    kit.teacher.pseudo_labels itself, the rule training applies."""
    from .competition import load_competition
    from .teacher import pseudo_labels

    test = load_competition(comp, data_dir).test
    classes = read_json(blend_json)["classes"]
    return [len(pseudo_labels(str(blend_json), test, classes, threshold, False, fold=k)[0]) for k in range(n_folds)]


def pseudo_pair(table: pd.DataFrame, honest: str) -> tuple[pd.Series, str]:
    """The pseudo-label move's teacher (the blend or stacking row with the best honest score) and student (the
    experiment whose TTA-chosen row has the best honest score): chosen on honest scores only, never on the
    in-sample OOF or the leaderboard."""
    teacher = best_row(table[table["row"].str.startswith(("blend", "stacking"))], honest)
    student = best_row(table[table["row"].str.endswith(", TTA chosen on OOF")], honest)["row"].split(",")[0]
    return teacher, student


def best_row(rows: pd.DataFrame, honest: str) -> pd.Series:
    """The row with the best honest score (higher is better: the demo's metrics are); ties: the first."""
    return rows.loc[rows[honest].idxmax()]


BLEND_NAMES = {"caruana": "Caruana", "slsqp": "SLSQP", "mean": "mean"}
