import builtins
import errno
import os
import re
import tempfile

import pandas as pd
import pytest
import torch

import kit.io
from kit import KitError
from kit.io import atomic_path, read_json, save_torch, write_csv, write_json


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    p = tmp_path / "a.csv"
    write_csv(pd.DataFrame({"x": [1]}), p)
    with pytest.raises(RuntimeError):
        with atomic_path(p) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert pd.read_csv(p)["x"].tolist() == [1]
    assert [f.name for f in tmp_path.iterdir()] == ["a.csv"]


def test_written_files_follow_the_umask_not_mkstemp_0600(tmp_path):
    old = os.umask(0o022)
    try:
        write_csv(pd.DataFrame({"x": [1]}), tmp_path / "b.csv")
    finally:
        os.umask(old)
    assert (tmp_path / "b.csv").stat().st_mode & 0o777 == 0o644


def leftovers(folder):
    return sorted(f.name for f in folder.iterdir() if f.name.endswith(".tmp"))


def real_open_to_dev_full(monkeypatch):
    """Writes kit.io opens for writing go to /dev/full: the kernel's own ENOSPC, through torch's writer."""
    def to_full(file, mode="r", *args, **kwargs):
        return builtins.open("/dev/full" if "w" in mode else file, mode, *args, **kwargs)
    monkeypatch.setattr(kit.io, "open", to_full, raising=False)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_disk_full_during_torch_save_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / "best.pt"
    save_torch({"epoch": 1}, path)
    real_open_to_dev_full(monkeypatch)
    with pytest.raises(KitError) as e:
        save_torch({"w": torch.zeros(100_000)}, path)
    message = str(e.value)
    assert str(path) in message and "the disk is full" in message and "Errno 28" in message
    assert "GB free there" in message and "runs_dir" in message
    assert torch.load(path, weights_only=True) == {"epoch": 1} and leftovers(tmp_path) == []


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_disk_full_during_a_csv_write_is_a_kit_error(tmp_path, monkeypatch):
    real = pd.DataFrame.to_csv
    monkeypatch.setattr(pd.DataFrame, "to_csv", lambda self, path, **kw: real(self, "/dev/full", **kw))
    with pytest.raises(KitError, match=r"cannot write .*history.csv: the disk is full"):
        write_csv(pd.DataFrame({"x": range(100_000)}), tmp_path / "history.csv")
    assert leftovers(tmp_path) == []


def test_torch_stream_error_from_a_full_disk_is_a_kit_error(tmp_path, monkeypatch):
    """What torch.save says when its C++ stream meets a full disk (older torch, or given a path)."""
    def fails(obj, f):
        raise RuntimeError("basic_ios::clear: iostream error")
    monkeypatch.setattr(torch, "save", fails)
    with pytest.raises(KitError, match=r"cannot write .*last.pt: torch.save failed \(basic_ios::clear: iostream "
                                       r"error\), which is a full disk as a rule .*Fix: free space"):
        save_torch({}, tmp_path / "last.pt")
    assert leftovers(tmp_path) == [] and not (tmp_path / "last.pt").exists()


def test_other_torch_errors_are_not_called_a_full_disk(tmp_path, monkeypatch):
    monkeypatch.setattr(torch, "save", lambda obj, f: (_ for _ in ()).throw(RuntimeError("some bug")))
    with pytest.raises(RuntimeError, match="some bug"):
        save_torch({}, tmp_path / "last.pt")
    assert leftovers(tmp_path) == []


# Tests run as root here, where a chmod 0o555 folder does not stop writes: the read-only folder is
# simulated by the errors the OS raises for it (EROFS on a read-only mount, EACCES for a folder of another user).
@pytest.mark.parametrize("err,meaning", [
    (OSError(errno.EROFS, "Read-only file system"), "the file system is read-only"),
    (PermissionError(errno.EACCES, "Permission denied"), "permission denied"),
])
def test_read_only_runs_folder_is_a_kit_error_with_the_fix(tmp_path, monkeypatch, err, meaning):
    def refuses(*args, **kwargs):
        raise err
    monkeypatch.setattr(tempfile, "mkstemp", refuses)
    with pytest.raises(KitError) as e:
        write_json({"a": 1}, tmp_path / "runs" / "config.json")
    assert str(e.value).startswith(f"cannot write {tmp_path / 'runs' / 'config.json'}: {meaning}")
    assert "set runs_dir (or the command's output folder) to a folder you can write" in str(e.value)


def test_read_only_during_the_rename_still_cleans_the_temp_file(tmp_path, monkeypatch):
    def refuses(src, dst):
        raise OSError(errno.EROFS, "Read-only file system")
    monkeypatch.setattr(os, "replace", refuses)
    with pytest.raises(KitError, match="read-only"):
        write_json({"a": 1}, tmp_path / "config.json")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a 0o555 folder anyway")
def test_a_real_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(KitError, match="permission denied"):
            write_json({"a": 1}, folder / "config.json")
    finally:
        folder.chmod(0o755)


def test_other_os_errors_stay_what_they_are(tmp_path):
    with pytest.raises(OSError) as e:
        write_json({}, tmp_path / ("x" * 300))  # longer than any file system allows a name
    assert e.value.errno == errno.ENAMETOOLONG and not isinstance(e.value, KitError)


@pytest.mark.parametrize("content", [b'{"kit_version": "0.1.0", "folds_', b"", b"\xff\xfe\x00garbage"])
def test_truncated_json_names_the_file_and_the_fix(tmp_path, content):
    path = tmp_path / "config.json"
    path.write_bytes(content)
    with pytest.raises(KitError, match=rf"{re.escape(str(path))} is truncated or not JSON .*delete it .*--force"):
        read_json(path)


def test_missing_json_is_still_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_json(tmp_path / "nothing.json")


def test_load_torch_refuses_truncated_and_foreign_files_with_the_name(tmp_path):
    path = tmp_path / "last.pt"
    torch.save({"model": {"w": torch.randn(200, 100)}, "epoch": 3}, path)
    assert kit.io.load_torch(path)["epoch"] == 3
    data = path.read_bytes()
    # cut in the zip directory, inside a tensor record, inside the pickle; nothing at all; not a checkpoint
    for content in (data[:-30], data[:len(data) // 2], data[:100], b"", b"garbage" * 50):
        path.write_bytes(content)
        with pytest.raises(KitError, match=rf"{re.escape(str(path))} cannot be loaded: truncated, corrupt .*Fix: "
                                           "start afresh"):
            kit.io.load_torch(path, "start afresh", map_location="cpu")


def test_load_torch_leaves_other_errors_alone(tmp_path):
    with pytest.raises(FileNotFoundError):
        kit.io.load_torch(tmp_path / "missing.pt")


def test_truncated_last_pt_stops_the_resume_with_the_file_and_the_fix(fit_tiny):
    r = fit_tiny("cut", tta="none")
    last = r.dir / "last.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # killed while the disk filled up
    with pytest.raises(KitError, match=rf"{re.escape(str(last))} cannot be loaded: .*resume=False "
                                       r"\(kit run-folds --comp .* --force\)"):
        fit_tiny("cut", tta="none")
