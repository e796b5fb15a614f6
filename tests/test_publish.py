"""The bundle on Kaggle: the metadata the `kaggle` command reads, and --push through a stand-in `kaggle` on PATH
that records its arguments (the service cannot be reached here)."""

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from kit import KitError
from kit.publish import check_comp, ids, push, write_metadata

STAND_IN = """#!{python}
import json, os, sys
log = os.path.join(os.path.dirname(os.path.abspath(__file__)), "calls.jsonl")
with open(log, "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
created = os.path.join(os.path.dirname(log), "created")
if sys.argv[1:3] == ["datasets", "status"]:
    if not os.path.exists(created):
        sys.exit("404 - Not Found")
    print("Warning: Your Kaggle API key is readable by other users on this system!")
    print(os.environ.get("FAKE_KAGGLE_STATUS", "ready"))
elif sys.argv[1:3] == ["datasets", "create"]:
    open(created, "w").close()
"""


@pytest.fixture
def fake_kaggle(tmp_path, monkeypatch):
    """A `kaggle` on PATH: records each call's arguments in calls.jsonl; `datasets status` fails until `datasets
    create` has run, then prints $FAKE_KAGGLE_STATUS (ready)."""
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    exe = bin_dir / "kaggle"
    exe.write_text(STAND_IN.format(python=sys.executable))
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

    def calls():
        log = bin_dir / "calls.jsonl"
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    return calls


def test_metadata_lets_kaggle_upload_the_bundle_and_push_its_notebook(tmp_path):
    (tmp_path / "kaggle_infer.ipynb").write_text("{}")
    d, k = write_metadata(tmp_path, "plant-pathology-2020-fgvc7", "ann")
    dataset, kernel = json.loads(d.read_text()), json.loads(k.read_text())
    assert dataset["id"] == "ann/plant-pathology-2020-fgvc7-kit-bundle" and dataset["licenses"] == [{"name": "other"}]
    assert 6 <= len(dataset["title"]) <= 50 and dataset["title"] == dataset["id"].split("/")[1]
    assert kernel["id"] == "ann/plant-pathology-2020-fgvc7-kit-infer"
    assert kernel["title"] == "plant-pathology-2020-fgvc7-kit-infer"
    assert (tmp_path / kernel["code_file"]).is_file() and kernel["kernel_type"] == "notebook"
    assert kernel["language"] == "python" and kernel["is_private"] is True
    assert kernel["enable_internet"] is False  # a code competition's rule; kaggle's default is on
    assert kernel["dataset_sources"] == [dataset["id"]]
    assert kernel["competition_sources"] == ["plant-pathology-2020-fgvc7"]


def test_a_long_competition_name_keeps_slugs_within_kaggle_s_50_characters():
    comp = "rsna-2024-lumbar-spine-degenerative-classification"  # 50 characters
    dataset, kernel = ids(comp, "ann")
    assert all(len(i.split("/")[1]) <= 50 and not i.split("/")[1].startswith("-") for i in (dataset, kernel))
    assert dataset.startswith("ann/rsna-2024-lumbar-spine-degenerative-c") and dataset.endswith("-kit-bundle")


@pytest.mark.parametrize("comp", ["../x", "data/demo", "My Comp", "-x", ""])
def test_a_competition_name_that_is_not_a_kaggle_slug_is_refused(comp):
    with pytest.raises(KitError, match="is not a Kaggle competition name; give the name in the competition's URL"):
        check_comp(comp)


def test_push_creates_the_dataset_then_versions_it_and_pushes_the_kernel(tmp_path, fake_kaggle):
    b = str(tmp_path)
    assert push(tmp_path, "comp-x", "ann", poll_s=0) == "ann/comp-x-kit-infer"
    assert fake_kaggle() == [["datasets", "status", "ann/comp-x-kit-bundle"],
                             ["datasets", "create", "-p", b, "--dir-mode", "zip"],
                             ["datasets", "status", "ann/comp-x-kit-bundle"],
                             ["kernels", "push", "-p", b]]
    push(tmp_path, "comp-x", "ann", poll_s=0)  # it exists now: a new version
    assert fake_kaggle()[4:] == [["datasets", "status", "ann/comp-x-kit-bundle"],
                                 ["datasets", "version", "-p", b, "-m", "kit package", "--dir-mode", "zip"],
                                 ["datasets", "status", "ann/comp-x-kit-bundle"],
                                 ["kernels", "push", "-p", b]]


def test_a_dataset_kaggle_could_not_process_stops_before_the_kernel(tmp_path, fake_kaggle, monkeypatch):
    monkeypatch.setenv("FAKE_KAGGLE_STATUS", "error")
    with pytest.raises(KitError, match=r"kit-bundle is not ready on Kaggle \(error\); the notebook was not pushed"):
        push(tmp_path, "comp-x", "ann", poll_s=0)
    assert ["kernels", "push", "-p", str(tmp_path)] not in fake_kaggle()


def test_push_without_the_kaggle_command_or_a_user_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no kaggle here
    with pytest.raises(KitError, match="runs the `kaggle` command, which is not on PATH: pip install kaggle"):
        push(tmp_path, "comp-x", "ann")
    (tmp_path / "kaggle").write_text("#!/bin/sh\n")
    (tmp_path / "kaggle").chmod(0o755)
    with pytest.raises(KitError, match="--push needs your Kaggle user name .* --kaggle-user NAME or set KAGGLE_USER"):
        push(tmp_path, "comp-x", "")


def test_a_failing_kaggle_call_is_a_kit_error_with_its_output(tmp_path, monkeypatch):
    exe = tmp_path / "kaggle"
    exe.write_text("#!/bin/sh\necho '401 - Unauthorized' >&2\nexit 1\n")
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(KitError, match=r"`kaggle datasets create -p .*` failed \(exit 1\):\n401 - Unauthorized"):
        push(Path(tmp_path), "comp-x", "ann")
