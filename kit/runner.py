"""Headless notebook runs: the py:percent notebook converted with jupytext, run by papermill on an
explicit kernel of the current interpreter, parameters injected, the executed notebook kept."""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import jupytext
import nbformat
import pandas as pd

from . import KitError
from .io import write_json
from .lifetime import die_with_parent
from .lock import HELD_ENV, FoldBusy, fold_lock, lock_path
from .paths import check_name, check_writable, fold_dir, project_root, resolve


@dataclass
class JobResult:
    name: str
    status: str  # done, skipped, failed, stale, differs, busy
    seconds: float
    notebook: str
    error: str = ""


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


@dataclass
class Job:
    """One fold's notebook run: everything a worker process or a Ray task needs."""
    name: str
    fold: int
    notebook: str
    output: str
    params: dict
    root: str  # project root, shared by every worker
    env: dict = field(default_factory=dict)


def run_job(job: Job) -> JobResult:
    """Run a job in this process (a worker subprocess or a Ray task)."""
    t0 = time.time()
    with environ(KIT_ROOT=job.root, **job.env):
        try:
            run_notebook(job.notebook, job.output, job.params, log=True)
            return JobResult(job.name, "done", time.time() - t0, job.output)
        except KitError as e:
            return JobResult(job.name, "failed", time.time() - t0, job.output, str(e))


def run_folds(exp: str, folds: list[int], params: dict | None = None, notebook: str | Path = "notebooks/train_fold.py",
              runs_dir: str = "runs", force: bool = False, jobs: int = 1, gpus: str = "", threads: int = 0,
              stagger: float = 2.0, backend: str = "local", address: str = "", on_status=None) -> pd.DataFrame:
    """One papermill job per fold, each in its own process (or Ray task).

    Finished folds are skipped unless force (then they start afresh: resume=False); a finished fold trained
    with other parameters is reported ("differs"), not skipped silently; a fold killed half-way resumes from
    its last.pt; a failing fold does not stop the others; a fold another run is writing is reported
    ("busy"), never written by two. Locally: one job per GPU in `gpus` ("0,1", "auto") with
    CUDA_VISIBLE_DEVICES, else `jobs` CPU jobs with `threads` threads each; starts are staggered.
    Every check that can fail runs before any fold starts.
    """
    from .train import is_complete

    if backend not in ("local", "ray"):
        raise KitError(f"unknown backend {backend!r}; use 'local' or 'ray'")
    if not jobs >= 1:
        raise KitError(f"jobs={jobs!r}: run at least 1 fold at a time")
    if not stagger >= 0:  # also refuses NaN
        raise KitError(f"stagger={stagger!r}: the seconds between worker starts cannot be negative")
    nb = load_notebook(notebook)  # fail before any fold starts: notebook, parameters, kernel
    names = notebook_parameters(nb)
    check_name("experiment", exp)
    params = check_parameters(nb, {**(params or {}), "exp": exp, "fold": 0, "runs_dir": runs_dir}, notebook)
    del params["fold"]
    if force:  # afresh: the notebook's fit_fold removes what the old run wrote instead of resuming from it
        if "resume" not in names:
            raise KitError(f"force: {notebook} has no `resume` parameter, so a finished fold cannot be started afresh")
        params["resume"] = False
    threads = threads or int(params.get("threads", 0) or 0)
    if threads and "threads" in names:
        params["threads"] = threads
    config = train_config(names, params)
    check_writable(runs_dir, "runs_dir")
    dirs = {k: fold_dir(runs_dir, exp, k) for k in folds}
    if any(force or not is_complete(d) for d in dirs.values()):
        check_kernel()  # a kernel that cannot start is reported before any fold folder is touched
    results, todo = {}, []
    with ExitStack() as held:
        for k, d in dirs.items():
            name, nb_out = f"{exp}/fold{k}", str(d / "train_fold.ipynb")
            lock = ExitStack()
            try:
                lock.enter_context(fold_lock(d))
            except FoldBusy as e:
                results[k] = JobResult(name, "busy", 0.0, nb_out, str(e))
                continue
            if is_complete(d) and not force:
                with lock:  # this run does not write the folder: let others have it
                    results[k] = finished_fold(name, d, config, k)
                continue
            held.enter_context(lock)
            env = {**thread_env(threads), HELD_ENV: str(lock_path(d))}  # the worker's kernel runs under this lock
            todo.append(Job(name, k, str(resolve(notebook)), nb_out, {**params, "fold": k}, str(project_root()), env))
        if backend == "ray" and todo:
            results.update(run_on_ray(todo, address, gpus, threads))
        elif todo:
            results.update(run_local(todo, jobs, gpus, stagger, runs_dir, exp, on_status))
    return pd.DataFrame([results[k].__dict__ for k in folds])


def train_config(names: dict, params: dict) -> dict | None:
    """The TrainConfig a train notebook will build from its parameters cell and `params`, checked now (names,
    types, model, metric, tta... TrainConfig.validate) so that a bad value fails here and not in every
    fold's kernel; None for a notebook that is not a train notebook (no `model` parameter)."""
    from .config import TrainConfig

    if "model" not in names:
        return None
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    defaults = {k: v for k, v in names.items() if k in fields and v is not None}
    return TrainConfig.from_params({**defaults, **{k: v for k, v in params.items() if k in fields}}).to_dict()


def finished_fold(name: str, d: Path, config: dict | None, k: int) -> JobResult:
    """A complete fold: skipped, unless it was made on other folds or by another kit ("stale"), or trained
    with other parameters than this run asks for ("differs")."""
    from .config import training_changes
    from .io import read_json
    from .train import CONFIG, stale_reason

    notebook = str(d / "train_fold.ipynb")
    reason = stale_reason(d)
    if reason:
        return JobResult(name, "stale", 0.0, notebook, f"{d}: {reason}; rerun it with --force")
    changes = training_changes(read_json(d / CONFIG), {**config, "fold": k}) if config else {}
    if changes:
        listing = ", ".join(f"{n} {old!r} -> {new!r}" for n, (old, new) in changes.items())
        return JobResult(name, "differs", 0.0, notebook,
                         f"{d} is finished but was trained with other parameters ({listing}); rerun with --force "
                         "to retrain it with the new ones, or give the new run another --exp")
    return JobResult(name, "skipped", 0.0, notebook)


def thread_env(threads: int) -> dict:
    return {v: str(threads) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")} if threads else {}


def gpu_slots(gpus: str) -> list[str]:
    if gpus == "auto":
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    return [g for g in gpus.split(",") if g]


def run_local(todo: list[Job], jobs: int, gpus: str, stagger: float, runs_dir: str, exp: str,
              on_status=None) -> dict[int, JobResult]:
    """A worker process per fold, at most one per slot; the live log of each is fold<k>/run.log."""
    slots = gpu_slots(gpus) or [""] * max(1, jobs)
    queue, running, done = list(todo), {}, {}
    started = {}
    try:
        while queue or running:
            while queue and slots:
                job, slot = queue.pop(0), slots.pop(0)
                running[job.fold] = (start_worker(job, slot), slot, job)
                started[job.fold] = time.time()
                if queue and slots:
                    time.sleep(stagger)  # kernels starting at the same instant race for ports
            for k, (proc, slot, job) in list(running.items()):
                if proc.poll() is not None:
                    done[k] = read_result(job, proc.returncode, time.time() - started[k])
                    slots.append(slot)
                    del running[k]
            if on_status is not None:
                on_status(status_table(todo, done, running, started, runs_dir, exp))
            time.sleep(0.5)
    except BaseException:  # Ctrl-C, or an error here: no worker outlives the run (a kill: see start_worker)
        for proc, _, _ in running.values():
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        raise
    return done


def start_worker(job: Job, slot: str) -> subprocess.Popen:
    """`python -m kit.runner <job>` in its own session, bound to this process by kit.lifetime (the worker
    arms it with KIT_PARENT_PID, its kernel likewise): a SIGKILL of this process takes both down.

    On Linux the parent-death signal follows the *thread* that started the worker: run_folds must be
    called from a thread that lives until it returns (it does: it waits for its workers)."""
    env = {**os.environ, "KIT_ROOT": job.root, "KIT_HEADLESS": "1", "PYTHONUNBUFFERED": "1",
           "KIT_PARENT_PID": str(os.getpid()), **job.env}
    if slot:
        env["CUDA_VISIBLE_DEVICES"] = slot
    (Path(job.output).parent / "job.json").unlink(missing_ok=True)
    with open(Path(job.output).parent / "run.log", "w") as log:
        return subprocess.Popen([sys.executable, "-m", "kit.runner", json.dumps(job.__dict__)], stdout=log,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)


def read_result(job: Job, returncode: int, seconds: float) -> JobResult:
    path = Path(job.output).parent / "job.json"
    if returncode == 0 and path.is_file():
        return JobResult(**json.loads(path.read_text()))
    log = Path(job.output).parent / "run.log"
    last = "\n".join(log.read_text(errors="replace").splitlines()[-8:]) if log.is_file() else ""
    return JobResult(job.name, "failed", seconds, job.output, f"worker exited with {returncode}\n{last}")


def status_table(todo: list[Job], done: dict, running: dict, started: dict, runs_dir: str, exp: str) -> pd.DataFrame:
    """fold, state, epoch, best score, elapsed: read from each fold's history.csv as it grows."""
    rows = []
    for job in todo:
        hist = fold_dir(runs_dir, exp, job.fold) / "history.csv"
        epoch, best = "", ""
        if hist.is_file():
            try:
                h = pd.read_csv(hist)
                metric = next(c for c in h.columns if c.startswith("val_") and c != "val_loss")
                epoch, best = int(h["epoch"].max()), round(float(h[metric].max()), 4)  # epochs count from 1
            except (ValueError, StopIteration, KeyError, pd.errors.EmptyDataError):
                pass
        state = done[job.fold].status if job.fold in done else "running" if job.fold in running else "queued"
        elapsed = done[job.fold].seconds if job.fold in done else time.time() - started.get(job.fold, time.time())
        rows.append({"fold": job.fold, "state": state, "epoch": epoch, "best": best,
                     "elapsed_s": round(elapsed) if job.fold in started else ""})
    return pd.DataFrame(rows)


def run_on_ray(todo: list[Job], address: str, gpus: str, threads: int) -> dict[int, JobResult]:
    """Each fold a Ray task (num_gpus=1 on GPU clusters, else CPUs); outputs go to the shared run folder."""
    import ray

    if not ray.is_initialized():
        ray.init(address=address or None, include_dashboard=False, log_to_driver=False)
    use_gpu = bool(gpus) or bool(ray.cluster_resources().get("GPU"))
    task = ray.remote(num_gpus=1 if use_gpu else 0, num_cpus=threads or 1, max_retries=0)(run_job)
    results = ray.get([task.remote(job) for job in todo])
    return {job.fold: r for job, r in zip(todo, results)}


def main(argv: list[str] | None = None) -> int:
    """Worker entry point: python -m kit.runner '<job json>'; writes job.json beside the executed notebook."""
    if os.environ.get("KIT_PARENT_PID"):  # started by run_local: die with it
        die_with_parent(int(os.environ["KIT_PARENT_PID"]))
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    job = Job(**json.loads((argv or sys.argv[1:])[0]))
    result = run_job(job)
    write_json(result.__dict__, Path(job.output).parent / "job.json")
    if result.error:
        print(result.error, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
