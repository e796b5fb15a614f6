"""One writer per fold folder (kit.lock): a second writer is refused naming the first, a dead holder leaves no
lock behind, a run's own worker and kernel pass, and whether a fold is held is read without trying the lock."""

import contextlib
import fcntl
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from kit import KitError
from kit.lock import HELD_ENV, FoldBusy, fold_lock, holder, is_held, lock_path

needs_proc_locks = pytest.mark.skipif(not os.path.exists("/proc/locks"), reason="is_held reads /proc/locks (Linux)")


@contextlib.contextmanager
def held_by_another_process(folder: Path, command: str):
    """A live process holding `folder`'s lock for the block, SIGKILLed at its end if the test did not (it starts
    nothing, so nothing outlives the test); yields its Popen."""
    code = ("import sys, time; from kit.lock import fold_lock\n"
            "with fold_lock(sys.argv[1], sys.argv[2]):\n"
            "    print('locked', flush=True); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder), command], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        yield proc
    finally:
        if proc.poll() is None:  # not yet killed by the test
            proc.kill()
        proc.wait()
        proc.stdout.close()


def test_a_second_writer_is_refused_naming_the_holder_and_a_killed_holders_lock_is_not_stuck(tmp_path):
    fold = tmp_path / "runs" / "e" / "fold0"
    with held_by_another_process(fold, "kit run-folds --exp e") as proc:
        with pytest.raises(FoldBusy, match=rf"{fold} is being written by pid {proc.pid} on {socket.gethostname()} "
                                           r"since \S+ \S+ \(kit run-folds --exp e\); wait for it .* or stop"):
            with fold_lock(fold):
                pytest.fail("entered a fold another process holds")
        assert json.loads(lock_path(fold).read_text())["pid"] == proc.pid  # the refused writer wrote nothing
        if os.path.exists("/proc/locks"):
            assert is_held(fold) and is_held(fold)  # asking took nothing
        proc.kill()  # SIGKILL: no cleanup code runs in the holder
        proc.wait()
        assert not is_held(fold)
        with fold_lock(fold, "kit train") as path:
            assert path == fold / ".lock"
            assert json.loads(path.read_text())["pid"] == os.getpid()
            assert json.loads(path.read_text())["command"] == "kit train"


def test_fold_busy_is_a_kit_error_and_the_lock_is_released_when_the_block_ends_or_raises(tmp_path):
    fold = tmp_path / "fold0"
    with fold_lock(fold):
        with pytest.raises(KitError, match=f"pid {os.getpid()} "):  # a second open file: refused in-process too
            with fold_lock(fold):
                pass
    with pytest.raises(ValueError):
        with fold_lock(fold):
            raise ValueError("the run failed")
    with fold_lock(fold):  # released both times
        pass
    assert lock_path(fold).is_file()  # never deleted: a deleting holder could let two writers lock two files


def test_a_run_that_already_holds_the_lock_passes_and_only_for_that_fold(tmp_path, monkeypatch):
    fold, other = tmp_path / "fold0", tmp_path / "fold1"
    with fold_lock(fold), fold_lock(other):  # the run's lock (in this process: a second open file is refused too)
        monkeypatch.setenv(HELD_ENV, str(lock_path(fold)))  # what the runner sets for its worker and kernel
        monkeypatch.chdir(tmp_path)
        with fold_lock("fold0") as path:  # a relative path names the same lock
            assert path == lock_path(fold)
        with pytest.raises(FoldBusy):
            with fold_lock(other):
                pass


@pytest.mark.parametrize("content", ["", "{", '{"pid": 1}', "[]"])
def test_a_lock_file_without_a_full_holder_record_names_another_process(tmp_path, content):
    path = tmp_path / ".lock"
    path.write_text(content)  # the holder is between its lock and its write, or an older kit's file
    assert holder(path) == "another process"


@needs_proc_locks
def test_is_held_sees_a_holder_without_taking_the_lock_and_only_on_its_own_fold(tmp_path):
    fold, other = tmp_path / "fold0", tmp_path / "fold1"
    assert not is_held(fold)  # no lock file yet
    with fold_lock(other):
        pass
    assert not is_held(other)  # a lock file, but no holder
    with fold_lock(fold):
        assert is_held(fold) and not is_held(other)
        assert is_held(fold)  # asking took nothing
    assert not is_held(fold)
    with open(lock_path(fold)) as f:  # a POSIX record lock on the file is not kit's flock
        fcntl.lockf(f, fcntl.LOCK_SH)
        assert not is_held(fold)
