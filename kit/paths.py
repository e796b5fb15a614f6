"""Where things live: the project root, data, runs and submissions.

Notebooks run with their own folder as working directory (interactively and under the
runner), the CLI runs from wherever the user is; relative paths in parameters are resolved
against the project root so both see the same files.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from . import KitError


def project_root(start: str | Path | None = None) -> Path:
    """$KIT_ROOT, else the nearest ancestor of `start` (default: cwd) holding `notebooks/` and `data/`, else cwd."""
    if os.environ.get("KIT_ROOT"):
        return Path(os.environ["KIT_ROOT"]).resolve()
    here = Path(start or os.getcwd()).resolve()
    for d in (here, *here.parents):
        if (d / "notebooks").is_dir() and (d / "data").is_dir():
            return d
    return here


def resolve(path: str | Path, root: Path | None = None) -> Path:
    """An absolute path as is; a relative one against the project root."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else (root or project_root()) / path


def check_name(kind: str, value) -> str:
    """A name that becomes one folder (an experiment, a competition under data_dir): never a path.

    `../x` or `a/b` would read and write outside runs_dir (or outside a Kaggle bundle); a leading dot
    would hide it and '.'/'..' are not folders of their own.
    """
    bad = (not isinstance(value, str) or not value or value in (".", "..") or value.startswith(".")
           or any(sep and sep in value for sep in ("/", "\\", os.sep, os.altsep)) or not value.isprintable())
    if bad:
        raise KitError(f"{kind} name {value!r} is not a plain name: it becomes one folder, so it must be non-empty, "
                       "without '/' or '\\', not start with '.', and printable; e.g. 'b0-384px'")
    return value


def comp_name(comp) -> str:
    """A competition's name: its folder's (comp: a Competition, its root folder, or a name under data_dir).
    The runs of data/flowers and of /kaggle/input/flowers both live under runs/flowers/."""
    return Path(getattr(comp, "root", comp)).name


def comp_runs(runs_dir: str | Path, comp) -> Path:
    """runs/<comp>/: a competition's experiments and executed notebooks. Runs belong to a competition: two
    competitions with an experiment of the same name never share (or overwrite) a run folder."""
    return resolve(runs_dir) / check_name("competition", comp_name(comp))


def exp_dir(runs: str | Path, exp: str) -> Path:
    """runs/<comp>/<exp>/, of runs: a competition's runs folder (comp_runs)."""
    return resolve(runs) / check_name("experiment", exp)


def fold_dir(runs: str | Path, exp: str, fold: int) -> Path:
    """runs/<comp>/<exp>/fold<k>/, of runs: a competition's runs folder (comp_runs)."""
    return exp_dir(runs, exp) / f"fold{fold}"


NOTEBOOKS = "_notebooks"  # runs/<comp>/_notebooks/: the executed EDA and infer notebooks (no experiment: no fold<k>/)


def notebooks_dir(runs_dir: str | Path, comp) -> Path:
    return comp_runs(runs_dir, comp) / NOTEBOOKS


def check_writable(folder: str | Path, param: str) -> Path:
    """Create `folder` and write a probe file in it: a read-only or full disk is reported before any work
    starts, not as an OSError traceback half-way (os.access is not enough: root passes it on a read-only mount)."""
    folder = resolve(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise KitError(f"{param}={str(folder)!r} cannot be written ({e.strerror or e}); fix its permissions or "
                       f"free space there, or set {param} to a writable folder") from None
    return folder
