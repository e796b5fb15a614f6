import os

import pandas as pd
import pytest

from kit.io import atomic_path, write_csv


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
