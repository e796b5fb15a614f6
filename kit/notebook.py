"""Headless notebooks: a py:percent notebook converted with jupytext, its `parameters` cell read and checked
(plain values only, each of its default's type), then run by papermill on an explicit kernel of the current
interpreter, the executed notebook kept. kit.runner runs one per fold; `kit notebook` runs one."""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import logging
import os
import re
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import jupytext
import nbformat

from . import KitError
from .io import write_json
from .paths import project_root, resolve


# What every kernel kit starts gets, whatever the shell that started kit has: figures drawn by the inline backend,
# so the executed notebook keeps them (`make demo` exports MPLBACKEND=Agg, which ipykernel honours, and a kernel on
# Agg keeps none), and progress as one log line per epoch (kit.device.headless): no one watches a bar in a log file
# or an executed notebook. The notebooks also say `%matplotlib inline` themselves, for Jupyter and plain papermill.
KERNEL_ENV = {"MPLBACKEND": "module://matplotlib_inline.backend_inline", "KIT_HEADLESS": "1"}


def kernel_name() -> str:
    """A kernelspec that runs THIS interpreter (not whatever 'python3' means on the machine), started through
    kit.lifetime so that the kernel dies with the process that started it, with KERNEL_ENV."""
    argv = [sys.executable, "-m", "kit.lifetime", "ipykernel_launcher", "-f", "{connection_file}"]
    # named after its command: a kit of another version in this interpreter keeps its own spec
    name = "kit-" + hashlib.sha256(json.dumps(argv).encode()).hexdigest()[:8]
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kit" / "jupyter"
    spec = base / "kernels" / name / "kernel.json"
    want = {"argv": argv, "display_name": f"kit ({sys.executable})", "language": "python", "env": KERNEL_ENV}
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


@contextmanager
def kernel_config() -> Iterator:
    """How kit talks to its kernels: over Unix sockets in a private (0700) temporary folder where the OS has them,
    a folder per kernel (jupyter's own IPC default is a name relative to the working directory, shared by every
    kernel started there). Over TCP, jupyter's default, any local user can subscribe to a kernel's output port and
    read it in plain text (ipykernel warns "Kernel is running over TCP without encryption" at every start), and
    kernels that start together can race for a port. pyzmq has no IPC on Windows: TCP there."""
    from traitlets.config import Config

    quiet = {"NotebookClient": {"kernel_manager_class": kernel_manager_class()}}  # papermill's kernels too
    if os.name != "posix":
        yield Config(quiet)
        return
    with tempfile.TemporaryDirectory(prefix="kit-kernel-") as folder:
        yield Config({"KernelManager": {"transport": "ipc", "ip": os.path.join(folder, "k")}, **quiet})


@functools.cache
def kernel_manager_class() -> type:
    """jupyter_client's KernelManager without the interrupt (SIGINT) it sends before every shutdown: an ipykernel
    busy with a message when it arrives logs "[IPKernelApp] ERROR | KeyboardInterrupt caught in kernel." into the
    user's terminal (one in a `make demo` of 12 notebooks), though nothing went wrong. A kernel kit shuts down
    has finished its notebook: there is nothing to interrupt, and kit's shutdowns kill it anyway (now=True) or
    ask it to stop. Any other interrupt (a user's) is sent as before."""
    from jupyter_client.manager import KernelManager
    from jupyter_client.utils import run_sync

    class QuietShutdownKernelManager(KernelManager):
        # jupyter_client's own `shutting_down` stays set after a restart: a flag of ours, set only while a
        # shutdown runs, lets a later user interrupt through
        _kit_shutdown = False

        async def _async_shutdown_kernel(self, now: bool = False, restart: bool = False) -> None:
            self._kit_shutdown = True
            try:
                await super()._async_shutdown_kernel(now=now, restart=restart)
            finally:
                self._kit_shutdown = False

        async def _async_interrupt_kernel(self) -> None:
            if not self._kit_shutdown:
                await super()._async_interrupt_kernel()

        shutdown_kernel = run_sync(_async_shutdown_kernel)  # the base class binds its own coroutine

    return QuietShutdownKernelManager


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
                 retries: int = 3, km=None) -> Path:
    """Execute one notebook headlessly; KitError with the failing cell's error on failure.

    A kernel that fails to start (port races when notebooks start together) is retried with backoff.
    km: a kernel already started for it (started_kernel); a retry starts a fresh one.
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
                with kernel_config() as config:
                    pm.execute_notebook(nb, str(output), parameters=params, kernel_name=kernel, cwd=str(src.parent),
                                        log_output=log, progress_bar=False, language="python", config=config,
                                        **({"km": km} if km is not None else {}))
                return output
            except pm.PapermillExecutionError as e:
                raise KitError(f"{src.name} failed in cell {e.exec_count}: {e.ename}: {e.evalue}\n"
                               f"{tail(e.traceback)}\nexecuted notebook: {output}") from None
            except KERNEL_START_ERRORS as e:
                km = None
                if attempt == retries - 1:
                    raise KitError(f"the kernel for {src.name} did not start after {retries} tries: "
                                   f"{type(e).__name__}: {e}") from None
                time.sleep(2 ** attempt)
    return output


@contextmanager
def started_kernel(notebook: str | Path, timeout: float = 60, **launch) -> Iterator:
    """A kernel for `notebook`, started as run_notebook starts one, for run_notebook(km=...) to run one notebook
    after another on (kit.runner: the folds of a slot, reset_kernel between them). launch: for Popen (stdout,
    stderr). Shut down when the block ends."""
    class Manager(kernel_manager_class()):  # keeps the clients it makes (papermill's too), to close them with the kernel
        def client(self, **kw):
            self.clients = [*getattr(self, "clients", []), super().client(**kw)]
            return self.clients[-1]

    src = resolve(notebook)
    with environ(KIT_ROOT=str(project_root()), PYTHONUNBUFFERED="1"), kernel_config() as config:
        km = Manager(kernel_name=kernel_name(), config=config)
        try:
            km.start_kernel(cwd=str(src.parent), **launch)
            kc = km.client()
            kc.start_channels()
            kc.wait_for_ready(timeout=timeout)
            yield km
        finally:
            for kc in getattr(km, "clients", []):
                kc.stop_channels()
            if km.has_kernel:
                km.shutdown_kernel(now=True)


# Run silently (no output, no history) in a kernel between two notebooks. The modules stay imported: that is
# the point (torch, timm: seconds a fold); what a notebook made is dropped, so the next one starts as on a new
# kernel: its variables, the output history, the objects only they held (a model, its GPU memory), the count.
RESET = """get_ipython().run_line_magic('reset', '-f')
__import__('os').environ.update({env!r})
__import__('gc').collect()
if 'torch' in __import__('sys').modules and __import__('torch').cuda.is_initialized():
    __import__('torch').cuda.empty_cache()
get_ipython().execution_count = 1
"""


def reset_kernel(km, env: dict, timeout: float = 60) -> None:
    """Make a kernel that ran a notebook ready for the next (RESET), with `env` in its os.environ (e.g. the next
    fold's lock); RuntimeError if it cannot be: start a new one then."""
    for kc in getattr(km, "clients", []):  # the last notebook's
        kc.stop_channels()
    kc = km.client()
    kc.start_channels()
    reply = kc.execute_interactive(RESET.format(env=env), silent=True, store_history=False, timeout=timeout)
    kc.stop_channels()
    if reply["content"]["status"] != "ok":
        raise RuntimeError(f"resetting the kernel failed: {reply['content'].get('evalue')}")


def check_kernel(timeout: float = 60) -> None:
    """Start and stop the kernel once, so a broken one is reported before any fold starts."""
    with kernel_config() as config:
        km = kernel_manager_class()(kernel_name=kernel_name(), config=config)
        try:
            km.start_kernel()
            kc = km.client()
            kc.start_channels()
            try:
                kc.wait_for_ready(timeout=timeout)
            finally:
                kc.stop_channels()
        except Exception as e:  # noqa: BLE001 - any failure here means no fold could run
            raise KitError(f"the notebook kernel ({sys.executable} -m ipykernel) cannot start: "
                           f"{type(e).__name__}: {e}; install ipykernel in this environment") from None
        finally:
            if km.has_kernel:
                km.shutdown_kernel(now=True)


def tail(traceback: list[str], lines: int = 8) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(traceback))
    return "\n".join(text.strip().splitlines()[-lines:])
