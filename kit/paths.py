"""Where things live: the project root, data, runs and submissions.

Notebooks run with their own folder as working directory (interactively and under the
runner), the CLI runs from wherever the user is; relative paths in parameters are resolved
against the project root so both see the same files.
"""

from __future__ import annotations

import os
from pathlib import Path


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


def exp_dir(runs_dir: str | Path, exp: str) -> Path:
    return resolve(runs_dir) / exp


def fold_dir(runs_dir: str | Path, exp: str, fold: int) -> Path:
    return exp_dir(runs_dir, exp) / f"fold{fold}"
