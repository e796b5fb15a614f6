"""The full-data fit: after cross-validation, one model per experiment trained on every training row for the
number of epochs the folds chose (the median of their best epochs), into runs/<comp>/<exp>/full/. It has no
validation rows and no OOF: its worth is the folds' (the blend's TTA and weights are fitted on their OOF), and
the infer step uses fold models, the full-data model, or both (BlendConfig.models).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from . import KitError
from .config import TrainConfig
from .paths import comp_runs, exp_dir

# what the folds' config.json says that is no training parameter of the full fit, or must differ there
NOT_INHERITED = {"fold", "full", "epochs", "resume", "patience", "average_top", "save_top", "tta"}


def cv_epochs(folders: list[Path]) -> int:
    """The epoch count the folds chose: the median of their best checkpoints' epochs (rounded half up)."""
    from .rundir import load_best

    best = [int(load_best(f)["epoch"]) for f in folders]
    return int(np.floor(np.median(best) + 0.5))


def fit_full(comp: str, exp: str, runs_dir: str = "runs", data_dir: str = "data", epochs: int = 0,
             resume: bool = True, **overrides):
    """Train `exp`'s full-data model with the parameters its folds were trained with (fold 0's config.json), for
    `epochs` (0: cv_epochs of its folds). Every fold of folds.csv must be complete: the epoch count is theirs.
    overrides: runtime settings (device, threads, num_workers...)."""
    from .rundir import CONFIG, is_complete, read_config
    from .train import fit_fold

    folder = exp_dir(comp_runs(runs_dir, comp), exp)
    if not (folder / "fold0" / CONFIG).is_file():
        raise KitError(f"{folder} has no trained fold 0: train the experiment's folds first (kit run-folds --comp "
                       f"{comp} --exp {exp})")
    config = read_config(folder / "fold0")
    folders = [folder / f"fold{k}" for k in range(int(config.get("n_folds", 0)))]
    undone = [f.name for f in folders if not is_complete(f)]
    if undone or not folders:
        raise KitError(f"{exp}: fold(s) {undone or 'all'} are not complete; the full fit takes its epoch count from "
                       f"every fold (kit run-folds --comp {comp} --exp {exp})")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    params = {k: v for k, v in config.items() if k in fields and k not in NOT_INHERITED}
    params.update(comp=comp, data_dir=data_dir, runs_dir=runs_dir, exp=exp, **overrides)
    n = epochs or cv_epochs(folders)
    return fit_fold(TrainConfig(**params, full=True, epochs=n, resume=resume, tta="none"))
