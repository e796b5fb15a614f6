"""Kaggle offline packaging: the kit's wheel, the wheels a Kaggle image may lack, the blend's checkpoints
and blend.json in one folder to upload as a dataset; its notebook installs from it with --no-index --no-deps
(kit.deps), and with a competition named, the metadata the `kaggle` command uploads it with (kit.publish)."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import jupytext
import nbformat
from packaging.utils import canonicalize_name

from . import KitError, __version__
from .blendconfig import BlendConfig, blend_runs
from .deps import KAGGLE_MAY_LACK
from .io import read_json, write_json
from .notebook import parameters_cell
from .paths import exp_dir, fold_dir, resolve
from .publish import DATASET_META, KERNEL_META, NOTEBOOK, check_comp, write_metadata
from .rundir import CHECKPOINT, CONFIG, FULL, full_dir

SOURCE = Path(__file__).resolve().parents[1]  # the kit checkout: pyproject.toml and notebooks/


MARKER = ".kit-bundle"  # written first into every bundle folder: the only folders package ever empties
# what it writes there, and so may replace
BUNDLE = ("blend.json", NOTEBOOK, "runs", "wheels", DATASET_META, KERNEL_META)


def package_for_kaggle(blend_json: str | Path, out: str | Path, runs_dir: str | Path = "runs",
                       extra: tuple[str, ...] = KAGGLE_MAY_LACK, wheels_from: str | Path | None = None,
                       comp: str = "", kaggle_user: str = "") -> Path:
    """Write the bundle: wheels/, runs/<comp>/<exp>/fold<k>/{best.pt,config.json}, blend.json, kaggle_infer.ipynb, and
    with `comp` (the competition's name on Kaggle) the notebook reading /kaggle/input/<comp> plus the dataset's
    and kernel's metadata for the `kaggle` command (ids under `kaggle_user`).

    Every input is checked before anything is written. `out` must be new, empty, or an earlier bundle
    (it holds the .kit-bundle marker); then only the bundle's own entries are replaced, nothing else in it.
    wheels_from: a folder that already holds the extra wheels (else pip downloads them, pinned to the
    versions installed here).
    """
    if comp:
        check_comp(comp)
    spec, files = bundle_inputs(blend_json, runs_dir)
    out = resolve(out).resolve()  # real path: `--out .` or a symlink must compare equal to what it names
    claim_output(out, [resolve(blend_json), *files.values(), *([Path(wheels_from)] if wheels_from else [])])
    for name in BUNDLE:  # an earlier bundle's entries, and only those
        old = out / name
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old)
        elif old.exists() or old.is_symlink():
            old.unlink()
    for rel, src in files.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, out / rel)
    write_json(spec, out / "blend.json")
    build_wheels(out / "wheels", extra, wheels_from)
    write_notebook(out / NOTEBOOK, comp)
    if comp:
        write_metadata(out, comp, kaggle_user)
    return out


def bundle_inputs(blend_json: str | Path, runs_dir: str | Path) -> tuple[dict, dict[str, Path]]:
    """The blend spec and {path in the bundle: source file} for every fold it uses; KitError naming the
    first missing or malformed input."""
    path = resolve(blend_json)
    if not path.is_file():
        raise KitError(f"{path} does not exist; `kit blend` writes submissions/<name>.blend.json beside the submission")
    try:
        spec = read_json(path)
        used = [e for e in spec["experiments"] if e["weight"] > 0]  # only what the blend uses
        parts = [(e["name"], k) for e in used for k in range(int(e["n_folds"]))]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise KitError(f"{path} is not a blend made by `kit blend` or the infer notebook ({type(e).__name__}: "
                       f"{e}); pass --blend-json submissions/<name>.blend.json") from None
    config = BlendConfig.from_blend(spec, str(path))  # the notebook applies it with its config: a bad one is refused
    runs = blend_runs(spec, runs_dir)  # runs/<comp>/ of the competition it was fitted on
    files = {}
    wanted = ([(exp, k) for exp, k in parts] if config.models != "full" else []) + \
        ([(e["name"], FULL) for e in used] if config.models != "folds" else [])
    for exp, k in wanted:
        src = full_dir(exp_dir(runs, exp)) if k == FULL else fold_dir(runs, exp, k)  # names checked there
        for f in (CHECKPOINT, CONFIG):
            if not (src / f).is_file():
                raise KitError(f"{src / f} is missing: the blend needs every fold of {exp!r}; train it with "
                               f"`kit run-folds --exp {exp}` or blend without it")
            files[f"runs/{runs.name}/{exp}/{src.name}/{f}"] = src / f
    return spec, files


def claim_output(out: Path, inputs: list[Path]) -> None:
    """Make `out` a bundle folder, or refuse: it must not exist, be empty, or carry the marker of an earlier
    bundle; it must not hold the inputs (replacing its runs/ would delete them before they are copied)."""
    if out.exists() and not out.is_dir():
        raise KitError(f"--out {out} is a file; give a folder for the bundle")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise KitError(f"--out {out} already holds files and is not a kit bundle (no {MARKER} in it); nothing was "
                       f"written or deleted. Give a new or empty folder, e.g. --out kaggle_bundle")
    for p in (p.resolve() for p in inputs):
        if out == p or out in p.parents:
            raise KitError(f"--out {out} holds an input of the bundle ({p}); give another folder")
    out.mkdir(parents=True, exist_ok=True)
    write_json({"kit_version": __version__, "written_by": "kit package"}, out / MARKER)


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
            found = sorted(Path(wheels_from).glob(f"{canonicalize_name(name).replace('-', '_')}-*.whl"))
            if not found:
                raise KitError(f"no wheel for {name!r} in {wheels_from}")
            shutil.copy2(found[-1], dest)
        return
    fetch_wheels(dest, extra)


def fetch_wheels(dest: Path, names: tuple[str, ...]) -> None:
    """A wheel of each package in the version installed here: downloaded, or built from its sdist where the index
    has no wheel of that version (grad-cam)."""
    pins = []
    for n in names:
        try:
            pins.append(f"{n}=={version(n)}")
        except PackageNotFoundError:
            raise KitError(f"--extra {n} is not installed here; the bundle holds the version installed where you "
                           f"package: pip install {n}, or leave it out") from None
    run([sys.executable, "-m", "pip", "-q", "wheel", "--no-deps", "-w", str(dest), *pins],
        f"get wheels for {list(names)}")


def run(cmd: list[str], what: str) -> None:
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode:
        raise KitError(f"could not {what}: {' '.join(cmd)}\n{res.stderr[-2000:]}")


TEMPLATE = SOURCE / "notebooks" / "kaggle_infer.py"  # the bundle's notebook, written as it is


def write_notebook(path: Path, comp: str = "") -> None:
    """The Kaggle template notebook as .ipynb: it installs the bundle's wheels the image lacks and applies its
    blend.json with infer.blend_and_submit, as `kit blend --blend-json` does. `comp` becomes the default of the
    parameters cell's `comp` (not a papermill injected cell: a papermill run with other parameters replaces that)."""
    if not TEMPLATE.is_file():
        raise KitError(f"the Kaggle template notebook {TEMPLATE} is missing; package from the kit repository")
    nb = jupytext.read(TEMPLATE)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    if comp:
        cell = parameters_cell(nb)
        cell.source = with_default(cell.source, "comp", comp)
    nbformat.write(nb, path)


def with_default(source: str, name: str, value: str) -> str:
    """`source` with the value assigned to `name` replaced by the literal `value`, found by its place in the syntax
    tree: the rest of the line (its comment) stays."""
    node = next(n for n in ast.parse(source).body if isinstance(n, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == name for t in n.targets))
    lines = source.splitlines(keepends=True)
    v = node.value
    if v.lineno != v.end_lineno:
        raise KitError(f"the template's {name} default spans lines; keep it on one")
    line = lines[v.lineno - 1].encode()  # the offsets count UTF-8 bytes
    lines[v.lineno - 1] = (line[:v.col_offset] + json.dumps(value).encode() + line[v.end_col_offset:]).decode()
    return "".join(lines)
