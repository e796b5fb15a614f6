"""The run folder runs/<comp>/<exp>/fold<k>/: every file a fold's run (and the runner, and infer) writes there, by
name, and what each one promises. No other module spells these names.

    best.pt          the best epoch's weights (checkpoint()); top-<epoch>.pt the next best (save_top)
    last.pt          the training state at the last epoch boundary: what a resume continues
    history.csv      one row per epoch
    config.json      every parameter and what was resolved from them, rewritten at every start
    oof-<tta>.csv    the fold's validation predictions with one TTA preset (tta='auto': every preset)
    oof.csv          written last: its presence marks the fold complete
    test_<tta>.csv   infer's cached test predictions of best.pt
    train_fold.ipynb, run.log, job.json, .lock: the runner's executed notebook, live log, result and lock

Every OOF row and cached test prediction records the hash of the best.pt that made it, so a file an
earlier run of the fold left behind is never taken for this run's.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from . import KitError, __version__
from .config import training_changes
from .folds import folds_hash, folds_path, read_folds
from .io import load_torch, read_json, save_torch, write_csv, write_json
from .tta import NAMES as TTA_NAMES

FULL = "full"  # runs/<comp>/<exp>/full/: the experiment's full-data model (no fold, no OOF)
CHECKPOINT = "best.pt"
LAST = "last.pt"
HISTORY = "history.csv"
CONFIG = "config.json"
OOF = "oof.csv"
NOTEBOOK = "train_fold.ipynb"
RUN_LOG = "run.log"
JOB = "job.json"
LOCK = ".lock"
IMAGE_CACHE = ".image_cache"  # under runs_dir: hidden, so it is never taken for an experiment
TOP = re.compile(r"top-\d+\.pt")
# OOF columns that are not classes; `checkpoint` is the hash of the best.pt that made the row
RESERVED = ("id", "fold", "target", "tta", "folds_hash", "checkpoint")
def resume_afresh(folder: Path) -> str:
    return f"rerun with resume=False ({retrain_command(folder)}) to start this fold afresh"


def oof_name(tta: str | None) -> str:
    """The fold's OOF file (None), or the one made with a TTA preset (tta='auto' runs write one per preset)."""
    return OOF if tta is None else f"oof-{tta}.csv"


def cache_name(tta: str) -> str:
    """infer's cached test predictions with a TTA preset. (Not test_name: pytest would collect it as a test
    wherever a test module imports it.)"""
    return f"test_{tta}.csv"


def top_name(epoch: int) -> str:
    return f"top-{epoch:03d}.pt"


def retrain_command(folder: Path) -> str:
    """The command that trains this fold folder (runs/<comp>/<exp>/fold<k>, or full/) afresh."""
    if folder.name == FULL:
        return f"kit fit-full --comp {folder.parent.parent.name} --exp {folder.parent.name} --force"
    return (f"kit run-folds --comp {folder.parent.parent.name} --exp {folder.parent.name} --folds "
            f"{fold_number(folder)} --force")


def fold_number(folder: Path) -> str:
    return folder.name.removeprefix("fold")


# ---- complete, stale, a fresh start

def full_dir(exp_path: Path) -> Path:
    return exp_path / FULL


def full_complete(folder: Path, epochs: int) -> bool:
    """A full-data run is done when its history reaches `epochs` and its best.pt (the last epoch's) exists."""
    try:
        return (folder / CHECKPOINT).is_file() and int(pd.read_csv(folder / HISTORY)["epoch"].max()) >= epochs
    except (OSError, ValueError, KeyError, pd.errors.EmptyDataError):
        return False


def is_complete(folder: Path) -> bool:
    """A fold is done when its OOF file exists: it is written last."""
    return all((folder / f).is_file() for f in (CHECKPOINT, HISTORY, CONFIG, OOF))


def stale_reason(folder: Path) -> str:
    """Why a complete fold folder must not be mixed into this run: other folds or another kit version."""
    cfg = read_config(folder)
    if cfg.get("kit_version") != __version__:
        return f"made by kit {cfg.get('kit_version')}, this is kit {__version__}"
    path = folds_path(cfg["competition"], cfg["runs_dir"])  # the recorded root: no need to rescan its images
    now = folds_hash(read_folds(path))
    if cfg.get("folds_hash") != now:
        return f"made on other folds (hash {cfg.get('folds_hash')}, {path} now has {now})"
    return ""


def check_competition(folder: Path, competition: str, fhash: str) -> None:
    """Refuse a run folder (a fold's, or an experiment's with fold<k>/ in it) holding runs of another competition:
    one recorded at another root folder and made on other folds (`fhash`, which hashes ids and labels). Two
    competitions with one folder name (data/flowers and /kaggle/input/flowers) share runs/<name>/, and a fresh
    start would remove the other's files; the same competition moved (same folds) is no clash."""
    configs = [folder / CONFIG] if folder.name.startswith("fold") or folder.name == FULL else \
        sorted(folder.glob(f"fold*/{CONFIG}"))
    for path in configs:
        if not path.is_file():
            continue
        try:
            theirs = read_json(path)
        except KitError:  # a torn config.json: the fold's own checks say so
            continue
        if theirs.get("competition", competition) != competition and theirs.get("folds_hash") != fhash:
            raise KitError(f"{path.parent} holds a run of another competition, {theirs['competition']} (folds "
                           f"{theirs.get('folds_hash')}), not of {competition} (folds {fhash}): both are named "
                           f"{Path(competition).name!r}. Set runs_dir to another folder for one of them or rename one "
                           "competition's folder; nothing was written")


def remove_stale_temps(folder: Path) -> None:
    """A kill between write and rename leaves .<name>.<random>.tmp files: never complete, safe to drop."""
    for tmp in folder.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


def run_outputs(folder: Path) -> list[Path]:
    """The files a fold's run writes in its folder (and infer's cached test predictions of its checkpoint);
    by their exact names: the folder may hold the user's own files too."""
    names = {CHECKPOINT, LAST, HISTORY, OOF, *(oof_name(t) for t in TTA_NAMES), *(cache_name(t) for t in TTA_NAMES)}
    return [p for p in folder.glob("*") if p.name in names or TOP.fullmatch(p.name)]


def remove_run_outputs(folder: Path) -> None:
    """A fold that starts afresh: what an older run wrote would pass for this run's (a checkpoint of another
    model, OOF of a TTA this run does not make, infer's test predictions of the old best checkpoint)."""
    for p in run_outputs(folder):
        p.unlink()


# ---- config.json and history.csv

def write_config(folder: Path, config: dict) -> None:
    write_json(config, folder / CONFIG)


def read_config(folder: Path) -> dict:
    return read_json(folder / CONFIG)


def write_history(folder: Path, rows: list[dict]) -> None:
    write_csv(pd.DataFrame(rows), folder / HISTORY)


# ---- checkpoints

def checkpoint(model, meta: dict, epoch: int, value: float) -> dict:
    """What best.pt and top-<epoch>.pt hold; weights_only-safe: tensors, strings and numbers only."""
    return {"model": model.state_dict(), "classes": meta["classes"], "timm_name": meta["timm_name"],
            "img_size": meta["img_size_resolved"], "epoch": epoch, "score": value}


def keep_top(folder: Path, top: list, value: float, epoch: int, n: int, make) -> list:
    """Keep the best n checkpoints: best.pt the best, the others top-<epoch>.pt. top: [(score, epoch)] of the
    kept ones, best first; returns it with this epoch ranked in (it heads the list if it is the new best).
    make() builds the checkpoint, only when it is kept."""
    ranked = sorted(top + [(value, epoch)], key=lambda t: -t[0])
    if (value, epoch) not in ranked[:n]:
        return top
    ckpt = make()
    new_best = ranked[0] == (value, epoch)
    if new_best and top:  # the old best moves aside if it stays in the top n
        old = folder / CHECKPOINT
        if n > 1 and old.is_file():
            os.replace(old, folder / top_name(top[0][1]))
    save_torch(ckpt, folder / (CHECKPOINT if new_best else top_name(epoch)))
    for _, e in ranked[n:]:
        (folder / top_name(e)).unlink(missing_ok=True)
    return ranked[:n]


def load_top(folder: Path, epoch: int, map_location="cpu") -> dict:
    """top-<epoch>.pt (a checkpoint kept by save_top beside best.pt)."""
    return load_torch(folder / top_name(epoch), f"retrain the fold: {retrain_command(folder)}",
                      map_location=map_location)


def save_checkpoint(folder: Path, ckpt: dict) -> None:
    """best.pt replaced (atomically) by `ckpt` (see checkpoint())."""
    save_torch(ckpt, folder / CHECKPOINT)


def keep_best_aside(folder: Path, epoch: int) -> None:
    """best.pt copied to top-<epoch>.pt (atomically), before best.pt is replaced by an average of checkpoints."""
    save_torch(load_best(folder), folder / top_name(epoch))


def load_best(folder: Path, map_location="cpu") -> dict:
    """best.pt (see checkpoint()); a torn file is a KitError that says how to retrain the fold."""
    return load_torch(folder / CHECKPOINT, f"retrain the fold: {retrain_command(folder)}", map_location=map_location)


# the run a last.pt belongs to, besides its training parameters: a resume must match all of them
LAST_IDENTITY = ("folds_hash", "timm_name", "kit_version")


def save_last(folder: Path, state: dict, meta: dict, config: dict) -> None:
    """last.pt: the training state (TrainState.state_dict()), the run's identity and its parameters (config.json
    is rewritten by every start, so the parameters these weights were trained with are kept here)."""
    save_torch({**state, **{k: meta[k] for k in LAST_IDENTITY}, "config": config}, folder / LAST)


def read_last(folder: Path, config: dict, meta: dict) -> dict | None:
    """last.pt if there is one and this run may continue it (same folds, model, kit version and training
    parameters); None if there is none. Read before the run writes anything: a refused resume leaves the
    folder as it was."""
    path = folder / LAST
    if not path.is_file():
        return None
    last = load_torch(path, f"delete it, or {resume_afresh(folder)}", map_location="cpu")
    for key in LAST_IDENTITY:
        if last.get(key) != meta[key]:
            raise KitError(f"{path} was made with {key}={last.get(key)!r}, this run has {meta[key]!r}; "
                           f"{resume_afresh(folder)}")
    changed = training_changes(last.get("config", {}), config)
    if changed:
        listing = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
        raise KitError(f"{path} was trained with other parameters ({listing}); resuming would mix two runs. "
                       f"Rerun with the old values to continue it, or with resume=False ({retrain_command(folder)}) "
                       "to start this fold afresh with the new ones")
    return last


def checkpoint_hash(path: str | Path) -> str:
    """sha256 of a checkpoint file, first 16 hex digits: what OOF rows and cached test predictions record."""
    st = os.stat(path)
    return _file_hash(str(path), st.st_mtime_ns, st.st_size, st.st_ino)


@functools.lru_cache(maxsize=256)
def _file_hash(path: str, mtime_ns: int, size: int, inode: int) -> str:
    """The stat in the key: a rewritten (atomically replaced: new inode) file is hashed again; one blend
    reads each checkpoint's hash several times (OOF, every TTA, test) and hashing a B7 takes ~0.3 s."""
    h = hashlib.sha256()
    with open(path, "rb") as f:  # in blocks: a checkpoint can be larger than the memory to spare
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def fold_checkpoint(folder: Path) -> str:
    """The hash of a fold's best.pt, once the fold may be used at all: its checkpoint is there (predictions
    cached without it belong to nothing that can be checked) and this kit version trained it."""
    where = f"experiment {folder.parent.name!r} {folder.name}"
    fix = f"retrain it: {retrain_command(folder)}"
    for f in (folder / CHECKPOINT, folder / CONFIG):
        if not f.is_file():
            raise KitError(f"{where}: {f} is missing, so its predictions (OOF, cached test) cannot be tied to a "
                           f"checkpoint; {fix}")
    version = read_config(folder).get("kit_version")
    if version != __version__:
        raise KitError(f"{where} was trained by kit {version} ({folder / CONFIG} kit_version), this is kit "
                       f"{__version__}; its checkpoint and files may not mean the same here: {fix}, or blend with "
                       f"kit {version}")
    return checkpoint_hash(folder / CHECKPOINT)


# ---- OOF files

def oof_frame(ids, fold: int, targets, probs: np.ndarray, classes: list[str], tta: str, fhash: str,
              checkpoint: str) -> pd.DataFrame:
    """checkpoint: checkpoint_hash of the best.pt that predicted these rows."""
    df = pd.DataFrame(probs, columns=classes)
    df.insert(0, "id", np.asarray(ids))
    df.insert(1, "fold", fold)
    df.insert(2, "target", np.asarray(targets))
    df["tta"] = tta
    df["folds_hash"] = fhash
    df["checkpoint"] = checkpoint
    return df


def encode_targets(y: np.ndarray) -> np.ndarray:
    """The OOF `target` cells: class indices, or for a multi-label (N, K) matrix each row's classes as
    '[0 3]' (never read back as a number, '[]' for none)."""
    y = np.asarray(y)
    if y.ndim == 1:
        return y
    return np.array(["[" + " ".join(map(str, np.flatnonzero(row))) + "]" for row in y], dtype=object)


def oof_targets(oof: pd.DataFrame, n_classes: int) -> np.ndarray:
    """encode_targets undone: 1-D class indices, or the (N, K) 0/1 matrix of a multi-label OOF."""
    cells = oof["target"]
    if not cells.astype(str).str.startswith("[").all():
        return cells.to_numpy()
    out = np.zeros((len(cells), n_classes), dtype=np.int64)
    for i, cell in enumerate(cells.astype(str)):
        out[i, [int(k) for k in cell.strip("[]").split()]] = 1
    return out


def write_oofs(folder: Path, oofs: dict[str, pd.DataFrame], main: str) -> None:
    """One OOF file per TTA, then oof.csv (the `main` TTA's frame) last: its presence marks the fold complete."""
    for tta, frame in oofs.items():
        write_csv(frame, folder / oof_name(tta))
    write_csv(oofs[main], folder / OOF)


def made_by(path: Path) -> str | None:
    """The one checkpoint hash an OOF file records; None if it is missing, records none or several."""
    if not path.is_file():
        return None
    recorded = pd.read_csv(path, usecols=lambda c: c == "checkpoint", dtype=str, keep_default_na=False)
    hashes = set(recorded["checkpoint"]) if "checkpoint" in recorded else set()
    return hashes.pop() if len(hashes) == 1 else None


def check_folds_done(exp_path: Path, name: str, n_folds: int) -> None:
    """Every fold 0..n_folds-1 of the experiment has the OOF file `name`."""
    done = {int(fold_number(f.parent)) for f in exp_path.glob(f"fold*/{name}")}
    if done != set(range(n_folds)):
        raise KitError(f"experiment {exp_path.name!r} ({exp_path}) has {name} for folds {sorted(done)} but folds.csv "
                       f"has {n_folds}; run the missing folds {sorted(set(range(n_folds)) - done)} first")


def read_oof(folder: Path, tta: str | None, checkpoint: str) -> pd.DataFrame:
    """A fold's OOF file (oof_name(tta)), refused unless every row was made by `checkpoint` (the hash of the
    fold's current best.pt): one an earlier run of the fold left behind."""
    f = folder / oof_name(tta)
    part = pd.read_csv(f, dtype={"id": str, "checkpoint": str}, keep_default_na=False)
    recorded = set(part["checkpoint"]) if "checkpoint" in part else set()
    if recorded != {checkpoint}:
        raise KitError(f"{f} was made by checkpoint {sorted(recorded) or 'none recorded (an older kit)'}, but "
                       f"{folder / CHECKPOINT} is now {checkpoint}: it is left from an earlier run of "
                       f"fold {fold_number(folder)}. Delete it, or retrain the fold: {retrain_command(folder)}")
    return part


# ---- cached test predictions

def read_test_cache(folder: Path, tta: str, ids: list, checkpoint: str) -> np.ndarray | None:
    """infer's cached test predictions of the fold with `tta`, if they are of these ids and made by `checkpoint`
    (the hash of the fold's current best.pt); None otherwise."""
    cache = folder / cache_name(tta)
    if not cache.is_file():
        return None
    cached = pd.read_csv(cache, dtype={"id": str, "checkpoint": str}, keep_default_na=False)
    if cached["id"].tolist() == list(ids) and "checkpoint" in cached and set(cached["checkpoint"]) == {checkpoint}:
        return cached.drop(columns=["id", "checkpoint"]).to_numpy(float)
    return None


def write_test_cache(folder: Path, tta: str, ids, probs: np.ndarray, classes: list[str], checkpoint: str) -> None:
    """Columns id, the classes, checkpoint; nothing where the folder is read-only (/kaggle/input)."""
    if os.access(folder, os.W_OK):
        write_csv(pd.DataFrame(probs, columns=classes).assign(id=np.asarray(ids), checkpoint=checkpoint)
                  [["id", *classes, "checkpoint"]], folder / cache_name(tta))
