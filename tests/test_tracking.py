"""kit.tracking: a fold's parameters, per-epoch metrics and files in a local MLflow store and in W&B offline
run files, read back with MLflow's client and wandb's record format; nothing imported or written when off."""
import importlib
import json
import re
import struct
import sys
from pathlib import Path

import pandas as pd
import psutil
import pytest

import kit.train
from kit import KitError
from kit.config import TrainConfig
from kit.tracking import open_trackers
from kit.train import fit_fold

TINY = dict(model="test_resnet", img_size=16, batch_size=32)


@pytest.fixture(autouse=True)
def tracker_env(monkeypatch, tmp_path):
    """No tracking settings from the shell; wandb's own cache, config and logs inside the test's folder."""
    for name in ("MLFLOW_TRACKING_URI", "WANDB_MODE", "WANDB_DIR", "WANDB_PROJECT", "WANDB_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    for name in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home" / name.lower()))


def mlflow_client(path):
    from mlflow import MlflowClient

    return MlflowClient(f"sqlite:///{path}")


def the_runs(client, experiment="demo"):
    return client.search_runs([client.get_experiment_by_name(experiment).experiment_id])


def steps(client, run, key):
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)]


def test_mlflow_gets_the_parameters_every_epoch_and_the_files_in_a_local_store(tiny_comp, project):
    r = fit_fold(TrainConfig(exp="t", fold=1, epochs=2, lr=1e-3, track="mlflow", **TINY))
    client = mlflow_client(project / "runs/.mlflow/mlflow.db")
    (run,) = the_runs(client)  # the competition's experiment
    assert run.info.run_name == "t/fold1" and run.info.status == "FINISHED"
    assert run.data.params["lr"] == "0.001" and run.data.params["epochs"] == "2" and run.data.params["fold"] == "1"
    history = pd.read_csv(r.dir / "history.csv")
    for key in ("train_loss", "val_loss", "val_accuracy", "lr"):
        logged = steps(client, run, key)
        assert [s for s, _ in logged] == history["epoch"].tolist(), key
        assert [v for _, v in logged] == pytest.approx(history[key].tolist()), key
    assert "epoch" not in run.data.metrics  # the step, not a metric
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"history.csv", "config.json"}
    copy = Path(client.download_artifacts(run.info.run_id, "config.json", str(project / "down")))
    assert json.loads(copy.read_text()) == json.loads((r.dir / "config.json").read_text())
    assert (project / "runs/.mlflow/artifacts").is_dir() and not (project / "mlruns").exists()


def test_mlflow_a_resumed_fold_continues_its_interrupted_run(tiny_comp, project, interrupted_fit):
    cfg = TrainConfig(exp="t", epochs=3, track="mlflow", **TINY)
    interrupted_fit(cfg, 1)  # Ctrl-C as epoch 2 starts
    client = mlflow_client(project / "runs/.mlflow/mlflow.db")
    (run,) = the_runs(client)
    assert run.info.status == "KILLED" and [s for s, _ in steps(client, run, "train_loss")] == [1]
    fit_fold(cfg)
    (run,) = the_runs(client)  # the same run, each epoch logged once
    assert run.info.status == "FINISHED" and [s for s, _ in steps(client, run, "train_loss")] == [1, 2, 3]
    fit_fold(TrainConfig(exp="t", epochs=1, resume=False, track="mlflow", **TINY))  # afresh: a run of its own
    assert len(the_runs(client)) == 2


def test_mlflow_a_given_uri_gets_the_run_and_a_failing_fold_is_marked_failed(tiny_comp, project, monkeypatch):
    def fails(*a, **k):
        raise KitError("boom")

    monkeypatch.setattr(kit.train, "predict_oof", fails)
    db = project / "elsewhere.db"
    with pytest.raises(KitError, match="boom"):
        fit_fold(TrainConfig(exp="t", epochs=1, track="mlflow", track_uri=f"sqlite:///{db}", **TINY))
    (run,) = the_runs(mlflow_client(db))
    assert run.info.status == "FAILED" and run.data.metrics["train_loss"] > 0
    assert not (project / "runs/.mlflow").exists()


def wandb_records(path):
    """The records of a .wandb file: wandb-core (Go) writes them as LevelDB-log chunks of protobuf records and
    wandb no longer ships a Python reader. A 7-byte file header (':W&B', magic, version), then 32 KiB blocks of
    chunks, each with a 7-byte header (crc32, length, type: 1 full, 2 first, 3 middle, 4 last)."""
    from wandb.proto import wandb_internal_pb2

    data, block, head = path.read_bytes(), 32768, 7
    assert data[:4] == b":W&B"
    pos, chunks = head, b""
    while pos + head <= len(data):
        if block - pos % block < head:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + head])
        chunks, pos = chunks + data[pos + head:pos + head + length], pos + head + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunks)
            chunks = b""
            yield record


def wandb_children():
    return [p for p in psutil.Process().children(recursive=True) if "wandb" in p.name()]


def test_wandb_writes_an_offline_run_with_every_epoch_and_leaves_no_process(tiny_comp, project):
    r = fit_fold(TrainConfig(exp="t", fold=2, epochs=2, lr=1e-3, track="mlflow+wandb", **TINY))
    (folder,) = (project / "runs/.wandb/wandb").glob("offline-run-*")  # offline with no WANDB_MODE: no network
    records = list(wandb_records(next(folder.glob("run-*.wandb"))))
    (run,) = [x.run for x in records if x.HasField("run")]
    config = {u.key: json.loads(u.value_json) for u in run.config.update}
    assert (run.display_name, run.run_group, run.project) == ("t/fold2", "t", "demo") and config["lr"] == 1e-3
    rows = [{i.nested_key[0] if i.nested_key else i.key: json.loads(i.value_json) for i in x.history.item}
            for x in records if x.HasField("history")]
    history = pd.read_csv(r.dir / "history.csv")
    assert [row["_step"] for row in rows] == [1, 2]
    assert [row["val_accuracy"] for row in rows] == pytest.approx(history["val_accuracy"].tolist())
    assert [x.exit.exit_code for x in records if x.HasField("exit")] == [0]
    for name in ("history.csv", "config.json"):  # copies, synced with the run later
        assert (folder / "files" / name).read_bytes() == (r.dir / name).read_bytes()
    assert not wandb_children()  # wandb's service ended with the run
    assert len(the_runs(mlflow_client(project / "runs/.mlflow/mlflow.db"))) == 1  # and both trackers got it


def test_off_by_default_imports_no_tracker_and_writes_nothing(tiny_comp, project, monkeypatch):
    for name in ("mlflow", "wandb"):
        monkeypatch.setitem(sys.modules, name, None)  # an import of either now fails
    assert TrainConfig().track == "off"
    fit_fold(TrainConfig(exp="t", epochs=1, **TINY))
    assert [p.name for p in (project / "runs").iterdir() if p.name != ".image_cache"] == ["demo"]  # no .mlflow, .wandb
    assert not [p for p in project.iterdir() if p.name in ("mlruns", "wandb", "mlflow.db")]


@pytest.mark.parametrize("track,missing,package", [("mlflow", "mlflow", "mlflow-skinny"),
                                                   ("mlflow", "sqlalchemy", "sqlalchemy"),
                                                   ("mlflow+wandb", "wandb", "wandb")])
def test_a_missing_library_names_the_extra_to_install_before_anything_is_written(project, monkeypatch, track,
                                                                                 missing, package):
    importlib.import_module("mlflow")  # imported whole first: it registers its SQL stores only with SQLAlchemy there
    monkeypatch.setitem(sys.modules, missing, None)
    message = rf"track='{re.escape(track)}' needs the {package} package.*kaggle-kit\[tracking\]"
    with pytest.raises(KitError, match=message):
        open_trackers(TrainConfig(track=track), project / "runs/t/fold0")
    assert not any((project / "runs").iterdir())


PARALLEL_OPEN = """
import sys
from pathlib import Path
from kit.config import TrainConfig
from kit.tracking import tracked
cfg = TrainConfig(comp="demo", exp="p", fold=int(sys.argv[1]), runs_dir=sys.argv[2], track="mlflow")
out = Path(sys.argv[2]) / "p" / f"fold{sys.argv[1]}"
out.mkdir(parents=True)
with tracked(cfg, out, False) as t:
    t.log_epoch(1, {"train_loss": 1.0})
"""


@pytest.mark.slow
def test_folds_started_together_share_a_new_mlflow_store(tmp_path):
    """Four folds opening the same new SQLite store at once: without the store lock, three died in MLflow's
    first migration ('duplicate column name', 'table already exists')."""
    import subprocess

    runs = tmp_path / "runs"
    procs = [subprocess.Popen([sys.executable, "-c", PARALLEL_OPEN, str(k), str(runs)], stderr=subprocess.PIPE,
                              text=True) for k in range(4)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, errors
    runs_logged = the_runs(mlflow_client(runs / ".mlflow/mlflow.db"))
    assert sorted(r.info.run_name for r in runs_logged) == [f"p/fold{k}" for k in range(4)]
    assert {r.info.status for r in runs_logged} == {"FINISHED"}


class Recorder:
    def __init__(self, fails=False):
        self.fails, self.finished = fails, None

    def start(self, params, resume):
        pass

    def finish(self, status):
        self.finished = status
        if self.fails:
            raise RuntimeError("database is locked")


def test_every_tracker_is_finished_when_one_fails_and_training_errors_are_not_hidden(monkeypatch):
    from kit.tracking import Trackers, tracked

    first, second = Recorder(fails=True), Recorder()
    with pytest.raises(RuntimeError, match="locked"):
        Trackers([first, second]).finish("finished")
    assert second.finished == "finished"  # W&B still closed (and its service process ended)
    monkeypatch.setattr("kit.tracking.open_trackers", lambda cfg, out: Trackers([Recorder(fails=True)]))
    with pytest.raises(KitError, match="out of memory"):  # the training's error, not the tracker's
        with tracked(TrainConfig(), Path("."), False):
            raise KitError("out of memory")


def test_a_forced_rerun_with_a_missing_library_keeps_the_older_run(tiny_comp, project, monkeypatch):
    """fit_fold imports the trackers before a fresh start removes the older run's outputs."""
    first = fit_fold(TrainConfig(exp="t", epochs=1, **TINY))
    best = (first.dir / "best.pt").read_bytes()
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(KitError, match="needs the wandb package"):
        fit_fold(TrainConfig(exp="t", epochs=1, resume=False, track="wandb", **TINY))
    assert (first.dir / "best.pt").read_bytes() == best and (first.dir / "oof.csv").is_file()
