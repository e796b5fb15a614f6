"""Fold runs: one notebook run (kit.notebook) per fold, on a worker process per slot (a GPU, or one of `jobs`
CPU slots) or as Ray tasks, with a live status table, a lock per fold folder, and finished folds skipped.

What a fold costs besides its training (bench/runner_overhead.py) is mostly a new kernel importing torch and
timm: seconds of CPU per fold, taken from the training on a small machine. So a slot's worker keeps one
kernel for its folds, run one after another: between two folds the kernel is reset (kit.notebook.reset_kernel:
its variables dropped, its imports kept), and after a fold that fails the next one gets a new kernel. Each
fold keeps its own executed notebook and run.log, and runs under its own fold lock.

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
import threading
import time
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from . import KitError
from .io import write_json
from .lifetime import die_with_parent
from .notebook import (check_kernel, check_parameters, environ, load_notebook, notebook_parameters, reset_kernel,
                       run_notebook, started_kernel)
from .paths import check_name, check_writable, comp_runs, exp_dir, fold_dir, project_root, resolve

POLL = 0.1  # seconds between looks at the workers: a free slot waits at most this long for its next fold


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
    log: str = ""  # the fold's run.log
    result: str = ""  # the fold's job.json: the JobResult, written by the worker


def run_job(job: Job, km=None) -> JobResult:
    """Run a job in this process (a worker subprocess or a Ray task); km: a kernel already started for it."""
    t0 = time.time()
    with environ(KIT_ROOT=job.root, **job.env):
        try:
            run_notebook(job.notebook, job.output, job.params, log=True, km=km)
            return JobResult(job.name, "done", time.time() - t0, job.output)
        except KitError as e:
            return JobResult(job.name, "failed", time.time() - t0, job.output, str(e))


def run_folds(exp: str, folds: list[int], params: dict | None = None, notebook: str | Path = "notebooks/train_fold.py",
              runs_dir: str = "runs", force: bool = False, jobs: int = 1, gpus: str = "", threads: int = 0,
              stagger: float = 2.0, backend: str = "local", address: str = "", on_status=None,
              nb=None, say=None) -> pd.DataFrame:
    """One papermill job per fold, on its slot's worker and kernel (run_local) or as a Ray task.

    Finished folds are skipped unless force (then they start afresh: resume=False); a finished fold trained
    with other parameters is reported ("differs"), not skipped silently, and so is any other finished fold of
    the experiment trained with other parameters than this run's ("stale": the experiment mixes two
    trainings, which the blender refuses); a fold killed half-way resumes from its last.pt; a failing fold
    does not stop the others; a fold another run is writing is reported ("busy"), never written by two.
    Locally: one job per GPU in `gpus` ("0,1", "auto") with CUDA_VISIBLE_DEVICES, else `jobs` CPU jobs with
    `threads` threads each (0: default_threads); worker starts are `stagger` s apart. on_status(table): the
    live status_table; say(line): what is about to run, and where (the folds, slots and threads).
    Every check that can fail runs before any fold starts. nb: `notebook` already loaded (kit run-folds reads
    its parameters cell first, to type the -p values), so that it is read and checked once.
    """
    from .lock import HELD_ENV, FoldBusy, fold_lock, lock_path
    from .rundir import JOB, NOTEBOOK, RUN_LOG, is_complete

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
    slots = gpu_slots(gpus) if backend == "local" else []
    comp = params.get("comp", names.get("comp"))
    if not comp:
        raise KitError(f"{notebook} has no `comp` parameter and none was given: runs live under runs/<comp>/<exp>")
    runs = comp_runs(runs_dir, comp)
    dirs = {k: fold_dir(runs, exp, k) for k in folds}
    pending = sum(force or not is_complete(d) for d in dirs.values())  # the folds to run: no more run at once
    threads, why = threads_per_job(threads or int(params.get("threads", 0) or 0),
                                   max(1, min(len(slots) or jobs, pending)), backend)
    if threads and "threads" in names:
        params["threads"] = threads
    config = train_config(names, params)
    check_writable(runs_dir, "runs_dir")
    check_other_competition(exp_dir(runs, exp), comp, params.get("data_dir", names.get("data_dir")) or "data",
                            runs_dir)
    if pending:
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
            todo.append(Job(name, k, str(resolve(notebook)), nb_out, {**params, "fold": k}, str(project_root()), env,
                            str(d / RUN_LOG), str(d / JOB)))
        if say and todo:
            at_once = f"{len(slots)} GPU slot(s)" if slots else "on Ray" if backend == "ray" else f"{jobs} at a time"
            say(f"{len(todo)} fold(s) of {runs.name}/{exp} to run, {at_once}; {why}")
        if backend == "ray" and todo:
            results.update(run_on_ray(todo, address, gpus, threads, on_status))
        elif todo:
            results.update(run_local(todo, slots or [""] * jobs, stagger, on_status))
    made = config and any(results[k].status in ("done", "skipped") for k in folds)  # this run's training exists
    mixed = mixed_folds(exp_dir(runs, exp), folds, config) if made else []
    return pd.DataFrame([results[k].__dict__ for k in folds] + [r.__dict__ for r in mixed])


def check_other_competition(exp_path: Path, comp: str, data_dir: str, runs_dir: str) -> None:
    """Before any fold starts: refuse an experiment folder holding another competition's runs
    (kit.rundir.check_competition). Nothing to check while the competition or its folds cannot be read: the
    fold's own start says why."""
    from .competition import find_root
    from .folds import folds_hash, folds_path, read_folds
    from .rundir import check_competition

    if not exp_path.is_dir():
        return
    try:
        root = find_root(comp, data_dir)
        fhash = folds_hash(read_folds(folds_path(root, runs_dir)))
    except KitError:
        return
    check_competition(exp_path, str(root), fhash)


def threads_per_job(threads: int, at_once: int, backend: str = "local") -> tuple[int, str]:
    """(torch threads per fold, why): `threads` as given, else the cores here shared by the folds that run at once
    (on a 2-core machine two folds of torch's default 2 threads each run 3x slower than 1 each: they fight for the
    cores). On Ray the cluster's machines are not these: torch's default there (0)."""
    if threads:
        return threads, f"{threads} torch thread(s) per fold (--threads)"
    if backend == "ray":
        return 0, "torch's default threads on each Ray worker (--threads to set them)"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    n = max(1, cores // max(1, at_once))
    return n, f"{n} torch thread(s) per fold: {cores} cores / {at_once} at once (--threads to change)"


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


def changes_text(changes: dict) -> str:
    return ", ".join(f"{n} {old!r} -> {new!r}" for n, (old, new) in changes.items())


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
        return JobResult(name, "differs", 0.0, notebook,
                         f"{d} is finished but was trained with other parameters ({changes_text(changes)}); rerun "
                         "with --force to retrain it with the new ones, or give the new run another --exp")
    return JobResult(name, "skipped", 0.0, notebook)


def mixed_folds(exp_path: Path, folds: list[int], config: dict) -> list[JobResult]:
    """The experiment's finished folds outside this run trained with other parameters than this run's folds:
    "stale", since one experiment is one training (kit blend refuses a mixed one). Read after the run, so a
    run that mixes the experiment (--force -p lr=... on some folds) says so when it ends."""
    from .config import training_changes
    from .rundir import NOTEBOOK, fold_number, is_complete, read_config

    out = []
    others = sorted((int(fold_number(d)), d) for d in exp_path.glob("fold*")
                    if fold_number(d).isdigit() and int(fold_number(d)) not in folds and is_complete(d))
    for k, d in others:
        changes = training_changes(read_config(d), {**config, "fold": k})
        if changes:
            listing = ",".join(map(str, folds))
            out.append(JobResult(f"{exp_path.name}/fold{k}", "stale", 0.0, str(d / NOTEBOOK),
                                 f"{d} was trained with other parameters than this run's folds {listing} "
                                 f"({changes_text(changes)}): the experiment mixes two trainings, and kit blend "
                                 f"refuses it. Retrain it with this run's parameters (this command with --folds "
                                 f"{k} --force), or run the new parameters under another --exp"))
    return out


def thread_env(threads: int) -> dict:
    return {v: str(threads) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")} if threads else {}


def gpu_slots(gpus: str) -> list[str]:
    """The CUDA_VISIBLE_DEVICES of each local slot: "0,1" as given, "auto" every visible GPU, "" none (CPU)."""
    if gpus != "auto":
        return [g.strip() for g in gpus.split(",") if g.strip()]
    import torch

    n = torch.cuda.device_count()
    if not n:
        raise KitError("--gpus auto: torch sees no CUDA GPU here (torch.cuda.device_count() is 0, CUDA_VISIBLE_DEVICES="
                       f"{os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')!r}, torch {torch.__version__}); leave "
                       "--gpus out to train on the CPU, or install a CUDA build of torch and check the driver")
    return [str(i) for i in range(n)]


def run_local(todo: list[Job], slots: list[str], stagger: float, on_status=None) -> dict[int, JobResult]:
    """One worker process per slot (start_worker, `stagger` s apart), sent the slot's folds one at a time; a
    fold is over when its job.json is written. A worker that dies fails its fold, and the slot's next fold
    gets a new worker. The live log of each fold is its run.log."""
    queue, workers, current, done, started = list(todo), {}, {}, {}, {}  # workers, current: by slot number
    last_start = -float("inf")
    try:
        while queue or current:
            for i, slot in enumerate(slots):
                if i in current or not queue:
                    continue
                if i not in workers or workers[i].poll() is not None:
                    if time.time() - last_start < stagger:
                        continue
                    workers[i], last_start = start_worker(queue[0], slot), time.time()  # writes its run.log
                else:
                    open(queue[0].log, "w").close()
                job = current[i] = queue.pop(0)
                send(workers[i], job)
                started[job.fold] = time.time()
            for i, job in list(current.items()):
                returncode = workers[i].poll()
                if Path(job.result).is_file() or returncode is not None:
                    done[job.fold] = read_result(job, returncode, time.time() - started[job.fold])
                    del current[i]
            if on_status is not None:
                on_status(status_table(todo, done, started))
            time.sleep(POLL)
        for proc in workers.values():  # end of input: each worker shuts its kernel down and exits
            proc.stdin.close()
            proc.wait()
    except BaseException:  # Ctrl-C, or an error here: no worker outlives the run (a kill: see start_worker)
        for proc in workers.values():
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        raise
    return done


def start_worker(first: Job, slot: str) -> subprocess.Popen:
    """`python -m kit.runner` in its own session, bound to this process by kit.lifetime (the worker arms it
    with KIT_PARENT_PID, its kernel likewise): a SIGKILL of this process takes both down. Until it reads its
    first fold it writes into that fold's run.log (an error at its start is that fold's).

    On Linux the parent-death signal follows the *thread* that started the worker: run_folds must be
    called from a thread that lives until it returns (it does: it waits for its workers)."""
    from .device import HEADLESS_ENV

    env = {**os.environ, "KIT_ROOT": first.root, HEADLESS_ENV: "1", "PYTHONUNBUFFERED": "1",
           "KIT_PARENT_PID": str(os.getpid())}  # each fold's own env (its lock, threads): main, per fold
    if slot:
        env["CUDA_VISIBLE_DEVICES"] = slot
    with open(first.log, "w") as log:
        return subprocess.Popen([sys.executable, "-m", "kit.runner"], stdin=subprocess.PIPE, stdout=log,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)


def send(proc: subprocess.Popen, job: Job) -> None:
    """The worker's next fold, as a line of JSON (its job.json, from an earlier run, removed first)."""
    Path(job.result).unlink(missing_ok=True)
    with suppress(BrokenPipeError):  # a worker that died meanwhile: its exit code tells
        proc.stdin.write(json.dumps(job.__dict__).encode() + b"\n")
        proc.stdin.flush()


def read_result(job: Job, returncode: int | None, seconds: float) -> JobResult:
    path = Path(job.result)
    if path.is_file():
        return JobResult(**json.loads(path.read_text()))
    log = Path(job.log)
    last = "\n".join(log.read_text(errors="replace").splitlines()[-8:]) if log.is_file() else ""
    return JobResult(job.name, "failed", seconds, job.output, f"worker exited with {returncode}\n{last}")


def status_table(todo: list[Job], done: dict, started: dict) -> pd.DataFrame:
    """fold, state, epoch (k/N), best score, elapsed and ETA in seconds: from each fold's history.csv as it
    grows (the ETA: the epochs left times the mean epoch so far)."""
    rows = []
    for job in todo:
        if job.fold in done:
            state, elapsed = done[job.fold].status, round(done[job.fold].seconds)
        elif job.fold in started:
            state, elapsed = "running", round(time.time() - started[job.fold])
        else:
            state, elapsed = "queued", ""
        row = {"fold": job.fold, "state": state, "epoch": "", "best": "", "elapsed_s": elapsed, "eta_s": ""}
        if state != "queued":
            # a fresh start (--force) shows its own epochs, not the history the old run left until it is removed
            since = started.get(job.fold, 0.0) if job.params.get("resume") is False else 0.0
            row.update(progress(Path(job.output).parent, job.params, state == "running", since))
        rows.append(row)
    return pd.DataFrame(rows)


def progress(folder: Path, params: dict, running: bool, since: float = 0.0) -> dict:
    """epoch, best and eta_s of a fold from its history (epochs count from 1); {} before its first epoch, and for a
    history last written before `since` (a time.time(): an older run's)."""
    from .metrics import lookup
    from .rundir import HISTORY

    try:
        if since and (folder / HISTORY).stat().st_mtime < since:
            return {}
        h = pd.read_csv(folder / HISTORY)
        metric = f"val_{params['metric']}" if f"val_{params.get('metric')}" in h else next(
            c for c in h.columns if c.startswith("val_") and c != "val_loss")
        greater = lookup(metric.removeprefix("val_")).greater_is_better
        epoch, total = int(h["epoch"].max()), int(params.get("epochs") or 0)
    except (OSError, ValueError, StopIteration, KeyError, KitError, pd.errors.EmptyDataError):
        return {}
    best = h[metric].max() if greater else h[metric].min()
    out = {"epoch": f"{epoch}/{total}" if total else str(epoch), "best": round(float(best), 4)}
    if running and total and "seconds" in h:
        out["eta_s"] = round(max(total - epoch, 0) * float(h["seconds"].mean()))
    return out


def run_on_ray(todo: list[Job], address: str, gpus: str, threads: int, on_status=None) -> dict[int, JobResult]:
    """Each fold a Ray task (num_gpus=1 on GPU clusters, else CPUs) that writes the fold's run.log and job.json
    as a local worker does; outputs go to the shared run folder. A fold counts as running once its run.log
    is there."""
    import ray

    if not ray.is_initialized():
        ray.init(address=address or None, include_dashboard=False, log_to_driver=False)
    cluster_gpus = ray.cluster_resources().get("GPU", 0)
    if gpus and not cluster_gpus:
        raise KitError(f"--gpus {gpus} with --backend ray: the Ray cluster has no GPU (ray.cluster_resources() lists "
                       "none), so no fold could be scheduled; leave --gpus out to train on the cluster's CPUs")
    for job in todo:  # what an earlier run left: a fold is running once its task writes these
        Path(job.log).unlink(missing_ok=True)
        Path(job.result).unlink(missing_ok=True)
    task = ray.remote(num_gpus=1 if cluster_gpus else 0, num_cpus=threads or 1, max_retries=0)(run_logged)
    pending = {task.remote(job): job for job in todo}
    done, started = {}, {}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=1.0)
        for ref in ready:
            job = pending.pop(ref)
            done[job.fold] = ray.get(ref)
        for job in pending.values():
            if job.fold not in started and Path(job.log).is_file():
                started[job.fold] = time.time()
        if on_status is not None:
            on_status(status_table(todo, done, started))
    return done


def run_logged(job: Job, km=None) -> JobResult:
    """run_job with the fold's live log (the notebook's output, as papermill logs it) in job.log and its result
    in job.result: a Ray task's, where no worker process redirects them."""
    handler = logging.FileHandler(job.log, mode="a")
    handler.setFormatter(logging.Formatter("%(message)s"))
    pm_log = logging.getLogger("papermill")
    pm_log.addHandler(handler)
    try:
        result = run_job(job, km)
        if result.error:
            pm_log.error(result.error)
    finally:
        pm_log.removeHandler(handler)
        handler.close()
    write_json(result.__dict__, job.result)
    return result


def main() -> int:
    """Worker entry point: python -m kit.runner, one per slot. Reads the slot's folds from stdin, one Job (JSON)
    a line, until the end of input; runs each on the slot's kernel (see the module doc) with its output in
    the fold's run.log and its JobResult written to the fold's job.json."""
    if os.environ.get("KIT_PARENT_PID"):  # started by run_local: die with it
        die_with_parent(int(os.environ["KIT_PARENT_PID"]))
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    kernel, km = ExitStack(), None
    with kernel:
        while line := sys.stdin.readline():
            job = Job(**json.loads(line))
            log_to(job.log)
            with environ(KIT_ROOT=job.root, **job.env):
                km = slot_kernel(job, km, kernel)
                result = run_job(job, km)
            if result.status != "done":  # whatever the notebook left in it, the next fold gets a new kernel
                kernel.close()
                km = None
            if result.error:
                print(result.error, file=sys.stderr, flush=True)
            write_json(result.__dict__, job.result)
    return 0


def log_to(path: str) -> None:
    """This process's stdout and stderr (the log lines, the kernel's own output: see slot_kernel) into `path`."""
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def slot_kernel(job: Job, km, kernel: ExitStack):
    """The slot's kernel, reset for `job`; a new one if there is none or it cannot be reset (it died). None if
    none starts: run_notebook then starts one itself, with its retries and its error message."""
    if km is not None:
        try:
            reset_kernel(km, job.env)
            return km
        except Exception as e:  # noqa: BLE001 - a kernel that cannot be reset is replaced
            logging.warning(f"a new kernel: the slot's kernel could not be reset ({type(e).__name__}: {e})")
            kernel.close()
    read, write = os.pipe()  # the kernel's own stdout and stderr, copied to the current fold's run.log
    try:
        km = kernel.enter_context(started_kernel(job.notebook, stdout=write, stderr=write))
    except Exception as e:  # noqa: BLE001 - the notebook run that follows reports what is wrong
        logging.warning(f"the slot's kernel did not start ({type(e).__name__}: {e}); starting one for the fold")
        os.close(read)
        return None
    finally:
        os.close(write)
    threading.Thread(target=copy_out, args=(read,), daemon=True).start()
    return km


def copy_out(fd: int) -> None:
    """fd's bytes to stdout (fd 1: the current fold's run.log, see log_to) until its writer closes it."""
    while chunk := os.read(fd, 1 << 16):
        os.write(1, chunk)
    os.close(fd)


if __name__ == "__main__":
    sys.exit(main())
