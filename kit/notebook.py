"""Headless notebooks: a py:percent notebook converted with jupytext, its `parameters` cell read and checked
(plain values only, each of its default's type), then run by papermill on an explicit kernel of the current
interpreter, the executed notebook kept. kit.runner runs one per fold; `kit notebook` runs one."""

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
from pathlib import Path
from typing import Iterator

import jupytext
import nbformat

from . import KitError
from .io import write_json
from .paths import project_root, resolve


def kernel_name() -> str:
    """A kernelspec that runs THIS interpreter (not whatever 'python3' means on the machine), started through
    kit.lifetime so that the kernel dies with the process that started it."""
    argv = [sys.executable, "-m", "kit.lifetime", "ipykernel_launcher", "-f", "{connection_file}"]
    # named after its command: a kit of another version in this interpreter keeps its own spec
    name = "kit-" + hashlib.sha256(json.dumps(argv).encode()).hexdigest()[:8]
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kit" / "jupyter"
    spec = base / "kernels" / name / "kernel.json"
    want = {"argv": argv, "display_name": f"kit ({sys.executable})", "language": "python"}
    try:
        current = json.loads(spec.read_text())
    except (OSError, ValueError):
        current = None
    if current != want:  # missing, or written by an older kit
        write_json(want, spec)
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


def check_parameters(nb: nbformat.NotebookNode, params: dict, source: str | Path) -> dict:
    """The parameters as the notebook will get them, checked against its parameters cell: known names,
    plain values (check_plain), and the type of each default where it has one ("5" -> 5 for an int)."""
    known = notebook_parameters(nb)
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise KitError(f"parameter(s) {unknown} are not in the parameters cell of {source}; "
                       f"it defines {sorted(known)}")
    for name, value in params.items():
        check_plain(name, value, source)
    return {name: as_default_type(name, value, known[name], source) for name, value in params.items()}


PLAIN = (str, int, float, bool, type(None))


def check_plain(name: str, value, source: str | Path) -> None:
    """JSON's types only, all the way down. Papermill writes parameters into the notebook as source code:
    the JSON types as literals, anything else (bytes, sets, dates, YAML-tagged objects) through str(),
    which a crafted value turns into code that runs."""
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise KitError(f"parameter {name} from {source} has the key {k!r} ({type(k).__name__}); "
                               "dictionary keys must be strings")
            check_plain(f"{name}[{k!r}]", v, source)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            check_plain(f"{name}[{i}]", v, source)
    elif not isinstance(value, PLAIN):
        raise KitError(f"parameter {name} from {source} is a {type(value).__name__} ({repr(value)[:60]}); "
                       "parameters are plain values only: str, int, float, bool, list, dict or null. In YAML "
                       "quote it for a string (2024-01-01 is read as a date) and use no !! tags")


TRUE, FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def as_default_type(name: str, value, default, source: str | Path):
    """`value` as the type of the parameters cell's default; a default of None (or an expression) takes any."""
    want = type(default)
    if default is None or want not in (str, int, float, bool, list, dict):
        return value
    if want is bool and isinstance(value, str) and value.lower() in TRUE + FALSE:
        return value.lower() in TRUE
    if want is int and isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
        return int(value)
    if want is float and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, want) and (want is bool or not isinstance(value, bool)):
        return value
    hint = (f"quote it (YAML reads no/yes/on/off as booleans and 007 as 7): {name}: '...' in a params file; "
            f"-p {name}=... keeps the text as written") if want is str else "give " + {
        int: "a whole number", float: "a number", bool: "true or false", list: "a list, e.g. [a, b]",
        dict: "a mapping, e.g. {a: 1}"}[want]
    raise KitError(f"parameter {name}={value!r} from {source} should be {want.__name__} (its default in the "
                   f"parameters cell is {default!r}), not {type(value).__name__}; {hint}")


@contextmanager
def environ(**env: str) -> Iterator[None]:
    """These variables for the block, the old values back after it: a kernel inherits the environment of the
    process that starts it, and one process (a Ray worker, a test) may run several notebooks."""
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


KERNEL_START_ERRORS = (RuntimeError, TimeoutError, OSError)  # dead kernel, "address already in use", timeouts


def run_notebook(notebook: str | Path, output: str | Path, params: dict | None = None, log: bool = True,
                 retries: int = 3) -> Path:
    """Execute one notebook headlessly; KitError with the failing cell's error on failure.

    A kernel that fails to start (port races when notebooks start together) is retried with backoff.
    """
    import papermill as pm

    src = resolve(notebook)
    nb = load_notebook(src)
    params = check_parameters(nb, params or {}, src)
    kernel = kernel_name()
    nb.metadata["kernelspec"] = {"name": kernel, "display_name": kernel, "language": "python"}
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    logging.getLogger("papermill").setLevel(logging.INFO if log else logging.WARNING)
    with environ(KIT_ROOT=str(project_root()), PYTHONUNBUFFERED="1"):
        for attempt in range(retries):
            try:
                pm.execute_notebook(nb, str(output), parameters=params, kernel_name=kernel, cwd=str(src.parent),
                                    log_output=log, progress_bar=False, language="python")
                return output
            except pm.PapermillExecutionError as e:
                raise KitError(f"{src.name} failed in cell {e.exec_count}: {e.ename}: {e.evalue}\n"
                               f"{tail(e.traceback)}\nexecuted notebook: {output}") from None
            except KERNEL_START_ERRORS as e:
                if attempt == retries - 1:
                    raise KitError(f"the kernel for {src.name} did not start after {retries} tries: "
                                   f"{type(e).__name__}: {e}") from None
                time.sleep(2 ** attempt)
    return output


def check_kernel(timeout: float = 60) -> None:
    """Start and stop the kernel once, so a broken one is reported before any fold starts."""
    from jupyter_client.manager import start_new_kernel

    try:
        km, kc = start_new_kernel(kernel_name=kernel_name(), startup_timeout=timeout)
    except Exception as e:  # noqa: BLE001 - any failure here means no fold could run
        raise KitError(f"the notebook kernel ({sys.executable} -m ipykernel) cannot start: "
                       f"{type(e).__name__}: {e}; install ipykernel in this environment") from None
    kc.stop_channels()
    km.shutdown_kernel(now=True)


def tail(traceback: list[str], lines: int = 8) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(traceback))
    return "\n".join(text.strip().splitlines()[-lines:])
