"""Child processes that die with their parent: a fold worker with `kit run-folds`, a kernel with its worker.

A SIGKILL or SIGTERM of the parent runs no cleanup code, so the child must notice by itself: on Linux
the kernel delivers a parent-death signal (prctl PR_SET_PDEATHSIG); elsewhere a daemon thread polls
the parent pid (what ipykernel's own ParentPollerUnix does, which starts only after the kernel's
imports, too late for a kill during start-up).

    python -m kit.lifetime <module> [args...]   runs <module> as __main__ bound to the caller's life
"""

from __future__ import annotations

import ctypes
import os
import runpy
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def die_with_parent(parent_pid: int) -> None:
    """Exit as soon as `parent_pid` (the process that started this one) is gone.

    parent_pid is passed in, not read here: if the parent already died before this call, getppid()
    would name the process that adopted us and we would wait on the wrong one.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    else:
        threading.Thread(target=_poll_parent, args=(parent_pid,), daemon=True, name="kit-parent-poller").start()
    if os.getppid() != parent_pid:  # died before the signal was armed
        os._exit(1)


def _poll_parent(parent_pid: int, every: float = 0.5) -> None:
    while os.getppid() == parent_pid:
        time.sleep(every)
    os._exit(1)


def main() -> None:
    """Kernel launcher: jupyter_client puts the worker's pid in JPY_PARENT_PID."""
    module, *args = sys.argv[1:]
    die_with_parent(int(os.environ.get("JPY_PARENT_PID") or os.environ.get("KIT_PARENT_PID") or os.getppid()))
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
