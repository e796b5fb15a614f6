"""Atomic file writes: a kill at any moment leaves the old file or the new one, never half of one.

A full disk or a read-only folder met while writing, and a truncated file met while reading, are
KitErrors naming the file and the fix instead of OSError/RuntimeError tracebacks.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import re
import shutil
import tempfile
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Iterator

import pandas as pd

from . import KitError

FREE_SPACE = ("free space on that disk (old runs/<comp>/<exp> folders, runs/.image_cache) or set runs_dir (or the "
              "command's output folder) to a folder on a bigger disk")
WRITABLE = "set runs_dir (or the command's output folder) to a folder you can write, or fix this one's permissions"
# errno met while writing -> (what it means, the fix)
DISK_ERRORS = {
    errno.ENOSPC: ("the disk is full", FREE_SPACE),
    errno.EDQUOT: ("the disk quota is used up", FREE_SPACE),
    errno.EROFS: ("the file system is read-only", WRITABLE),
    errno.EACCES: ("permission denied", WRITABLE),
    errno.EPERM: ("operation not permitted", WRITABLE),
}
# how torch's C++ writer reports a failed write when it is given a path (save_torch gives it a Python file)
TORCH_WRITE_FAILED = re.compile(r"iostream error|unexpected pos|PytorchStreamWriter failed|file write failed")


def free_space(path: Path) -> str:
    """'0.3 GB free' on the disk of `path` (its nearest existing folder), '' when that cannot be known."""
    folder = next((p for p in (path, *path.parents) if p.exists()), None)
    try:
        return f"{shutil.disk_usage(folder).free / 1e9:.1f} GB free there" if folder else ""
    except OSError:
        return ""


@contextmanager
def disk_errors(path: Path) -> Iterator[None]:
    """A full disk or a read-only folder met while writing `path`: a KitError with the path and the fix."""
    try:
        yield
    except OSError as e:
        if e.errno not in DISK_ERRORS:
            raise
        meaning, fix = DISK_ERRORS[e.errno]
        room = f"; {free_space(path)}" if e.errno in (errno.ENOSPC, errno.EDQUOT) else ""
        raise KitError(f"cannot write {path}: {meaning} ([Errno {e.errno}] {e.strerror}{room}). Fix: {fix}") from None


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    with disk_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would hide runs from the other users of a shared folder
        os.close(fd)
        tmp = Path(tmp)
        try:
            yield tmp
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            with suppress(OSError):  # a folder turned read-only: the error worth reporting is the one above
                tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_csv(df: pd.DataFrame, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return Path(path)


def write_json(obj, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    return Path(path)


def save_torch(obj, path: str | Path) -> Path:
    import torch

    path = Path(path)
    with atomic_path(path) as tmp:
        try:
            # a Python file, not the path: torch's C++ stream reports a full disk as an errno-less RuntimeError
            # ("unexpected pos 704 vs 598", "basic_ios::clear: iostream error"); Python's as OSError(ENOSPC)
            with open(tmp, "wb") as f:
                torch.save(obj, f)
        except RuntimeError as e:
            if not TORCH_WRITE_FAILED.search(str(e)):
                raise
            raise KitError(f"cannot write {path}: torch.save failed ({str(e)[:200]}), which is a full disk as a rule "
                           f"({free_space(path) or 'free space unknown'}). Fix: {FREE_SPACE}") from None
    return path


def read_json(path: str | Path) -> dict:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError: a torn or foreign file
        raise KitError(f"{path} is truncated or not JSON ({e}). Fix: delete it and rerun the command that wrote it "
                       "(kit run-folds --force for a fold's files)") from None


def load_torch(path: str | Path, fix: str = "delete it and rerun the command that wrote it", **kwargs):
    """torch.load(path, weights_only=True, **kwargs); a truncated or corrupt file is a KitError naming it and `fix`."""
    import torch

    try:
        return torch.load(path, weights_only=True, **kwargs)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as e:
        torn = (isinstance(e, (EOFError, pickle.UnpicklingError))  # cut inside the pickle, or not a checkpoint
                or (isinstance(e, OSError) and e.errno == errno.EINVAL)  # cut inside a tensor record
                or (isinstance(e, RuntimeError) and "PytorchStreamReader failed" in str(e)))  # cut zip directory
        if not torn:  # a missing file, no permission, a CUDA map_location without CUDA: not this file's fault
            raise
        detail = str(e).strip().splitlines()[0][:120] if str(e).strip() else ""
        raise KitError(f"{path} cannot be loaded: truncated, corrupt or not a weights-only torch checkpoint "
                       f"({type(e).__name__}{': ' + detail if detail else ''}). Fix: {fix}") from None
