"""Reading a competition: the Kaggle layout (train.csv + image folders + sample_submission.csv)
or a class-per-folder tree (ImageFolder), from data/<comp>/ or /kaggle/input/<comp>/."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from . import KitError
from .paths import resolve

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")
ID_CANDIDATES = ("id", "image_id", "image", "image_name", "filename", "file_name", "file", "id_code", "name")
LABEL_CANDIDATES = ("label", "labels", "target", "class", "class_id", "category", "species", "diagnosis")
GROUP_CANDIDATES = ("group", "patient_id", "patient", "subject", "group_id")
TRAIN_DIRS = ("train", "train_images", "images")
TEST_DIRS = ("test", "test_images")
KAGGLE_INPUT = Path("/kaggle/input")


@dataclass
class Competition:
    root: Path
    train: pd.DataFrame  # columns: id, label, path (+ group)
    test: pd.DataFrame  # columns: id, path, in sample_submission order
    classes: list  # sorted label values; a class's index is its position here
    sample_submission: Path | None
    id_col: str  # the id column's name in the competition's own files
    label_col: str

    @property
    def targets(self):
        """Label indices of the train rows."""
        return self.train["label"].map({c: i for i, c in enumerate(self.classes)}).to_numpy()


def find_root(comp: str | Path, data_dir: str | Path = "data") -> Path:
    """`comp` as a path, else data_dir/<comp>, else /kaggle/input/<comp>."""
    tried = [Path(comp).expanduser(), resolve(data_dir) / str(comp), KAGGLE_INPUT / str(comp)]
    for cand in tried:
        if cand.is_dir():
            return cand.resolve()
    raise KitError(
        f"competition {comp!r} not found; looked in {[str(p) for p in tried]}. "
        "Put it in data/<comp>/ (train.csv, train/, test/, sample_submission.csv) or pass a path"
        + (" (for the demo, run `kit demo-data`)" if str(comp) == "demo" else "")
    )


def load_competition(comp: str | Path, data_dir: str | Path = "data", id_col: str = "", label_col: str = "",
                     group_col: str = "") -> Competition:
    root = find_root(comp, data_dir)
    if (root / "train.csv").is_file():
        return _load_kaggle(root, id_col, label_col, group_col)
    train_dir = _first_dir(root, TRAIN_DIRS) or root
    if _class_dirs(train_dir):
        return _load_imagefolder(root, train_dir)
    raise KitError(
        f"{root} has no train.csv and no class-per-folder tree; expected train.csv with an image folder "
        f"({'/, '.join(TRAIN_DIRS)}/) or train/<class>/<image> files"
    )


def load_test_competition(comp: str | Path, classes: list, data_dir: str | Path = "data") -> Competition:
    """Only the test set (sample_submission.csv + test images) and the classes a blend was fitted on:
    what a Kaggle code competition's inference notebook has."""
    root = find_root(comp, data_dir)
    sample = root / "sample_submission.csv"
    if not sample.is_file():
        raise KitError(f"{root} has no sample_submission.csv: the test ids and the submission's shape are unknown")
    id_col = pd.read_csv(sample, nrows=0).columns[0]
    empty = pd.DataFrame({"id": pd.Series(dtype=str), "label": pd.Series(dtype=object), "path": pd.Series(dtype=str)})
    return Competition(root, empty, _load_test(root, sample, id_col), list(classes), sample, id_col, "")


def _load_kaggle(root: Path, id_col: str, label_col: str, group_col: str) -> Competition:
    table = pd.read_csv(root / "train.csv", nrows=0)
    id_col = _pick_column(table, id_col, ID_CANDIDATES, "id", root / "train.csv", fallback=table.columns[0])
    table = pd.read_csv(root / "train.csv", dtype={id_col: str})  # ids keep leading zeros
    others = [c for c in table.columns if c != id_col]
    label_col = _pick_column(table, label_col, LABEL_CANDIDATES, "label", root / "train.csv",
                             fallback=others[0] if len(others) == 1 else None)
    group_col = group_col or next((c for c in GROUP_CANDIDATES if c in table.columns), "")
    if table[label_col].isna().any():
        rows = table.index[table[label_col].isna()].tolist()
        raise KitError(f"{root / 'train.csv'}: column {label_col!r} is empty in {len(rows)} row(s), "
                       f"first at row(s) {[r + 2 for r in rows[:5]]} (file line numbers); fill or drop them")
    multi = multilabel_example(table[label_col])
    if multi:
        raise KitError(f"{root / 'train.csv'}: column {label_col!r} looks multi-label (e.g. {multi!r}: each part is also "
                       "a label on its own); kit trains single-label classifiers: keep one label per image")
    dups = table[id_col][table[id_col].duplicated()]
    if len(dups):
        raise KitError(f"{root / 'train.csv'}: {len(dups)} duplicate id(s) in column {id_col!r}, "
                       f"e.g. {dups.astype(str).tolist()[:5]}; each image must appear once")

    train_dir = _first_dir(root, TRAIN_DIRS)
    if train_dir is None:
        raise KitError(f"{root} has train.csv but no image folder; expected one of {list(TRAIN_DIRS)}")
    train = pd.DataFrame({"id": table[id_col].astype(str), "label": table[label_col]})
    if group_col:
        train["group"] = table[group_col].to_numpy()
    train["path"] = resolve_images(train["id"], train_dir, root / "train.csv", id_col)

    sample = root / "sample_submission.csv"
    test = _load_test(root, sample, id_col)
    classes = sorted(train["label"].unique().tolist())
    return Competition(root, train, test, classes, sample if sample.is_file() else None, id_col, label_col)


def _load_test(root: Path, sample: Path, id_col: str) -> pd.DataFrame:
    test_dir = _first_dir(root, TEST_DIRS)
    if sample.is_file():
        ss = pd.read_csv(sample, dtype=str)
        sid = id_col if id_col in ss.columns else ss.columns[0]
        ids = ss[sid].astype(str)
        if test_dir is None:
            raise KitError(f"{sample} lists {len(ids)} test ids but {root} has no test folder "
                           f"({'/, '.join(TEST_DIRS)}/)")
        return pd.DataFrame({"id": ids, "path": resolve_images(ids, test_dir, sample, sid)})
    if test_dir is None:
        return pd.DataFrame({"id": pd.Series(dtype=str), "path": pd.Series(dtype=str)})
    files = sorted(p for p in test_dir.iterdir() if p.suffix.lower() in IMAGE_EXTS)
    return pd.DataFrame({"id": [p.stem for p in files], "path": [str(p) for p in files]})


def _load_imagefolder(root: Path, train_dir: Path) -> Competition:
    rows = [(p.stem, d.name, str(p)) for d in _class_dirs(train_dir) for p in sorted(d.iterdir())
            if p.suffix.lower() in IMAGE_EXTS]
    train = pd.DataFrame(rows, columns=["id", "label", "path"])
    dups = train["id"][train["id"].duplicated()]
    if len(dups):  # the same file name in two class folders: keep ids unique with the class prefix
        train["id"] = train["label"].astype(str) + "/" + train["id"]
    sample = root / "sample_submission.csv"
    test = _load_test(root, sample, "id")
    classes = sorted(train["label"].unique().tolist())
    return Competition(root, train, test, classes, sample if sample.is_file() else None, "id", "label")


def multilabel_example(labels: pd.Series) -> str:
    """A label like 'cat dog' or 'cat|dog' whose parts are all labels themselves; '' if there is none."""
    values = set(labels.astype(str))
    for sep in (" ", "|", ",", ";"):
        singles = {v for v in values if sep not in v}
        for v in values:
            parts = [p.strip() for p in v.split(sep) if p.strip()]
            if len(parts) > 1 and all(p in singles for p in parts):
                return v
    return ""


def resolve_images(ids: pd.Series, folder: Path, source: Path, id_col: str) -> list[str]:
    """Map ids to files in `folder`, with or without their extension; name every missing one."""
    by_name, by_stem = {}, {}
    for p in folder.rglob("*"):
        if p.suffix.lower() in IMAGE_EXTS and p.is_file():
            rel = p.relative_to(folder).as_posix()
            by_name[rel] = str(p)
            by_stem.setdefault(rel.rsplit(".", 1)[0], str(p))
    paths, missing = [], []
    for i in ids:
        p = by_name.get(i) or by_stem.get(i)
        paths.append(p)
        if p is None:
            missing.append(i)
    if missing:
        raise KitError(f"{len(missing)} id(s) in {source} (column {id_col!r}) have no image in {folder}, "
                       f"e.g. {missing[:5]}; tried the id as a file name and with {list(IMAGE_EXTS)}")
    return paths


def _pick_column(table: pd.DataFrame, given: str, candidates, what: str, source: Path, fallback=None) -> str:
    cols = list(table.columns)
    if given:
        if given not in cols:
            raise KitError(f"{source} has no column {given!r}; columns are {cols}; pass {what}_col=")
        return given
    lower = {str(c).lower(): c for c in cols}
    for cand in candidates:
        if cand in lower:
            return lower[cand]
    if fallback is not None:
        return fallback
    raise KitError(f"{source}: cannot tell which column is the {what}; columns are {cols}; pass {what}_col=")


def _first_dir(root: Path, names) -> Path | None:
    return next((root / n for n in names if (root / n).is_dir()), None)


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")
                  and d.name not in TEST_DIRS and any(p.suffix.lower() in IMAGE_EXTS for p in d.iterdir()))
