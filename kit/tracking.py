"""Optional experiment tracking of one fold: its parameters, a row of metrics per epoch and, at the end, its
history and config files, to MLflow and/or Weights & Biases (TrainConfig.track; 'off' by default). Each
library is imported only when asked for; a missing one stops the fold before it trains, naming the extra.

MLflow: the tracking URI in track_uri, else $MLFLOW_TRACKING_URI, else a local SQLite store,
runs_dir/.mlflow/mlflow.db with its artifacts beside it. The tracking extra installs mlflow-skinny with
SQLAlchemy and Alembic (what skinny needs for a SQL store): MLflow 3 refuses its file store ('./mlruns')
unless MLFLOW_ALLOW_FILE_STORE is set, and the full mlflow package (server, UI) is about six times the
install, which a competitor browsing the store brings in themselves (`pip install mlflow`,
`mlflow ui --backend-store-uri sqlite:///runs/.mlflow/mlflow.db`).
W&B: $WANDB_MODE when set, else offline, so no account or network is needed: runs are written under
runs_dir/.wandb/ ($WANDB_DIR when set) and `wandb sync` uploads them later.

A run is named `<exp>/fold<k>`, in the MLflow experiment / W&B project named after the competition
($WANDB_PROJECT wins), W&B group `<exp>`; metrics are logged with the epoch as their step. A resumed fold
continues its MLflow run (the newest unfinished one of the same fold folder); W&B's offline mode cannot
resume a run, so it starts another run with the same name that logs the remaining epochs.
"""

from __future__ import annotations

import importlib
import logging
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Protocol

from . import KitError
from .paths import resolve

if TYPE_CHECKING:
    from .config import TrainConfig

INSTALL = "pip install 'kaggle-kit[tracking]'"
MLFLOW_DIR = ".mlflow"  # under runs_dir: hidden, like the image cache, so it is never taken for an experiment
WANDB_DIR = ".wandb"
STATUS = ("finished", "failed", "killed")  # how a run ends: returned, raised, interrupted


class Tracker(Protocol):
    def start(self, params: dict, resume: bool) -> None:
        """Open the fold's run (resume: continue the fold's unfinished one where the library can) and record
        its parameters."""

    def log_epoch(self, epoch: int, metrics: dict) -> None:
        """One epoch's numbers, `epoch` as their step."""

    def log_artifact(self, path: Path) -> None:
        """A copy of a file of the fold as it is now."""

    def finish(self, status: str) -> None:
        """Close the run as one of STATUS and leave no process behind."""


def need(module: str, package: str, track: str):
    """`module`, imported now, or a KitError saying what to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise KitError(f"track={track!r} needs the {package} package, which is not installed: {INSTALL} (or "
                       f"pip install {package}), or set track='off'") from None


class Trackers:
    """Every tracker the config names, called in turn; with none (track='off') it does nothing."""

    def __init__(self, trackers: list[Tracker]):
        self.trackers = trackers

    def start(self, params: dict, resume: bool) -> None:
        for t in self.trackers:
            t.start(params, resume)

    def log_epoch(self, epoch: int, metrics: dict) -> None:
        numbers = {k: float(v) for k, v in metrics.items() if k != "epoch"}
        for t in self.trackers:
            t.log_epoch(epoch, numbers)

    def log_artifacts(self, *paths: Path) -> None:
        for t in self.trackers:
            for path in paths:
                t.log_artifact(path)

    def finish(self, status: str) -> None:
        """Every tracker finished even when one fails (W&B's service process must not outlive the fold because
        MLflow's store was locked); the first failure is raised after."""
        errors = []
        for t in self.trackers:
            try:
                t.finish(status)
            except Exception as e:  # noqa: BLE001 - each tracker gets its turn; the first error is raised
                errors.append(e)
        if errors:
            raise errors[0]


def open_trackers(cfg: TrainConfig, out: Path) -> Trackers:
    """The trackers cfg.track names for the fold folder `out`; each library is imported here."""
    kinds = {"mlflow": MLflowTracker, "wandb": WandbTracker}
    names = [] if cfg.track == "off" else cfg.track.split("+")
    return Trackers([kinds[name](cfg, out) for name in names])


@contextmanager
def tracked(cfg: TrainConfig, out: Path, resume: bool, trackers: Trackers | None = None) -> Iterator[Trackers]:
    """The fold's runs, open for the `with` body and closed however it ends: an exception marks them failed,
    a KeyboardInterrupt killed (a later resume continues an MLflow run). trackers: opened before (fit_fold
    opens them before it removes an older run's outputs, so a missing library stops it with nothing lost)."""
    trackers = trackers or open_trackers(cfg, out)
    status = "failed"
    try:
        trackers.start(cfg.to_dict(), resume)  # in the try: a tracker that cannot start closes those that did
        yield trackers
        status = "finished"
    except KeyboardInterrupt:
        status = "killed"
        raise
    finally:
        try:
            trackers.finish(status)
        except Exception as e:  # noqa: BLE001 - closing a run must not hide why training stopped
            if status == "finished":
                raise
            logging.warning(f"tracking: closing the fold's runs as {status} failed too ({type(e).__name__}: {e})")


def project_name(cfg: TrainConfig) -> str:
    """The competition's folder name: comp may be a path or a /kaggle/input/<comp> name."""
    return Path(cfg.comp).name or "kit"


def run_name(cfg: TrainConfig) -> str:
    return f"{cfg.exp}/fold{cfg.fold}"


@contextmanager
def store_lock(store: Path | None) -> Iterator[None]:
    """An exclusive flock on our local store while a fold opens it: folds started together would each run
    MLflow's first database migration on the new SQLite file (4 folds at once: 3 failed with "duplicate column
    name" or "table already exists"). A server (track_uri) or a non-POSIX system takes care of itself."""
    if store is None or os.name != "posix":
        yield
        return
    import fcntl

    with open(store / "store.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class MLflowTracker:
    """MlflowClient calls with an explicit run id, not the fluent API's process-wide active run: two folds in
    one process (tests, a notebook) cannot log into each other's run."""

    def __init__(self, cfg: TrainConfig, out: Path):
        need("mlflow", "mlflow-skinny", cfg.track)
        self.cfg, self.out, self.client, self.run_id = cfg, out, None, ""
        self.uri = cfg.track_uri or os.environ.get("MLFLOW_TRACKING_URI", "")
        self.store = None  # our local store, when no URI is given
        if not self.uri:
            for module in ("sqlalchemy", "alembic"):  # what skinny lacks for a SQL store
                need(module, module, cfg.track)
            self.store = resolve(cfg.runs_dir) / MLFLOW_DIR
            self.uri = f"sqlite:///{self.store / 'mlflow.db'}"

    def experiment_id(self) -> str:
        """The competition's experiment, created when missing (by whichever parallel fold comes first)."""
        from mlflow.exceptions import MlflowException

        name = project_name(self.cfg)
        found = self.client.get_experiment_by_name(name)
        if found is None:
            # the artifacts of our local store beside it; a server's experiment gets the server's default root
            artifacts = (self.store / "artifacts").as_uri() if self.store else None
            try:
                return self.client.create_experiment(name, artifact_location=artifacts)
            except MlflowException:  # created meanwhile by another fold
                found = self.client.get_experiment_by_name(name)
                if found is None:
                    raise
        return found.experiment_id

    def unfinished(self, experiment_id: str):
        """The newest run of this fold folder that did not finish (interrupted, failed or killed), or None."""
        runs = self.client.search_runs([experiment_id], filter_string=f"tags.`kit.fold` = '{self.cfg.fold}'",
                                       order_by=["attributes.start_time DESC"], max_results=1000)
        mine = [r for r in runs if r.data.tags.get("kit.fold_dir") == str(self.out)]
        return mine[0] if mine and mine[0].info.status != "FINISHED" else None

    def start(self, params: dict, resume: bool) -> None:
        from mlflow import MlflowClient
        from mlflow.entities import Param

        if self.store:
            self.store.mkdir(parents=True, exist_ok=True)
        with store_lock(self.store):  # parallel folds: one creates the store's tables and the experiment
            self.client = MlflowClient(self.uri)
            experiment_id = self.experiment_id()
        earlier = self.unfinished(experiment_id) if resume else None
        if earlier is not None:  # its parameters are logged already (MLflow refuses to change one)
            self.run_id = earlier.info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
            return
        tags = {"kit.exp": self.cfg.exp, "kit.fold": str(self.cfg.fold), "kit.fold_dir": str(self.out)}
        self.run_id = self.client.create_run(experiment_id, run_name=run_name(self.cfg), tags=tags).info.run_id
        self.client.log_batch(self.run_id, params=[Param(k, str(v)) for k, v in params.items()])

    def log_epoch(self, epoch: int, metrics: dict) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, epoch) for k, v in metrics.items()])

    def log_artifact(self, path: Path) -> None:
        self.client.log_artifact(self.run_id, str(path))

    def finish(self, status: str) -> None:
        if self.run_id:
            self.client.set_terminated(self.run_id, status.upper())  # FINISHED, FAILED, KILLED


class WandbTracker:
    """One wandb run; wandb's service process is ended with it unless another run of the process is open."""

    def __init__(self, cfg: TrainConfig, out: Path):
        self.wandb = need("wandb", "wandb", cfg.track)
        self.cfg, self.out, self.run = cfg, out, None

    def start(self, params: dict, resume: bool) -> None:
        directory = Path(os.environ.get("WANDB_DIR") or resolve(self.cfg.runs_dir) / WANDB_DIR)
        directory.mkdir(parents=True, exist_ok=True)
        self.run = self.wandb.init(
            mode=os.environ.get("WANDB_MODE") or "offline", dir=str(directory),
            project=None if os.environ.get("WANDB_PROJECT") else project_name(self.cfg),
            group=self.cfg.exp, name=run_name(self.cfg), job_type="train", config=params,
            tags=["resumed"] if resume else None)

    def log_epoch(self, epoch: int, metrics: dict) -> None:
        self.run.log(metrics, step=epoch)

    def log_artifact(self, path: Path) -> None:
        """Copied into the run's folder rather than symlinked (wandb.save's way): a later run of the fold
        rewrites the fold's files before an offline run is synced."""
        copy = Path(self.run.dir) / path.name
        shutil.copy2(path, copy)
        self.run.save(str(copy), base_path=self.run.dir, policy="now")

    def finish(self, status: str) -> None:
        if self.run is not None:
            self.run.finish(exit_code={"finished": 0, "failed": 1, "killed": 130}[status])
            self.run = None
        if self.wandb.run is None:
            self.wandb.teardown()
