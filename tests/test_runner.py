"""The fold runner: parallel worker processes, failures, resume after a kill, Ray, preflight checks."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import kit.runner
from kit import KitError
from kit.cli import main
from kit.runner import run_folds
from kit.train import is_complete

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "train_fold.py"
TINY = {"model": "test_resnet", "img_size": 16, "epochs": 1, "batch_size": 32, "tta": "none"}
FILES = {"best.pt", "last.pt", "history.csv", "oof.csv", "config.json", "train_fold.ipynb", "run.log", "job.json"}


def folder(project, exp, k):
    return project / "runs" / exp / f"fold{k}"


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
    nb = NOTEBOOK.read_text().replace("# %%\nfrom kit.config", '# %%\nassert fold != 1, "boom in fold 1"\n\n# %%\nfrom kit.config', 1)
    bad = tmp_path / "notebooks" / "train_fold.py"
    bad.write_text(nb)
    code = main(["run-folds", "--exp", "f", "--folds", "0,1", "--notebook", str(bad), "--jobs", "2", "--stagger", "0",
                 *sum([[f"--{k.replace('_', '-')}", str(v)] for k, v in TINY.items()], [])])
    out, err = capsys.readouterr()
    assert code == 1
    assert is_complete(folder(project, "f", 0))
    assert re.search(r"f/fold1 +failed", out) and "boom in fold 1" in err and "fold1/train_fold.ipynb" in err


@pytest.mark.slow
def test_rerun_skips_finished_folds_and_resumes_a_killed_one(tiny_comp, project):
    run_folds("r", [1], TINY, NOTEBOOK)  # fold 1 finished earlier
    params = [f"--{k.replace('_', '-')}={v}" for k, v in {**TINY, "epochs": 30, "img_size": 32}.items()]
    proc = subprocess.Popen([sys.executable, "-m", "kit.cli", "run-folds", "--exp", "r", "--folds", "0",
                             "--notebook", str(NOTEBOOK), *params], cwd=project, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ})
    hist = folder(project, "r", 0) / "history.csv"
    deadline = time.time() + 240
    while time.time() < deadline and not (hist.is_file() and len(pd.read_csv(hist)) >= 2):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the runner, its worker and the kernel, mid-training
    proc.wait()
    killed_at = len(pd.read_csv(hist))
    assert 2 <= killed_at < 30 and not is_complete(folder(project, "r", 0))

    summary = run_folds("r", [0, 1], {**TINY, "epochs": 30, "img_size": 32}, NOTEBOOK)
    assert summary["status"].tolist() == ["done", "skipped"]
    assert pd.read_csv(hist)["epoch"].tolist() == list(range(30))
    log = (folder(project, "r", 0) / "run.log").read_text()
    assert re.search(r"resuming r fold 0 at epoch (\d+)", log)
    assert int(re.search(r"at epoch (\d+)", log).group(1)) >= killed_at - 1


@pytest.mark.slow
def test_ray_backend_writes_the_same_files_as_local(tiny_comp, project):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        summary = run_folds("ray", [0, 1], TINY, NOTEBOOK, backend="ray", threads=1)
    finally:
        ray.shutdown()
    assert summary["status"].tolist() == ["done", "done"], summary.to_dict("records")
    run_folds("loc", [0], TINY, NOTEBOOK)
    local = {p.name for p in folder(project, "loc", 0).iterdir()}
    for k in (0, 1):
        ray_files = {p.name for p in folder(project, "ray", k).iterdir()}
        assert local - {"run.log", "job.json"} <= ray_files  # the worker log is the local backend's own
        assert is_complete(folder(project, "ray", k))


def test_kernel_that_cannot_start_is_reported_before_any_fold(tiny_comp, project, monkeypatch, tmp_path):
    spec = tmp_path / "kernels" / "broken" / "kernel.json"
    spec.parent.mkdir(parents=True)
    spec.write_text(json.dumps({"argv": ["/nonexistent/python", "-f", "{connection_file}"], "display_name": "b",
                                "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
    monkeypatch.setattr(kit.runner, "kernel_name", lambda: "broken")
    with pytest.raises(KitError, match="kernel .* cannot start"):
        run_folds("k", [0], TINY, NOTEBOOK)
    assert not (project / "runs" / "k").exists()


def test_unknown_backend_and_parameter_fail_before_any_fold(tiny_comp, project):
    with pytest.raises(KitError, match="unknown backend 'slurm'"):
        run_folds("u", [0], TINY, NOTEBOOK, backend="slurm")
    with pytest.raises(KitError, match=r"parameter\(s\) \['epoch'\] are not in the parameters cell"):
        run_folds("u", [0], {"epoch": 1}, NOTEBOOK)
    assert not (project / "runs" / "u").exists()
