"""Headless notebook runs: the py:percent notebook converted with jupytext, run by papermill on an
explicit kernel of the current interpreter, parameters injected, the executed notebook kept."""

from __future__ import annotations

import ast
import hashlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import jupytext
import nbformat
import pandas as pd

from . import KitError
from .io import write_json
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


KERNEL_START_ERRORS = (RuntimeError, TimeoutError, OSError)  # dead kernel, "address already in use", timeouts


def run_notebook(notebook: str | Path, output: str | Path, params: dict | None = None, log: bool = True,
                 retries: int = 3) -> Path:
    """Execute one notebook headlessly; KitError with the failing cell's error on failure.

    A kernel that fails to start (port races when notebooks start together) is retried with backoff.
    """
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

    Finished folds are skipped unless force; a fold killed half-way resumes from its last.pt; a failing
    fold does not stop the others. Locally: one job per GPU in `gpus` ("0,1", "auto") with
    CUDA_VISIBLE_DEVICES, else `jobs` CPU jobs with `threads` threads each; starts are staggered.
    """
    from .train import is_complete, stale_reason

    params = dict(params or {})
    nb = load_notebook(notebook)  # fail before any fold starts: notebook, parameters, kernel
    if backend not in ("local", "ray"):
        raise KitError(f"unknown backend {backend!r}; use 'local' or 'ray'")
    check_parameters(nb, {**params, "exp": exp, "fold": 0, "runs_dir": runs_dir}, notebook)
    names = set(notebook_parameters(nb))
    threads = threads or int(params.get("threads", 0) or 0)
    results, todo = {}, []
    for k in folds:
        d = fold_dir(runs_dir, exp, k)
        if is_complete(d) and not force:
            reason = stale_reason(d)
            results[k] = JobResult(f"{exp}/fold{k}", "stale" if reason else "skipped", 0.0,
                                   str(d / "train_fold.ipynb"), f"{d}: {reason}; rerun it with --force" if reason else "")
            continue
        job_params = {**params, "exp": exp, "fold": k, "runs_dir": runs_dir}
        if threads and "threads" in names:
            job_params["threads"] = threads
        todo.append(Job(f"{exp}/fold{k}", k, str(resolve(notebook)), str(d / "train_fold.ipynb"), job_params,
                        str(project_root()), thread_env(threads)))
    if todo:
        check_kernel()  # a kernel that cannot start is reported before any fold folder is touched
        for job in todo:
            d = Path(job.output).parent
            if force:  # afresh: no resuming from an earlier attempt's last.pt
                (d / "last.pt").unlink(missing_ok=True)
            d.mkdir(parents=True, exist_ok=True)
        if backend == "ray":
            results.update(run_on_ray(todo, address, gpus, threads))
        elif backend == "local":
            results.update(run_local(todo, jobs, gpus, stagger, runs_dir, exp, on_status))
    return pd.DataFrame([results[k].__dict__ for k in folds])


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
    except BaseException:
        for proc, _, _ in running.values():
            os.killpg(proc.pid, signal.SIGKILL)
        raise
    return done


def start_worker(job: Job, slot: str) -> subprocess.Popen:
    env = {**os.environ, "KIT_ROOT": job.root, "KIT_HEADLESS": "1", "PYTHONUNBUFFERED": "1", **job.env}
    if slot:
        env["CUDA_VISIBLE_DEVICES"] = slot
    (Path(job.output).parent / "job.json").unlink(missing_ok=True)
    log = open(Path(job.output).parent / "run.log", "w")
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
                epoch, best = int(h["epoch"].max()) + 1, round(float(h[metric].max()), 4)
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
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    job = Job(**json.loads((argv or sys.argv[1:])[0]))
    result = run_job(job)
    write_json(result.__dict__, Path(job.output).parent / "job.json")
    if result.error:
        print(result.error, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
