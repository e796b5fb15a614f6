"""Kaggle offline packaging: the kit's wheel, the wheels a Kaggle image lacks, the blend's checkpoints
and blend.json in one folder to upload as a dataset; its notebook installs from it with --no-index."""

from __future__ import annotations

import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import jupytext
import nbformat

from . import KitError
from .io import read_json, write_json
from .paths import resolve
from .runner import parameters_cell
from .train import CHECKPOINT, CONFIG

SOURCE = Path(__file__).resolve().parents[1]  # the kit checkout: pyproject.toml and notebooks/

# Kaggle's image ships torch, timm, albumentations, scikit-learn, pandas and papermill; not these.
MISSING_ON_KAGGLE = ("ttach",)

INSTALL = '''# Internet off: install the kit and what the Kaggle image lacks from this bundle, nothing from an index.
import subprocess, sys
subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--find-links", f"{{bundle}}/wheels",
                "kit", *{extra}], check=True)
runs_dir = runs_dir or f"{{bundle}}/runs"
blend_json = blend_json or f"{{bundle}}/blend.json"'''


def package_for_kaggle(blend_json: str | Path, out: str | Path, runs_dir: str | Path = "runs",
                       extra: tuple[str, ...] = MISSING_ON_KAGGLE, wheels_from: str | Path | None = None) -> Path:
    """Write the bundle: wheels/, runs/<exp>/fold<k>/{best.pt,config.json}, blend.json, kaggle_infer.ipynb.

    wheels_from: a folder that already holds the extra wheels (else pip downloads them, pinned to the
    versions installed here).
    """
    spec = read_json(blend_json)
    out = resolve(out)
    if out.exists():
        shutil.rmtree(out)
    for e in (e for e in spec["experiments"] if e["weight"] > 0):  # only what the blend uses
        for k in range(e["n_folds"]):
            src = resolve(runs_dir) / e["name"] / f"fold{k}"
            if not (src / CHECKPOINT).is_file():
                raise KitError(f"{src / CHECKPOINT} is missing: the blend needs every fold of {e['name']!r}")
            dst = out / "runs" / e["name"] / f"fold{k}"
            dst.mkdir(parents=True)
            for f in (CHECKPOINT, CONFIG):
                shutil.copy2(src / f, dst / f)
    write_json(spec, out / "blend.json")
    build_wheels(out / "wheels", extra, wheels_from)
    write_notebook(out / "kaggle_infer.ipynb", extra)
    return out


def build_wheels(dest: Path, extra: tuple[str, ...], wheels_from: str | Path | None) -> None:
    dest.mkdir(parents=True)
    pip = [sys.executable, "-m", "pip", "-q"]
    if not (SOURCE / "pyproject.toml").is_file():
        raise KitError(f"kit is not installed from a checkout ({SOURCE}); package from the kit repository")
    run(pip + ["wheel", "--no-deps", "--no-build-isolation", "-w", str(dest), str(SOURCE)], "build the kit wheel")
    if not extra:
        return
    if wheels_from:
        for name in extra:
            found = sorted(Path(wheels_from).glob(f"{name.replace('-', '_')}-*.whl"))
            if not found:
                raise KitError(f"no wheel for {name!r} in {wheels_from}")
            shutil.copy2(found[-1], dest)
        return
    run(pip + ["download", "--no-deps", "--only-binary", ":all:", "-d", str(dest),
               *[f"{n}=={version(n)}" for n in extra]], f"download wheels for {list(extra)}")


def run(cmd: list[str], what: str) -> None:
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode:
        raise KitError(f"could not {what}: {' '.join(cmd)}\n{res.stderr[-2000:]}")


def write_notebook(path: Path, extra: tuple[str, ...]) -> None:
    """The infer notebook, set to apply blend.json, with an install-from-bundle cell after its parameters."""
    nb = jupytext.read(SOURCE / "notebooks" / "infer_ensemble.py")
    params = parameters_cell(nb)
    for old, new in (('runs_dir = "runs"', 'runs_dir = ""'), ('out_dir = "submissions"', 'out_dir = "."')):
        if old not in params.source:
            raise KitError(f"the infer notebook's parameters cell no longer has {old!r}")
        params.source = params.source.replace(old, new)
    params.source += '\nbundle = "/kaggle/input/kit-bundle"  # where this dataset is mounted'
    at = nb.cells.index(params) + 1
    nb.cells.insert(at, nbformat.v4.new_code_cell(INSTALL.format(extra=list(extra))))
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
