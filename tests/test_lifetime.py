"""Children that die with their parent (kit.lifetime): a SIGKILLed parent runs no cleanup, so the child must end
by itself; `python -m kit.lifetime <module>` runs a module bound so (the kernels' launcher)."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

PROBE = "import json, sys; print(json.dumps({'name': __name__, 'argv': sys.argv[1:]}), flush=True)\n"
SLEEPER = "import time; print('armed', flush=True); time.sleep(60)\n"


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def child_code(platform: str, parent: str) -> str:
    """A child that binds itself to `parent` (a Python expression for a pid) as if on `platform`: 'darwin' takes
    the polling thread used where prctl is missing."""
    return (f"import os, sys, time; sys.platform = {platform!r}\n"
            "from kit.lifetime import die_with_parent\n"
            f"die_with_parent({parent}); print('armed', flush=True); time.sleep(60)")


@pytest.mark.parametrize("how", ["linux", "darwin", "launcher"])
def test_a_bound_child_dies_when_its_parent_is_killed(how, tmp_path):
    (tmp_path / "sleeper.py").write_text(SLEEPER)
    child = ([sys.executable, "-m", "kit.lifetime", "sleeper"] if how == "launcher" else
             [sys.executable, "-c", child_code(how, "int(sys.argv[1])"), "{parent}"])
    parent = ("import os, subprocess, sys\n"
              f"c = subprocess.Popen([a.format(parent=os.getpid()) for a in {child!r}], stdout=subprocess.PIPE, "
              "text=True)\n"
              "c.stdout.readline(); print(c.pid, flush=True); __import__('time').sleep(60)")
    env = {k: v for k, v in os.environ.items() if k not in ("JPY_PARENT_PID", "KIT_PARENT_PID")}
    proc = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True, cwd=tmp_path, env=env,
                            start_new_session=True)
    try:
        pid = int(proc.stdout.readline())
        assert alive(pid)
        proc.kill()  # SIGKILL: the parent runs no code that could end its child
        proc.wait()
        deadline = time.time() + 3
        while alive(pid) and time.time() < deadline:
            time.sleep(0.05)
        assert not alive(pid)
    finally:
        with contextlib.suppress(ProcessLookupError):  # the child is in the parent's process group
            os.killpg(proc.pid, signal.SIGKILL)
        proc.stdout.close()


@pytest.mark.parametrize("platform", ["linux", "darwin"])
def test_a_parent_gone_before_the_binding_ends_the_child_at_once(platform):
    """Passed a pid that is not (any more) its parent, as when the parent died before the child armed the signal:
    the child exits, it does not run on adopted by init."""
    run = subprocess.run([sys.executable, "-c", child_code(platform, "os.getpid()")], capture_output=True, text=True,
                         timeout=60)
    assert (run.returncode, run.stdout) == (1, "")


def launch(tmp_path, env: dict, *args) -> subprocess.CompletedProcess:
    (tmp_path / "probe.py").write_text(PROBE)
    base = {k: v for k, v in os.environ.items() if k not in ("JPY_PARENT_PID", "KIT_PARENT_PID")}
    return subprocess.run([sys.executable, "-m", "kit.lifetime", "probe", *args], cwd=tmp_path, env={**base, **env},
                          capture_output=True, text=True, timeout=60)


def test_the_launcher_runs_the_module_as_main_with_its_arguments(tmp_path):
    run = launch(tmp_path, {}, "-f", "conn.json")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == {"name": "__main__", "argv": ["-f", "conn.json"]}


@pytest.mark.parametrize("env, runs", [
    ({"JPY_PARENT_PID": "{other}"}, False),  # jupyter_client names the worker that started the kernel
    ({"KIT_PARENT_PID": "{other}"}, False),
    ({"JPY_PARENT_PID": "{me}", "KIT_PARENT_PID": "{other}"}, True),  # JPY_PARENT_PID first
    ({}, True),  # neither: the process that started it
])
def test_the_launcher_binds_the_module_to_the_pid_its_environment_names(tmp_path, env, runs):
    """Bound to another pid than its real parent's, the launcher exits before the module runs: it took that pid."""
    pids = {"me": str(os.getpid()), "other": str(os.getppid())}  # the launcher's parent is this test process
    run = launch(tmp_path, {k: v.format(**pids) for k, v in env.items()})
    assert (run.returncode, bool(run.stdout)) == ((0, True) if runs else (1, False)), run.stderr
