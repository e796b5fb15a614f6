"""The fold runner: parallel worker processes, failures, resume after a kill, Ray, preflight checks."""

import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import kit.notebook
import kit.runner
from kit import KitError
from kit.cli import main
from kit.rundir import is_complete
from kit.runner import run_folds

NOTEBOOK = Path(kit.runner.__file__).resolve().parents[1] / "notebooks" / "train_fold.py"  # the kit under test's
TINY = {"model": "test_resnet", "img_size": 16, "epochs": 1, "batch_size": 32, "tta": "none"}
FILES = {"best.pt", "last.pt", "history.csv", "oof.csv", "config.json", "train_fold.ipynb", "run.log", "job.json"}


def folder(project, exp, k, comp="demo"):
    return project / "runs" / comp / exp / f"fold{k}"


def processes_of(project: Path) -> list[str]:
    """Live processes started for this project: its KIT_ROOT is in their environment (CLI, workers, kernels)."""
    marks = {f"KIT_ROOT={project}".encode(), f"KIT_ROOT={project.resolve()}".encode()}
    found = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit() or int(p.name) == os.getpid():
            continue
        try:
            env = set((p / "environ").read_bytes().split(b"\0"))
            state = (p / "stat").read_text().rsplit(")", 1)[1].split()[0]
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError):  # gone meanwhile
            continue
        if env & marks and state != "Z":  # a zombie runs nothing: it waits for its reaper
            found.append(f"{p.name}: {cmd}")
    return found


def processes_left(project: Path, timeout: float = 3) -> list[str]:
    """What still runs `timeout` s later: a parent-death signal is immediate, a worker left alone trains on."""
    deadline = time.time() + timeout
    while (left := processes_of(project)) and time.time() < deadline:
        time.sleep(0.2)
    return left


@pytest.fixture
def project(project):
    """conftest's project; whatever of it still runs when the test ends is SIGKILLed, pass or fail: a test that
    finds a worker or kernel left behind (kit.lifetime broken) must not leave it training on after the suite."""
    yield project
    for line in processes_of(project):
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(line.split(":", 1)[0]), signal.SIGKILL)


@pytest.mark.slow
def test_two_folds_run_at_once_in_two_processes(tiny_comp, project):
    states = []
    summary = run_folds("par", [0, 1], TINY, NOTEBOOK, jobs=2, threads=1, stagger=0.5,
                        on_status=lambda t: states.append(tuple(t["state"])))
    assert summary["status"].tolist() == ["done", "done"]
    assert ("running", "running") in states  # both worker processes were alive together
    for k in (0, 1):
        assert FILES <= {p.name for p in folder(project, "par", k).iterdir()}
        log = (folder(project, "par", k) / "run.log").read_text()
        assert "epoch 1/1" in log and "\r" not in log  # one readable line per epoch, no bar redraws
    config = json.loads((folder(project, "par", 0) / "config.json").read_text())
    assert config["threads"] == 1


@pytest.mark.slow
def test_a_failing_fold_leaves_the_other_complete_and_exits_nonzero(tiny_comp, project, tmp_path, capsys):
    nb = NOTEBOOK.read_text().replace("\n# %%\n", '\n# %%\nassert fold != 1, "boom in fold 1"\n\n# %%\n', 1)
    assert "boom in fold 1" in nb  # a cell of its own, after the parameters
    bad = tmp_path / "notebooks" / "train_fold.py"
    bad.write_text(nb)
    code = main(["run-folds", "--exp", "f", "--folds", "0,1", "--notebook", str(bad), "--jobs", "2", "--stagger", "0",
                 *sum([[f"--{k.replace('_', '-')}", str(v)] for k, v in TINY.items()], [])])
    out, err = capsys.readouterr()
    assert code == 1
    assert is_complete(folder(project, "f", 0))
    assert re.search(r"f/fold1 +failed", out) and "boom in fold 1" in err and "fold1/train_fold.ipynb" in err


LONG = {**TINY, "epochs": 30}


@pytest.mark.slow
def test_rerun_skips_finished_folds_and_resumes_a_killed_one(tiny_comp, project):
    run_folds("r", [1], LONG, NOTEBOOK)  # fold 1 finished earlier
    params = [f"--{k.replace('_', '-')}={v}" for k, v in LONG.items()]
    proc = subprocess.Popen([sys.executable, "-m", "kit.cli", "run-folds", "--exp", "r", "--folds", "0",
                             "--notebook", str(NOTEBOOK), *params], cwd=project, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ})
    hist = folder(project, "r", 0) / "history.csv"
    deadline = time.time() + 240
    while time.time() < deadline and not (hist.is_file() and len(pd.read_csv(hist)) >= 2):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the runner, mid-training: its worker and kernel die with it
    proc.wait()
    assert not processes_left(project)
    killed_at = len(pd.read_csv(hist))
    assert 2 <= killed_at < 30 and not is_complete(folder(project, "r", 0))

    summary = run_folds("r", [0, 1], LONG, NOTEBOOK)
    assert summary["status"].tolist() == ["done", "skipped"]
    assert pd.read_csv(hist)["epoch"].tolist() == list(range(1, 31))  # epochs count from 1
    log = (folder(project, "r", 0) / "run.log").read_text()
    assert re.search(r"resuming r fold 0 at epoch (\d+)", log)
    assert int(re.search(r"at epoch (\d+)", log).group(1)) >= killed_at - 1


@pytest.mark.slow
def test_ray_backend_writes_the_same_files_as_local(tiny_comp, project):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    tables = []
    try:
        summary = run_folds("ray", [0, 1], TINY, NOTEBOOK, backend="ray", threads=1, on_status=tables.append)
    finally:
        ray.shutdown()
    assert summary["status"].tolist() == ["done", "done"], summary.to_dict("records")
    assert tables[-1][["state", "epoch"]].values.tolist() == [["done", "1/1"], ["done", "1/1"]]  # the local table
    assert any("running" in t["state"].tolist() for t in tables)
    run_folds("loc", [0], TINY, NOTEBOOK)
    local = {p.name for p in folder(project, "loc", 0).iterdir()}
    for k in (0, 1):
        ray_files = {p.name for p in folder(project, "ray", k).iterdir()}
        assert local <= ray_files  # run.log and job.json included
        assert is_complete(folder(project, "ray", k))
        assert "epoch 1/1" in (folder(project, "ray", k) / "run.log").read_text()  # the live log, as locally


def test_kernel_that_cannot_start_is_reported_before_any_fold(tiny_comp, project, monkeypatch, tmp_path):
    spec = tmp_path / "kernels" / "broken" / "kernel.json"
    spec.parent.mkdir(parents=True)
    spec.write_text(json.dumps({"argv": ["/nonexistent/python", "-f", "{connection_file}"], "display_name": "b",
                                "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
    monkeypatch.setattr(kit.notebook, "kernel_name", lambda: "broken")
    with pytest.raises(KitError, match="kernel .* cannot start"):
        run_folds("k", [0], TINY, NOTEBOOK)
    assert not (project / "runs" / "demo" / "k").exists()


def test_a_worker_process_imports_no_torch():
    """`python -m kit.runner` runs beside each fold's kernel, which trains: torch or sklearn in the worker too
    would cost seconds and ~800 MB a fold for nothing (kit.rundir, kit.device, kit.lock import them)."""
    heavy = ("torch", "sklearn", "kit.rundir", "kit.device", "kit.lock", "kit.train")
    code = f"import sys, kit.runner; print([m for m in {heavy!r} if m in sys.modules])"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


def test_gpus_auto_without_a_gpu_says_so_before_any_fold(tiny_comp, project, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(KitError, match=r"--gpus auto: torch sees no CUDA GPU.*leave --gpus out to train on the CPU"):
        run_folds("g", [0], TINY, NOTEBOOK, gpus="auto")
    assert not (project / "runs" / "demo" / "g").exists()
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert kit.runner.gpu_slots("auto") == ["0", "1"] and kit.runner.gpu_slots("1, 3") == ["1", "3"]


def test_status_table_shows_epoch_of_all_best_score_and_eta_from_the_history(tmp_path):
    def job(k, **params):
        return kit.runner.Job(f"e/fold{k}", k, "nb.py", str(tmp_path / f"fold{k}" / "train_fold.ipynb"),
                              {"epochs": 5, "metric": "accuracy", **params}, str(tmp_path))

    todo = [job(0), job(1, metric="log_loss"), job(2), job(3)]
    history = pd.DataFrame({"epoch": [1, 2], "val_loss": [0.9, 0.7], "seconds": [10.0, 20.0]})
    for k, col, values in [(0, "val_accuracy", [0.5, 0.4]), (1, "val_log_loss", [0.9, 0.7]), (2, "val_accuracy", [.8, .9])]:
        (tmp_path / f"fold{k}").mkdir()
        history.assign(**{col: values}).to_csv(tmp_path / f"fold{k}" / "history.csv", index=False)
    done = {2: kit.runner.JobResult("e/fold2", "done", 31.6, "")}
    now = time.time()
    table = kit.runner.status_table(todo, done, {0: now - 40, 1: now - 40, 2: now - 70}).set_index("fold")
    assert table["state"].tolist() == ["running", "running", "done", "queued"]
    assert table["epoch"].tolist() == ["2/5", "2/5", "2/5", ""]
    assert table["best"].tolist() == [0.5, 0.7, 0.9, ""]  # the best of each metric's direction, not the last
    assert table.loc[0, "eta_s"] == 45 and table.loc[2, "eta_s"] == ""  # 3 epochs left at 15 s; none when done
    assert table.loc[2, "elapsed_s"] == 32 and table.loc[3, "elapsed_s"] == ""


def test_a_fresh_start_shows_its_own_epochs_not_the_history_the_old_run_left(tmp_path):
    """--force (resume=False): until the new run writes its history.csv, the old run's is no progress of this one;
    a resume's history is its own."""
    def job(**params):
        return kit.runner.Job("e/fold0", 0, "nb.py", str(tmp_path / "fold0" / "train_fold.ipynb"),
                              {"epochs": 5, "metric": "accuracy", **params}, str(tmp_path))

    (tmp_path / "fold0").mkdir()
    pd.DataFrame({"epoch": [1, 2, 3], "val_accuracy": [0.5, 0.6, 0.7], "seconds": [1.0] * 3}).to_csv(
        tmp_path / "fold0" / "history.csv", index=False)
    later = time.time() + 5  # the fold started after the old history was written
    fresh = kit.runner.status_table([job(resume=False)], {}, {0: later}).iloc[0]
    assert (fresh["epoch"], fresh["best"]) == ("", "")
    resumed = kit.runner.status_table([job()], {}, {0: later}).iloc[0]
    assert (resumed["epoch"], resumed["best"]) == ("3/5", 0.7)
    os.utime(tmp_path / "fold0" / "history.csv", (later + 1, later + 1))  # the new run's first epoch
    assert kit.runner.status_table([job(resume=False)], {}, {0: later}).iloc[0]["epoch"] == "3/5"


def test_threads_default_to_the_cores_shared_by_the_folds_at_once(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert kit.runner.threads_per_job(0, 1)[0] == 8 and kit.runner.threads_per_job(0, 3)[0] == 2
    assert kit.runner.threads_per_job(0, 16)[0] == 1  # never 0
    n, why = kit.runner.threads_per_job(0, 2)
    assert n == 4 and why == "4 torch thread(s) per fold: 8 cores / 2 at once (--threads to change)"
    assert kit.runner.threads_per_job(3, 2) == (3, "3 torch thread(s) per fold (--threads)")
    assert kit.runner.threads_per_job(0, 2, "ray")[0] == 0


def test_one_fold_left_of_a_four_job_run_gets_every_core(tiny_comp, project, fit_tiny, monkeypatch):
    """--jobs 4 with folds 0 and 1 done: the one fold that runs is alone, so it gets all the cores."""
    said = []
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.setattr(kit.runner, "check_kernel", lambda: None)
    fit_tiny("t", 0, tta="none")
    fit_tiny("t", 1, tta="none")
    monkeypatch.setattr(kit.runner, "run_local", lambda todo, *a, **k: {
        j.fold: kit.runner.JobResult(j.name, "done", 0.0, j.output, str(j.params.get("threads"))) for j in todo})
    summary = run_folds("t", [0, 1, 2], {**TINY, "tta": "none"}, NOTEBOOK, jobs=4, say=said.append)
    assert summary["status"].tolist() == ["skipped", "skipped", "done"] and summary["error"][2] == "8"
    assert said == ["1 fold(s) of demo/t to run, 4 at a time; 8 torch thread(s) per fold: 8 cores / 1 at once "
                    "(--threads to change)"]


PROBE = """# %% tags=["parameters"]
comp = "probe"
exp = "p"
fold = 0
runs_dir = "runs"

# %%
import json, os
seen = [name for name in ("leak", "cfg") if name in globals()]
leak = fold
with open(os.path.join(os.environ["KIT_ROOT"], runs_dir, comp, exp, f"fold{fold}", "probe.json"), "w") as f:
    json.dump({"pid": os.getpid(), "seen": seen, "lock": os.environ.get("KIT_FOLD_LOCK")}, f)
assert fold != 1, "boom in fold 1"
"""


def test_a_slot_runs_its_folds_on_one_kernel_reset_between_them_and_a_new_one_after_a_failure(project, tmp_path):
    """What saves a kernel start and torch's import per fold must not let one fold's notebook see another's."""
    nb = tmp_path / "probe.py"
    nb.write_text(PROBE)
    summary = run_folds("p", [0, 1, 2, 3], {}, nb, jobs=1, stagger=0)
    assert summary["status"].tolist() == ["done", "failed", "done", "done"] and "boom in fold 1" in summary["error"][1]
    probes = [json.loads((folder(project, "p", k, "probe") / "probe.json").read_text()) for k in range(4)]
    pids = [p["pid"] for p in probes]
    assert pids[0] == pids[1] and pids[2] == pids[3] and pids[1] != pids[2]  # a new kernel after the failure
    assert [p["seen"] for p in probes] == [[]] * 4  # each notebook starts on an empty namespace
    assert [p["lock"] for p in probes] == [str(folder(project, "p", k, "probe").resolve() / ".lock")
                                           for k in range(4)]
    for k in range(4):
        executed = json.loads((folder(project, "p", k, "probe") / "train_fold.ipynb").read_text())
        assert [c["execution_count"] for c in executed["cells"] if c["cell_type"] == "code"][:2] == [1, 2]
        assert (folder(project, "p", k, "probe") / "run.log").read_text().count("Executing notebook") == 1  # its own
    assert not processes_left(project)


def test_unknown_backend_and_parameter_fail_before_any_fold(tiny_comp, project):
    with pytest.raises(KitError, match="unknown backend 'slurm'"):
        run_folds("u", [0], TINY, NOTEBOOK, backend="slurm")
    with pytest.raises(KitError, match=r"parameter\(s\) \['epoch'\] are not in the parameters cell"):
        run_folds("u", [0], {"epoch": 1}, NOTEBOOK)
    assert not (project / "runs" / "demo" / "u").exists()


# --- one writer per fold; nothing outlives the run (issue 12 item 3) ----------------------------------------

def cli_flags(params: dict) -> list[str]:
    return [f"--{k.replace('_', '-')}={v}" for k, v in params.items()]


@pytest.mark.slow  # runs a fold's notebook; the lock itself is tested fast in test_lock.py
def test_a_fold_held_by_another_run_is_reported_busy_and_released_when_its_holder_dies(tiny_comp, project, capsys):
    from kit.lock import fold_lock

    d = folder(project, "busy", 0)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from kit.lock import fold_lock\n"
                               "with fold_lock(sys.argv[1], 'kit run-folds --exp busy'):\n"
                               "    print('locked', flush=True); time.sleep(120)", str(d)],
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        summary = run_folds("busy", [0, 1], {**TINY, "epochs": 1}, NOTEBOOK, jobs=2, stagger=0)
        assert summary["status"].tolist() == ["busy", "done"]
        error = summary["error"].iloc[0]
        assert f"is being written by pid {holder.pid} on " in error and "(kit run-folds --exp busy)" in error
        assert not (d / "run.log").exists() and not (d / "config.json").exists()  # not touched at all
        with pytest.raises(KitError, match=f"pid {holder.pid}"):
            with fold_lock(d):
                pass
        # training the fold directly (`kit train`, a notebook) takes the same lock
        assert main(["train", "--exp", "busy", "--fold", "0", *cli_flags(TINY)]) == 2
        assert not (d / "config.json").exists()
        assert f"is being written by pid {holder.pid}" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()
    with fold_lock(d):  # a killed holder leaves no stale lock behind
        assert json.loads((d / ".lock").read_text())["pid"] == os.getpid()


@pytest.mark.slow
def test_finished_fold_rerun_with_other_parameters_says_which_and_force_retrains(tiny_comp, project, capsys):
    summary = run_folds("d", [0, 1], TINY, NOTEBOOK, jobs=1, stagger=0)  # fold 1 on fold 0's kernel, reset
    assert summary["status"].tolist() == ["done", "done"], summary.to_dict("records")
    assert "epoch 1/1" in (folder(project, "d", 1) / "run.log").read_text()
    run_folds("alone", [1], TINY, NOTEBOOK)  # on a kernel of its own: the same training, to the last digit
    for name, drop in (("history.csv", ["seconds"]), ("oof.csv", ["checkpoint"])):
        shared, alone = (pd.read_csv(folder(project, e, 1) / name).drop(columns=drop) for e in ("d", "alone"))
        pd.testing.assert_frame_equal(shared, alone)
    same = run_folds("d", [0], {**TINY, "device": "cpu", "threads": 1}, NOTEBOOK)  # speed only: still the same run
    assert same["status"].tolist() == ["skipped"]
    code = main(["run-folds", "--exp", "d", "--folds", "0", "--notebook", str(NOTEBOOK),
                 *cli_flags({**TINY, "model": "test_efficientnet", "lr": 0.01})])
    out, err = capsys.readouterr()
    assert code == 1 and re.search(r"d/fold0 +differs", out)
    assert "model 'test_resnet' -> 'test_efficientnet'" in err and "lr 0.003 -> 0.01" in err and "--force" in err
    assert json.loads((folder(project, "d", 0) / "config.json").read_text())["model"] == "test_resnet"

    # fold 0 retrained with other parameters: fold 1, trained with the old ones, is reported (issue 15)
    assert main(["run-folds", "--exp", "d", "--folds", "0", "--notebook", str(NOTEBOOK), "--force",
                 *cli_flags({**TINY, "model": "test_efficientnet", "lr": 0.01})]) == 1
    out, err = capsys.readouterr()
    assert re.search(r"d/fold0 +done", out) and re.search(r"d/fold1 +stale", out)
    assert "fold1 was trained with other parameters than this run's folds 0" in err
    assert "model 'test_resnet' -> 'test_efficientnet'" in err and "kit blend refuses it" in err
    d = folder(project, "d", 0)
    assert json.loads((d / "config.json").read_text())["model"] == "test_efficientnet"
    executed = json.loads((d / "train_fold.ipynb").read_text())
    injected = next(c for c in executed["cells"] if "injected-parameters" in c["metadata"].get("tags", []))
    assert "resume = False" in "".join(injected["source"])  # afresh: the training side clears the old run
    assert "resuming" not in (d / "run.log").read_text()


@pytest.mark.slow
def test_killing_run_folds_leaves_no_worker_or_kernel_and_a_rerun_finishes(tiny_comp, project):
    """SIGKILL (and once SIGTERM) of `kit run-folds` at 6 points, from start-up to mid-training with both
    folds' kernels alive: each time, within seconds no process of the run is left (workers and kernels
    die with their parent), and once a second run-folds on the same folds is refused as busy."""
    params = {**TINY, "epochs": 8}
    cmd = [sys.executable, "-m", "kit.cli", "run-folds", "--exp", "k", "--folds", "0,1", "--jobs", "2",
           "--stagger", "0", "--force", "--notebook", str(NOTEBOOK), *cli_flags(params)]
    kernels = lambda: [p for p in processes_of(project) if "ipykernel_launcher" in p]  # noqa: E731
    workers = lambda: [p for p in processes_of(project) if "kit.runner" in p]  # noqa: E731
    history = lambda: any((folder(project, "k", k) / "history.csv").is_file() for k in (0, 1))  # noqa: E731
    stages = [(lambda: True, 1.5, signal.SIGKILL),  # start-up: kernel check
              (lambda: workers(), 1.0, signal.SIGKILL),
              (lambda: workers() and kernels(), 1.5, signal.SIGKILL),  # a worker's kernel starting
              (lambda: len(kernels()) == 2, 0.5, signal.SIGTERM),
              (history, 0.3, signal.SIGKILL),  # mid-training
              (lambda: len(kernels()) == 2, 2.0, signal.SIGKILL)]
    rng = random.Random(0)
    alive_at_kill, refused = [], False
    for ready, jitter, sig in stages:
        proc = subprocess.Popen(cmd, cwd=project, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        deadline = time.time() + 120
        while not ready() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(rng.uniform(0, jitter))
        if not refused and len(kernels()) == 2:  # a second run on the same experiment while this one trains
            second = run_folds("k", [0, 1], params, NOTEBOOK)
            assert second["status"].tolist() == ["busy", "busy"], second.to_dict("records")
            assert f"pid {proc.pid} " in second["error"].iloc[0]
            refused = True
        alive_at_kill.append(len(kernels()))
        proc.send_signal(sig)
        proc.wait()
        left = processes_left(project)
        assert not left, f"after {sig.name}: {left}"
    assert refused and sum(n > 0 for n in alive_at_kill) >= 3, alive_at_kill  # most kills hit running kernels
    summary = run_folds("k", [0, 1], params, NOTEBOOK, jobs=2, stagger=0)
    assert set(summary["status"]) <= {"done", "skipped"}, summary.to_dict("records")
    assert all(is_complete(folder(project, "k", k)) for k in (0, 1))
    assert pd.read_csv(folder(project, "k", 0) / "history.csv")["epoch"].tolist() == list(range(1, 9))
    assert not processes_of(project)



def test_an_experiment_of_another_competition_of_the_same_name_is_refused_before_any_fold(project, capsys):
    """runs/flowers/r18 trained on another 'flowers' (another root, other folds): run-folds refuses it before any
    kernel starts, and writes nothing there."""
    from kit.competition import load_competition
    from kit.demo import build_demo
    from kit.folds import folds_path, make_folds, write_folds
    from kit.io import write_json

    build_demo("data", name="flowers", n=60, size=16)
    comp = load_competition("flowers")
    write_folds(make_folds(comp, 2), folds_path(comp))
    theirs = folder(project, "r18", 0, "flowers")
    theirs.mkdir(parents=True)
    write_json({"competition": "/elsewhere/flowers", "folds_hash": "0123"}, theirs / "config.json")
    before = sorted(p.name for p in theirs.iterdir())
    with pytest.raises(KitError, match=r"runs/flowers/r18/fold0 holds a run of another competition, /elsewhere/"
                                       r"flowers .*both are named 'flowers'"):
        run_folds("r18", [0, 1], {**TINY, "comp": "flowers"}, NOTEBOOK)
    assert sorted(p.name for p in theirs.iterdir()) == before and not folder(project, "r18", 1, "flowers").exists()
