"""Headless notebook runs: the py:percent notebook converted with jupytext, run by papermill on an
explicit kernel of the current interpreter, parameters injected, the executed notebook kept."""

from __future__ import annotations

import ast
import hashlib
import json
import logging
import os
import re
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import jupytext
import nbformat
import pandas as pd

from . import KitError
from .paths import fold_dir, project_root, resolve


@dataclass
class JobResult:
    name: str
    status: str  # done, skipped, failed
    seconds: float
    notebook: str
    error: str = ""


def kernel_name() -> str:
    """A kernelspec that runs THIS interpreter (not whatever 'python3' means on the machine)."""
    tag = hashlib.sha256(sys.executable.encode()).hexdigest()[:8]
    name = f"kit-{tag}"
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kit" / "jupyter"
    spec = base / "kernels" / name / "kernel.json"
    if not spec.is_file():
        spec.parent.mkdir(parents=True, exist_ok=True)
        spec.write_text(json.dumps({"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                                    "display_name": f"kit ({sys.executable})", "language": "python"}))
    paths = os.environ.get("JUPYTER_PATH", "").split(os.pathsep)
    if str(base) not in paths:
        os.environ["JUPYTER_PATH"] = os.pathsep.join([str(base), *filter(None, paths)])
    return name


def load_notebook(path: str | Path) -> nbformat.NotebookNode:
    """A py:percent (or .ipynb) notebook that has a cell tagged `parameters`."""
    path = resolve(path)
    if not path.is_file():
        raise KitError(f"notebook {path} does not exist")
    nb = jupytext.read(path)
    if parameters_cell(nb) is None:
        raise KitError(f"{path} has no cell tagged 'parameters'; papermill would ignore every parameter. "
                       'Tag the cell: `# %% tags=["parameters"]`')
    return nb


def parameters_cell(nb: nbformat.NotebookNode):
    return next((c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])), None)


def notebook_parameters(nb: nbformat.NotebookNode) -> dict:
    """Names and default values assigned in the parameters cell."""
    tree = ast.parse(parameters_cell(nb).source)
    out = {}
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                if isinstance(t, ast.Name):
                    try:
                        out[t.id] = ast.literal_eval(node.value)
                    except ValueError:
                        out[t.id] = None
    return out


def check_parameters(nb: nbformat.NotebookNode, params: dict, source: str | Path) -> None:
    known = notebook_parameters(nb)
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise KitError(f"parameter(s) {unknown} are not in the parameters cell of {source}; "
                       f"it defines {sorted(known)}")


@contextmanager
def environ(**env: str) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_notebook(notebook: str | Path, output: str | Path, params: dict | None = None, log: bool = True) -> Path:
    """Execute one notebook headlessly; KitError with the failing cell's error on failure."""
    import papermill as pm

    src = resolve(notebook)
    nb = load_notebook(src)
    params = params or {}
    check_parameters(nb, params, src)
    kernel = kernel_name()
    nb.metadata["kernelspec"] = {"name": kernel, "display_name": kernel, "language": "python"}
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    logging.getLogger("papermill").setLevel(logging.INFO if log else logging.WARNING)
    with environ(KIT_ROOT=str(project_root()), PYTHONUNBUFFERED="1"):
        try:
            pm.execute_notebook(nb, str(output), parameters=params, kernel_name=kernel, cwd=str(src.parent),
                                log_output=log, progress_bar=False, language="python")
        except pm.PapermillExecutionError as e:
            raise KitError(f"{src.name} failed in cell {e.exec_count}: {e.ename}: {e.evalue}\n"
                           f"{tail(e.traceback)}\nexecuted notebook: {output}") from None
    return output


def tail(traceback: list[str], lines: int = 8) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(traceback))
    return "\n".join(text.strip().splitlines()[-lines:])


def run_folds(exp: str, folds: list[int], params: dict | None = None, notebook: str | Path = "notebooks/train_fold.py",
              runs_dir: str = "runs", force: bool = False, log: bool = True) -> pd.DataFrame:
    """One papermill job per fold; finished folds are skipped unless force; a failure does not stop the others."""
    from .train import is_complete

    params = dict(params or {})
    nb = load_notebook(notebook)  # fail before any fold starts
    check_parameters(nb, {**params, "exp": exp, "fold": 0, "runs_dir": runs_dir}, notebook)
    results = []
    for k in folds:
        d = fold_dir(runs_dir, exp, k)
        out = d / "train_fold.ipynb"
        if is_complete(d) and not force:
            results.append(JobResult(f"{exp}/fold{k}", "skipped", 0.0, str(out)))
            continue
        if force:  # afresh: no resuming from an earlier attempt's last.pt
            (d / "last.pt").unlink(missing_ok=True)
        t0 = time.time()
        try:
            run_notebook(notebook, out, {**params, "exp": exp, "fold": k, "runs_dir": runs_dir}, log)
            results.append(JobResult(f"{exp}/fold{k}", "done", time.time() - t0, str(out)))
        except KitError as e:
            results.append(JobResult(f"{exp}/fold{k}", "failed", time.time() - t0, str(out), str(e)))
    return pd.DataFrame([r.__dict__ for r in results])
