"""Fold runs: one notebook run (kit.notebook) per fold, each in a worker process of its own (or a Ray task),
scheduled over the GPUs or CPU slots, with a live status table, a lock per fold folder, and finished folds
skipped.

The worker (`python -m kit.runner`) imports this module: it imports nothing heavier than papermill at the
top. kit.rundir, kit.device and kit.lock bring torch and sklearn (seconds and ~800 MB per worker, next to
the kernel that trains), so the functions that only the parent runs import them where they use them."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import time
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from . import KitError
from .io import write_json
from .lifetime import die_with_parent
from .notebook import check_kernel, check_parameters, environ, load_notebook, notebook_parameters, run_notebook
from .paths import check_name, check_writable, fold_dir, project_root, resolve


@dataclass
class JobResult:
    name: str
    status: str  # done, skipped, failed, stale, differs, busy
    seconds: float
    notebook: str
    error: str = ""


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
              stagger: float = 2.0, backend: str = "local", address: str = "", on_status=None,
              nb=None) -> pd.DataFrame:
    """One papermill job per fold, each in its own process (or Ray task).

    Finished folds are skipped unless force (then they start afresh: resume=False); a finished fold trained
    with other parameters is reported ("differs"), not skipped silently; a fold killed half-way resumes from
    its last.pt; a failing fold does not stop the others; a fold another run is writing is reported
    ("busy"), never written by two. Locally: one job per GPU in `gpus` ("0,1", "auto") with
    CUDA_VISIBLE_DEVICES, else `jobs` CPU jobs with `threads` threads each; starts are staggered.
    Every check that can fail runs before any fold starts. nb: `notebook` already loaded (kit run-folds reads
    its parameters cell first, to type the -p values), so that it is read and checked once.
    """
    from .lock import HELD_ENV, FoldBusy, fold_lock, lock_path
    from .rundir import NOTEBOOK, is_complete

    if backend not in ("local", "ray"):
        raise KitError(f"unknown backend {backend!r}; use 'local' or 'ray'")
    if not jobs >= 1:
        raise KitError(f"jobs={jobs!r}: run at least 1 fold at a time")
    if not stagger >= 0:  # also refuses NaN
        raise KitError(f"stagger={stagger!r}: the seconds between worker starts cannot be negative")
    nb = nb or load_notebook(notebook)  # fail before any fold starts: notebook, parameters, kernel
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
            name, nb_out = f"{exp}/fold{k}", str(d / NOTEBOOK)
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
    from .rundir import NOTEBOOK, read_config, stale_reason

    notebook = str(d / NOTEBOOK)
    reason = stale_reason(d)
    if reason:
        return JobResult(name, "stale", 0.0, notebook, f"{d}: {reason}; rerun it with --force")
    changes = training_changes(read_config(d), {**config, "fold": k}) if config else {}
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
    from .device import HEADLESS_ENV
    from .rundir import JOB, RUN_LOG

    env = {**os.environ, "KIT_ROOT": job.root, HEADLESS_ENV: "1", "PYTHONUNBUFFERED": "1",
           "KIT_PARENT_PID": str(os.getpid()), **job.env}
    if slot:
        env["CUDA_VISIBLE_DEVICES"] = slot
    folder = Path(job.output).parent
    (folder / JOB).unlink(missing_ok=True)
    with open(folder / RUN_LOG, "w") as log:
        return subprocess.Popen([sys.executable, "-m", "kit.runner", json.dumps(job.__dict__), str(folder / JOB)],
                                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def read_result(job: Job, returncode: int, seconds: float) -> JobResult:
    from .rundir import JOB, RUN_LOG

    path = Path(job.output).parent / JOB
    if returncode == 0 and path.is_file():
        return JobResult(**json.loads(path.read_text()))
    log = Path(job.output).parent / RUN_LOG
    last = "\n".join(log.read_text(errors="replace").splitlines()[-8:]) if log.is_file() else ""
    return JobResult(job.name, "failed", seconds, job.output, f"worker exited with {returncode}\n{last}")


def status_table(todo: list[Job], done: dict, running: dict, started: dict, runs_dir: str, exp: str) -> pd.DataFrame:
    """fold, state, epoch, best score, elapsed: read from each fold's history.csv as it grows."""
    from .rundir import HISTORY

    rows = []
    for job in todo:
        hist = fold_dir(runs_dir, exp, job.fold) / HISTORY
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
    """Worker entry point: python -m kit.runner '<job json>' <result file>; writes the JobResult to the result
    file (the fold's job.json, named by start_worker: kit.rundir is not imported here, see the module doc)."""
    if os.environ.get("KIT_PARENT_PID"):  # started by run_local: die with it
        die_with_parent(int(os.environ["KIT_PARENT_PID"]))
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    spec, result_file = argv or sys.argv[1:]
    result = run_job(Job(**json.loads(spec)))
    write_json(result.__dict__, result_file)
    if result.error:
        print(result.error, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
