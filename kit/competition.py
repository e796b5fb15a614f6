"""Reading a competition: the Kaggle layout (train.csv + image folders + sample_submission.csv)
or a class-per-folder tree (ImageFolder), from data/<comp>/ or /kaggle/input/<comp>/.

Ids and labels are text, as the files spell them: '03' stays '03', 'None' and 'NA' are names, not
missing values; surrounding spaces are stripped ('cat ' and 'cat' are one class) and counted."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
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
OTHER_SEPARATORS = (";", "\t", "|")  # what a one-column header holds when the file is not comma-separated
SAMPLE_NEEDS = "an id column and the target column(s)"
TASKS = ("auto", "multiclass", "binary", "multilabel", "ordinal", "regression")
ORDINAL_TASKS = ("ordinal", "regression")  # integer grades, trained and decided alike
ORDINAL_METRICS = ("qwk",)  # a numeric grade scored by one of these is an ordinal task
LIST_SEPARATORS = (" ", "|", ",", ";")  # what joins the labels of a multi-label cell ('cloudy primary')


@dataclass
class Competition:
    root: Path
    train: pd.DataFrame  # columns: id, label, path (+ group); ids and labels are str
    test: pd.DataFrame  # columns: id, path, in sample_submission order
    classes: list  # sorted label strings (integers in numeric order); a class's index is its position here
    sample_submission: Path | None
    id_col: str  # the id column's name in the competition's own files
    label_col: str
    stripped: dict = field(default_factory=dict)  # (file, column) -> how many values lost surrounding spaces
    task: str = "multiclass"  # multiclass, binary, multilabel, ordinal or regression (see detect_task)
    label_matrix: np.ndarray | None = None  # multilabel: (N, K) 0/1, column k is classes[k]

    @property
    def targets(self) -> np.ndarray:
        """Label indices of the train rows, or their (N, K) 0/1 matrix for a multi-label task."""
        if self.task == "multilabel":
            return self.label_matrix
        return self.train["label"].map({c: i for i, c in enumerate(self.classes)}).to_numpy()


def find_root(comp: str | Path, data_dir: str | Path = "data") -> Path:
    """`comp` as a path, else data_dir/<comp>, else /kaggle/input/<comp>."""
    if not Path(comp).expanduser().is_absolute() and ".." in Path(comp).parts:  # a name must not climb out
        raise KitError(f"competition {str(comp)!r} climbs out of {data_dir} with '..'; give its folder name under "
                       "data_dir or its absolute path")
    tried = [Path(comp).expanduser(), resolve(data_dir) / str(comp), KAGGLE_INPUT / str(comp)]
    for cand in tried:
        if cand.is_dir():
            # absolute, '..' folded, symlinks kept: data/flowers -> /mnt/big/flowers-2024 is still 'flowers',
            # the name its runs live under (runs/<comp>/, kit.paths.comp_name) whichever way it is named
            return Path(os.path.abspath(cand))
    raise KitError(
        f"competition {comp!r} not found; looked in {[str(p) for p in tried]}. "
        "Put it in data/<comp>/ (train.csv, train/, test/, sample_submission.csv) or pass a path"
        + (" (for the demo, run `kit demo-data`)" if str(comp) == "demo" else "")
    )


def load_competition(comp: str | Path, data_dir: str | Path = "data", id_col: str = "", label_col: str = "",
                     group_col: str = "", task: str = "auto", metric: str = "") -> Competition:
    """task='auto' detects it (detect_task; metric tells an ordinal grade from classes); any other value of
    TASKS overrides the detection."""
    if task not in TASKS:
        raise KitError(f"task={task!r}; use one of {list(TASKS)}")
    root = find_root(comp, data_dir)
    if (root / "train.csv").is_file():
        return _load_kaggle(root, id_col, label_col, group_col, task, metric)
    train_dir = _first_dir(root, TRAIN_DIRS) or root
    classes = _class_dirs(train_dir)
    if classes:
        return _load_imagefolder(root, train_dir, classes)
    raise KitError(
        f"{root} has no train.csv and no class-per-folder tree; expected train.csv with an image folder "
        f"({'/, '.join(TRAIN_DIRS)}/) or train/<class>/<image> files"
    )


def load_test_competition(comp: str | Path, classes: list, data_dir: str | Path = "data",
                          task: str = "multiclass") -> Competition:
    """Only the test set (sample_submission.csv + test images) and the classes a blend was fitted on:
    what a Kaggle code competition's inference notebook has."""
    root = find_root(comp, data_dir)
    sample = root / "sample_submission.csv"
    if not sample.is_file():
        raise KitError(f"{root} has no sample_submission.csv: the test ids and the submission's shape are unknown")
    id_col = read_table(sample, SAMPLE_NEEDS).columns[0]
    empty = pd.DataFrame({"id": pd.Series(dtype=str), "label": pd.Series(dtype=str), "path": pd.Series(dtype=str)})
    stripped = {}
    test = _load_test(root, sample, id_col, stripped)
    return Competition(root, empty, test, [str(c) for c in classes], sample, id_col, "", stripped, task)


def read_table(path: Path, needs: str = "an id column and a label column") -> pd.DataFrame:
    """A competition CSV with every cell as the file spells it: str, no NA conversion ('03', 'None', 'NA' and
    '' stay themselves). Empty, header-only and not comma-separated files are refused with the fix."""
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[])
    except pd.errors.EmptyDataError:
        raise KitError(f"{path} is empty; it needs a header row ({needs}) and one row per image") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise KitError(f"{path} is not a readable CSV ({e}); save it as comma-separated UTF-8 text") from None
    if len(table.columns) == 1:
        # a header 'id;label' read as one column: name the separator rather than blame the column names
        # (csv.Sniffer guesses from the data rows too and is often wrong on two-column files)
        header = str(table.columns[0])
        sep = next((s for s in OTHER_SEPARATORS if s in header), None)
        if sep:
            raise KitError(f"{path} is separated by {sep!r} (header {header!r}), kit reads comma-separated files; "
                           f"rewrite it with commas, e.g. pd.read_csv(path, sep={sep!r}).to_csv(path, index=False)")
        raise KitError(f"{path} has a single column {header!r}; it needs {needs}")
    if table.empty:
        raise KitError(f"{path} has a header ({list(table.columns)}) but no rows; it needs one row per image")
    return table


def _strip(values: pd.Series, file: str, stripped: dict) -> pd.Series:
    """Surrounding spaces removed ('digit 3 ' is 'digit 3'), counted in stripped[(file, column)] for the EDA."""
    out = values.str.strip()
    n = int((out != values).sum())
    if n:
        stripped[(file, values.name)] = n
    return out


def _load_kaggle(root: Path, id_col: str, label_col: str, group_col: str, task: str = "auto",
                 metric: str = "") -> Competition:
    source = root / "train.csv"
    table = read_table(source)
    id_col = _pick_column(table, id_col, ID_CANDIDATES, "id", source, fallback=table.columns[0])
    group_col = (_pick_column(table, group_col, (), "group", source) if group_col
                 else next((c for c in GROUP_CANDIDATES if c in table.columns), ""))
    sample = root / "sample_submission.csv"
    columns = [] if label_col else class_columns(table, sample, [id_col, group_col])
    if columns and task in ("auto", "multilabel"):
        return _load_columns(root, table, source, id_col, columns, group_col)
    others = [c for c in table.columns if c != id_col]
    label_col = _pick_column(table, label_col, LABEL_CANDIDATES, "label", source,
                             fallback=others[0] if len(others) == 1 else None)
    stripped = {}
    for col in dict.fromkeys([id_col, label_col, group_col] if group_col else [id_col, label_col]):
        table[col] = _strip(table[col], "train.csv", stripped)  # 'P1 ' and 'P1' are one patient too
        if col in (id_col, label_col) and (table[col] == "").any():
            rows = table.index[table[col] == ""].tolist()
            raise KitError(f"{source}: column {col!r} is empty in {len(rows)} row(s), "
                           f"first at row(s) {[r + 2 for r in rows[:5]]} (file line numbers); fill or drop them")
    task = detect_task(table[label_col], metric) if task == "auto" else task
    if task in ORDINAL_TASKS:
        _check_grades(table[label_col], source, label_col, task)
    train = _train_table(root, table, source, id_col, table[label_col], group_col)
    test = _load_test(root, sample, id_col, stripped)
    sample = sample if sample.is_file() else None
    if task == "multilabel":
        sep = list_separator(train["label"])
        parts = train["label"].map(lambda v: [p.strip() for p in v.split(sep) if p.strip()])
        classes = sort_classes([p for ps in parts for p in ps])
        matrix = label_matrix(parts, classes)
        return Competition(root, train, test, classes, sample, id_col, label_col, stripped, task, matrix)
    classes = sort_classes(train["label"])
    if task == "binary" and len(classes) != 2:
        raise KitError(f"task='binary' but {source} column {label_col!r} has {len(classes)} classes "
                       f"({classes[:10]}); use task='multiclass' (or 'auto')")
    return Competition(root, train, test, classes, sample, id_col, label_col, stripped, task)


def _train_table(root: Path, table: pd.DataFrame, source: Path, id_col: str, labels: pd.Series,
                 group_col: str) -> pd.DataFrame:
    """id, label, path (+ group): ids unique, every image found."""
    dups = table[id_col][table[id_col].duplicated()]
    if len(dups):
        raise KitError(f"{source}: {len(dups)} duplicate id(s) in column {id_col!r}, "
                       f"e.g. {dups.tolist()[:5]}; each image must appear once")
    train_dir = _first_dir(root, TRAIN_DIRS)
    if train_dir is None:
        raise KitError(f"{root} has train.csv but no image folder; expected one of {list(TRAIN_DIRS)}")
    train = pd.DataFrame({"id": table[id_col], "label": labels.to_numpy()})
    if group_col:
        train["group"] = table[group_col].to_numpy()
    train["path"] = resolve_images(train["id"], train_dir, source, id_col)
    return train


def _load_columns(root: Path, table: pd.DataFrame, source: Path, id_col: str, columns: list[str],
                  group_col: str) -> Competition:
    """Multi-label as one 0/1 column per class (RANZCR, Plant Pathology 2021): the label of a row is its
    classes joined by spaces, for folds.csv and the EDA; the matrix is what trains."""
    stripped = {}
    for col in dict.fromkeys([id_col, group_col] if group_col else [id_col]):
        table[col] = _strip(table[col], "train.csv", stripped)
    matrix = table[columns].astype(str).apply(lambda c: c.str.strip()).astype(float).astype(int).to_numpy()
    labels = pd.Series([" ".join(c for c, on in zip(columns, row) if on) for row in matrix])
    train = _train_table(root, table, source, id_col, labels, group_col)
    sample = root / "sample_submission.csv"
    test = _load_test(root, sample, id_col, stripped)
    return Competition(root, train, test, list(columns), sample if sample.is_file() else None, id_col, "",
                       stripped, "multilabel", matrix)


def class_columns(table: pd.DataFrame, sample: Path, skip: list[str]) -> list[str]:
    """train.csv's 0/1 columns that are the classes of a multi-label task: the sample's target columns when
    train.csv has them all as 0/1, else (no label column by name) every other column when all are 0/1."""
    def binary(c):
        return table[c].astype(str).str.strip().isin(["0", "1", "0.0", "1.0"]).all()
    if sample.is_file():
        targets = list(read_table(sample, SAMPLE_NEEDS).columns[1:])
        if len(targets) > 1 and all(c in table.columns and binary(c) for c in targets):
            return targets
    if any(c.lower() in LABEL_CANDIDATES for c in table.columns):
        return []
    rest = [c for c in table.columns if c not in skip]
    return rest if len(rest) > 1 and all(binary(c) for c in rest) else []


def detect_task(labels: pd.Series, metric: str = "") -> str:
    """A label list -> multilabel; integer grades scored by an ordinal metric (qwk) -> ordinal; two classes ->
    binary; else multiclass."""
    if multilabel_example(labels):
        return "multilabel"
    grades = labels.astype(str).str.fullmatch(r"[+-]?[0-9]+").all()
    if grades and metric in ORDINAL_METRICS and labels.nunique() > 2:
        return "ordinal"
    return "binary" if labels.nunique() == 2 else "multiclass"


def _check_grades(labels: pd.Series, source: Path, label_col: str, task: str) -> None:
    bad = labels[~labels.astype(str).str.fullmatch(r"[+-]?[0-9]+")]
    if len(bad):
        raise KitError(f"task={task!r} needs integer grades in {source} column {label_col!r}, but "
                       f"{len(bad)} are not, e.g. {bad.tolist()[:5]}; use task='multiclass'")


def list_separator(labels: pd.Series) -> str:
    """What joins a multi-label cell's labels: the first of LIST_SEPARATORS any cell holds (' ' if none)."""
    values = labels.astype(str)
    return next((s for s in LIST_SEPARATORS if values.str.contains(s, regex=False).any()), " ")


def label_matrix(parts: pd.Series, classes: list[str]) -> np.ndarray:
    """(N, K) 0/1: row i has a 1 in column k when classes[k] is among parts[i]."""
    index = {c: k for k, c in enumerate(classes)}
    out = np.zeros((len(parts), len(classes)), dtype=np.int64)
    for i, ps in enumerate(parts):
        out[i, [index[p] for p in ps]] = 1
    return out


def _load_test(root: Path, sample: Path, id_col: str, stripped: dict) -> pd.DataFrame:
    test_dir = _first_dir(root, TEST_DIRS)
    if sample.is_file():
        ss = read_table(sample, SAMPLE_NEEDS)
        sid = id_col if id_col in ss.columns else ss.columns[0]
        ids = _strip(ss[sid], "sample_submission.csv", stripped)
        if test_dir is None:
            raise KitError(f"{sample} lists {len(ids)} test ids but {root} has no test folder "
                           f"({'/, '.join(TEST_DIRS)}/)")
        return pd.DataFrame({"id": ids, "path": resolve_images(ids, test_dir, sample, sid)})
    if test_dir is None:
        return pd.DataFrame({"id": pd.Series(dtype=str), "path": pd.Series(dtype=str)})
    files = sorted(p for p in test_dir.iterdir() if p.suffix.lower() in IMAGE_EXTS and p.is_file())
    ids, paths = [p.stem for p in files], [str(p) for p in files]
    _refuse_shared_ids(ids, paths, f"{test_dir} (no sample_submission.csv: the file names are the ids)")
    return pd.DataFrame({"id": ids, "path": paths})


def _load_imagefolder(root: Path, train_dir: Path, classes: dict[Path, list[Path]]) -> Competition:
    # like torchvision's ImageFolder: every image under a class folder, symlinked folders followed;
    # the id is the file's path under its class folder without the extension
    rows = [(p.relative_to(d).with_suffix("").as_posix(), d.name, str(p)) for d, files in classes.items()
            for p in files]
    train = pd.DataFrame(rows, columns=["id", "label", "path"])
    _refuse_shared_ids((train["label"] + "/" + train["id"]).tolist(), train["path"].tolist(), str(train_dir))
    if train["id"].duplicated().any():  # the same file name in two class folders: keep ids unique with the class
        train["id"] = train["label"] + "/" + train["id"]
    sample = root / "sample_submission.csv"
    stripped = {}
    test = _load_test(root, sample, "id", stripped)
    return Competition(root, train, test, sort_classes(train["label"]), sample if sample.is_file() else None,
                       "id", "label", stripped)


def sort_classes(labels) -> list[str]:
    """The class order (a class's index is its position): integer labels in numeric order ('2' before '10', as
    a person reads them), anything else in text order. Labels stay the strings train.csv spells."""
    names = sorted(set(labels))
    if all(re.fullmatch(r"[+-]?[0-9]+", s) for s in names):
        return sorted(names, key=lambda s: (int(s), s))  # '3' and '03' are two classes: keep both, in a fixed order
    return names


def multilabel_example(labels: pd.Series) -> str:
    """A label like 'cat dog' or 'cat|dog' whose parts are all labels themselves, or that is one of many
    combinations of fewer parts (Planet's 'clear primary', where 'primary' never stands alone); '' if none."""
    values = set(labels.astype(str))
    for sep in LIST_SEPARATORS:
        singles = {v for v in values if sep not in v}
        split = {v: [p.strip() for p in v.split(sep) if p.strip()] for v in values}
        lists = [v for v, parts in split.items() if len(parts) > 1]
        distinct = {p for parts in split.values() for p in parts}
        for v in lists:
            if all(p in singles for p in split[v]):
                return v
        if lists and len(values) >= 4 and len(distinct) < len(values) / 2:
            return lists[0]
    return ""


def image_files(folder: Path) -> list[Path]:
    """Every image file under `folder`, sorted, following symlinked folders (datasets assembled from links
    are common on Kaggle; Path.rglob does not follow them before Python 3.13). Each real folder is read once,
    so a link loop ends; hidden folders (.ipynb_checkpoints) are skipped."""
    seen, out = set(), []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        out += [Path(dirpath, f) for f in filenames if Path(f).suffix.lower() in IMAGE_EXTS]
    return sorted(p for p in out if p.is_file())


def resolve_images(ids: pd.Series, folder: Path, source: Path, id_col: str) -> list[str]:
    """Map ids to files in `folder`, with or without their extension; name every missing one, and refuse an id
    that two files answer to (x.png and x.jpg): which one is the image is the user's call, not ours."""
    by_name, by_stem = {}, {}
    for p in image_files(folder):
        rel = p.relative_to(folder).as_posix()
        by_name[rel] = str(p)
        by_stem.setdefault(rel.rsplit(".", 1)[0], []).append(str(p))
    paths, missing, ambiguous = [], [], []
    for i in ids:
        hits = [by_name[i]] if i in by_name else by_stem.get(i, [])
        paths.append(hits[0] if hits else None)
        if not hits:
            missing.append(i)
        elif len(hits) > 1:
            ambiguous.append(hits)
    if missing:
        raise KitError(f"{len(missing)} id(s) in {source} (column {id_col!r}) have no image in {folder}, "
                       f"e.g. {missing[:5]}; tried the id as a file name and with {list(IMAGE_EXTS)}")
    if ambiguous:
        raise KitError(f"{len(ambiguous)} id(s) in {source} (column {id_col!r}) match more than one image, e.g. "
                       f"{ambiguous[0]}; keep one file per id (delete or rename the other) or write the id with "
                       "its extension")
    return paths


def _refuse_shared_ids(ids: list[str], paths: list[str], where: str) -> None:
    """Two image files that would get one id (cat/0.png and cat/0.jpg) are refused, both named."""
    first = {}
    for i, p in zip(ids, paths):
        if i in first:
            raise KitError(f"{first[i]} and {p} in {where} would both be image id {i!r}; keep one file per id "
                           "(delete or rename the other)")
        first[i] = p


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


def _class_dirs(folder: Path) -> dict[Path, list[Path]]:
    """Each class folder (a subfolder holding images at any depth) with its image files, in name order."""
    dirs = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".") and d.name not in TEST_DIRS)
    return {d: files for d in dirs if (files := image_files(d))}
