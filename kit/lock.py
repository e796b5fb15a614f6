"""One writer per fold folder: fold<k>/.lock, held with flock for as long as a run writes the folder.

The kernel drops a flock when its holder dies (SIGKILL included), so a crash cannot leave a fold locked.
The lock file names its holder (pid, host, command, start time) for the message the next writer sees.
is_held tells whether a fold is being written without taking the lock (kit board).
It is never deleted: a process that deleted it could race another into locking two different files.
"""

from __future__ import annotations

import fcntl  # POSIX only, as the rest of the runner (process groups, parent-death signals)
import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from . import KitError
from .rundir import LOCK

# set by the runner for its worker and the worker's kernel: "this process's run already holds this lock"
HELD_ENV = "KIT_FOLD_LOCK"


class FoldBusy(KitError):
    """Another live process holds the fold's lock."""


def lock_path(folder: str | Path) -> Path:
    return Path(folder).resolve() / LOCK


@contextmanager
def fold_lock(folder: str | Path, command: str = "") -> Iterator[Path]:
    """Hold `folder`/.lock for the block, or raise FoldBusy naming its holder (never waits).

    Inside a run that already holds it (the runner's worker and kernel: HELD_ENV), a no-op.
    """
    path = lock_path(folder)
    if os.environ.get(HELD_ENV) == str(path):
        yield path
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FoldBusy(f"{path.parent} is being written by {holder(path)}; wait for it to finish or stop "
                           "that process (a killed process releases the lock at once)") from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "command": command or " ".join(sys.argv),
                                 "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode())
        yield path
    finally:
        os.close(fd)  # releases the flock


def is_held(folder: str | Path) -> bool:
    """Whether a live process holds `folder`/.lock, read from /proc/locks rather than by trying the lock: a
    try would, for its instant, make a run that starts then fail as busy.

    Matched on the inode alone: on overlayfs stat() gives the overlay's device, /proc/locks the real one.
    False where there is no lock file or no /proc/locks (not Linux). A waiter's line ("-> FLOCK") holds nothing.
    """
    try:
        inode, locks = os.stat(lock_path(folder)).st_ino, Path("/proc/locks").read_text()
    except OSError:
        return False
    # "1: FLOCK  ADVISORY  WRITE 4242 00:2e:1234 0 EOF": the sixth field is major:minor:inode
    return any(len(f := line.split()) > 5 and f[1] == "FLOCK" and f[5].rsplit(":", 1)[-1] == str(inode)
               for line in locks.splitlines())


def holder(path: Path) -> str:
    try:
        h = json.loads(path.read_text())
        return f"pid {h['pid']} on {h['host']} since {h['since']} ({h['command']})"
    except (OSError, ValueError, KeyError, TypeError):  # the holder is between its lock and its write
        return "another process"
