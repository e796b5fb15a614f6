"""One plain config object: its fields are the train notebook's `parameters` cell, the CLI flags and the
README's parameter table.

Each field carries its help, choices and bounds (see `param`); a config is checked against them when it
is built (types, choices, bounds, model and metric names, unknown names refused), so a bad value stops
the run before any fold starts, and it is saved with every run.
"""

from __future__ import annotations

import dataclasses
import operator
import re
import subprocess
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from . import KitError, __version__
from .competition import ORDINAL_TASKS, TASKS


def param(default, help: str = "", *, choices=None, ge=None, gt=None, lt=None, le=None, check=None):
    """A TrainConfig field that carries its own documentation and limits, in the field's metadata
    (`dataclasses.fields(TrainConfig)`): the one place the notebook's parameters cell and README's table
    (`parameters_cell`, `parameters_table`, tools/sync_train_params.py), the CLI flags (kit.cli) and
    `TrainConfig.validate` read them from.

    help: one line saying what the parameter means; `describe` adds the choices and bounds. No "=" in it:
        papermill reads a parameters-cell line with two as no parameter.
    choices: the allowed values, or a function returning them (registries that import torch or
        albumentations are read only when a config is validated, not when the CLI starts).
    ge, gt, lt, le: at least / greater than / less than / at most (annotated_types' names).
    check: for open sets (model, metric, device, names): a function of the value that raises
        KitError saying what is allowed.
    Metadata rather than typing.Literal: half the choices are registries filled at import time, and
    bounds need a place of their own anyway; one mechanism for every field.
    """
    limits = dict(choices=choices, ge=ge, gt=gt, lt=lt, le=le, check=check)
    return field(default=default, metadata={"help": help, **{k: v for k, v in limits.items() if v is not None}})


def augment_presets() -> tuple:
    from .augment import PRESETS  # albumentations: imported when a config is validated, not with the CLI

    return tuple(PRESETS)


def check_tta(name: str) -> None:
    from .tta import split

    if name != "auto":
        split(name)


def check_metric(name: str) -> None:
    from .metrics import lookup  # ours by name or any sklearn scorer: no closed list

    lookup(name)


def check_model(name: str) -> None:
    """A kit preset or a timm name (with an optional pretrained tag): caught here, not as each fold's kernel starts."""
    import timm  # train imports it anyway; the CLI only when a config is built

    from .models import resolve_model

    try:
        resolve_model(name)
    except RuntimeError as e:  # timm's "Invalid pretrained tag (x) for arch"
        arch = name.split(".")[0]
        raise KitError(f"{e} Its tags: {timm.list_pretrained(f'{arch}.*')[:8]}, or the bare name {arch!r}") from None


DEVICES = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def check_device(name: str) -> None:
    if not DEVICES.fullmatch(name):
        raise KitError("should be 'auto', 'cpu', 'cuda', 'cuda:<n>' (e.g. 'cuda:1') or 'mps'")


def check_crop_pct(value: float) -> None:
    if 0 < value < 0.5:  # 0.01 would scale the short side of a 224 px crop to 22,400 px
        raise KitError("should be 0 (the model's own) or between 0.5 and 1: the share of the short side kept")


def check_exp(name: str) -> None:
    from .paths import check_name

    check_name("experiment", name)


@dataclass
class TrainConfig:
    # what and where
    comp: str = param("demo", "the competition: a folder under data_dir, an absolute path, or a "
                      "/kaggle/input/<comp> name")
    exp: str = param("exp0", "experiment name: runs/<comp>/<exp>/fold<k>/ (set by the runner)", check=check_exp)
    fold: int = param(0, "the fold of folds.csv trained and validated on (set by the runner)", ge=0)
    data_dir: str = param("data", "the folder that holds the competitions")
    runs_dir: str = param("runs", "the folder that holds the experiments' run folders")
    id_col: str = param("", "train.csv's id column; empty: auto-detect (id, image_id, filename...)")
    label_col: str = param("", "train.csv's label column; empty: auto-detect (label, target, class...)")
    task: str = param("auto", "what is predicted; auto: from train.csv and sample_submission.csv (one label, a "
                      "label list or 0/1 columns per class, a numeric grade with an ordinal metric)",
                      choices=TASKS)
    on_bad_image: str = param("error", "unreadable images: error stops with their list, skip leaves them out",
                              choices=("error", "skip"))
    # model
    model: str = param("test_efficientnet", "any timm name, or a preset effnet_b0..effnet_b7 (Noisy Student "
                       "weights at native 224..600 px; B6 is 528 px)", check=check_model)
    pretrained: bool = param(False, "pretrained weights from the timm/Hugging Face cache")
    weights: str = param("", "local checkpoint file (state_dict, kit or timm checkpoint, .safetensors), for "
                         "internet-off notebooks; a class-count mismatch keeps the backbone and starts a fresh head")
    img_size: int = param(0, "0: the native resolution of the model (224 when unknown)", ge=0)
    resize: str = param("auto", "how an image becomes an img_size square for validation, OOF, test and the none/"
                        "light presets: squash stretches it; crop scales the short side to img_size / crop_pct and "
                        "keeps the centre; letterbox fits the long side and pads; auto: the model's pretrained "
                        "config (timm's crop_mode; crop for most)", choices=("auto", "squash", "crop", "letterbox"))
    crop_pct: float = param(0.0, "resize crop: the share of the short side kept; 0: the model's pretrained "
                            "crop_pct (0.875 when unknown)", ge=0, le=1, check=check_crop_pct)
    ordinal_head: str = param("cumulative", "ordinal (and regression) tasks only, no effect on others: cumulative "
                              "trains K-1 sigmoids P(grade > k) with BCE on the targets [y > k] (CORAL, the "
                              "APTOS/PANDA binned BCE); softmax a softmax over the K grades with cross-entropy",
                              choices=("cumulative", "softmax"))
    # training
    epochs: int = param(5, "training epochs", ge=1)
    batch_size: int = param(64, "images per micro-batch", ge=1)
    accum_steps: int = param(1, "micro-batches per optimizer update; effective batch: batch_size * accum_steps", ge=1)
    lr: float = param(3e-3, "AdamW learning rate (the head's; see backbone_lr_mult)", gt=0)
    backbone_lr_mult: float = param(1.0, "differential LR: backbone at lr * this, head at lr", gt=0)
    freeze_epochs: int = param(0, "head-first fine-tuning: backbone frozen for the first N epochs", ge=0)
    weight_decay: float = param(0.05, "AdamW weight decay; none on biases and norms", ge=0)
    # warmup_epochs >= epochs is allowed: the whole run warms up (1-epoch trial runs keep the default 1)
    warmup_epochs: int = param(1, "warmup of timm's cosine schedule, stepped per update; a run no longer than "
                               "this warms up throughout", ge=0)
    clip_grad: float = param(0.0, "max gradient norm, 0: off", ge=0)
    label_smoothing: float = param(0.1, "label smoothing of the cross-entropy targets", ge=0, lt=1)
    augment: str = param("light", "albumentations preset (mushroom: the mushroom-competition list)",
                         choices=augment_presets)
    mixup: float = param(0.0, "timm's Mixup alpha (soft-target loss), 0: off", ge=0)
    cutmix: float = param(0.0, "timm's CutMix alpha (soft-target loss), 0: off", ge=0)
    mixup_off_epochs: int = param(0, "plain targets for the last N epochs", ge=0)
    distill: str = param("", "knowledge distillation: a blend.json of kit blend whose OOF probabilities (the "
                         "<name>.oof.csv beside it) are mixed into the training rows' targets; single-label tasks, "
                         "no mixup")
    distill_weight: float = param(0.5, "the teacher's share of a training row's target with distill", ge=0, le=1)
    pseudo: str = param("", "pseudo-labels: a blend.json of kit blend whose confident test predictions (the "
                        "<name>.test.csv beside it) join every fold's training side, never its validation; "
                        "single-label tasks, no mixup")
    pseudo_threshold: float = param(0.9, "a test image is pseudo-labelled when the blend's top probability is at "
                                    "least this", gt=0, le=1)
    pseudo_soft: bool = param(False, "train on the blend's probabilities of a pseudo-labelled image, not its top "
                              "class")
    sam: str = param("off", "sharpness-aware minimization (asam: adaptive)", choices=("off", "sam", "asam"))
    sam_rho: float = param(0.05, "ASAM usually wants about 10x the SAM rho", ge=0)
    sam_every: int = param(1, "the two-pass SAM update every N optimizer steps, plain steps between", ge=1)
    ema_decay: float = param(0.0, "EMA of the weights (timm's ModelEmaV3), validated and saved when > 0 "
                             "(e.g. 0.999)", ge=0, lt=1)
    patience: int = param(0, "early stopping after N epochs without improvement, 0: off", ge=0)
    save_top: int = param(1, "keep the best N checkpoints (best.pt the best, then top-<epoch>.pt)", ge=1)
    average_top: int = param(0, "after training, average the weights of the best N checkpoints (save_top must "
                             "keep at least N) into best.pt, BatchNorm statistics recomputed on the training "
                             "images; 0 or 1: off", ge=0)
    keep_last: bool = param(True, "keep last.pt (the training state for a resume) once the fold is finished; False "
                            "deletes it then (a resnet18's is 134 MB): an unfinished fold keeps it and resumes")
    metric: str = param("accuracy", "validation metric: accuracy, log_loss, macro_f1, balanced_accuracy, another "
                        "kit.metrics name, or a scikit-learn scorer name", check=check_metric)
    full: bool = param(False, "the experiment's full-data model: every row of folds.csv trained on (no validation, "
                       "no OOF) for epochs epochs into runs/<comp>/<exp>/full/; kit fit-full sets epochs from the "
                       "folds' best epochs")
    # inference
    tta: str = param("auto", "auto: OOF for every preset and resize mode, the infer step picks the best per "
                     "experiment; or a preset (none, hflip, flips, multiscale, d4), optionally @squash, @crop or "
                     "@letterbox for another resize than the fold's", check=check_tta)
    # runtime
    seed: int = param(42, "seeds the weights' init, and each epoch's batches, augmentations and mixes")
    device: str = param("auto", "auto, cpu, cuda, cuda:<n> (e.g. cuda:1) or mps", check=check_device)
    amp: str = param("auto", "mixed precision: auto is bf16 on CUDA, off on CPU; fp16 uses a GradScaler",
                     choices=("auto", "bf16", "fp16", "off"))
    channels_last: bool = param(True, "NHWC memory layout: faster convolutions on CPU and CUDA")
    torch_compile: bool = param(False, "torch.compile the model")
    resume: bool = param(True, "continue from last.pt when the fold was interrupted (kit run-folds --force "
                         "starts afresh)")
    num_workers: int = param(-1, "loader worker processes; -1: auto (0 on CPU, the cores per GPU up to 8 on CUDA)",
                             ge=-1)
    image_cache: bool = param(True, "keep each decoded image as a .npy under runs_dir/.image_cache/ when no bigger "
                              "than its file: later epochs and folds skip the decode (delete the folder to "
                              "reclaim the disk)")
    threads: int = param(0, "torch intra-op threads, 0: the torch default", ge=0)
    # tracking (kit.tracking)
    track: str = param("off", "log parameters, per-epoch metrics, history and config to MLflow and/or W&B (offline "
                       "unless WANDB_MODE says otherwise); needs the tracking extra",
                       choices=("off", "mlflow", "wandb", "mlflow+wandb"))
    track_uri: str = param("", "MLflow tracking URI; empty: MLFLOW_TRACKING_URI, else a SQLite store under "
                           "runs_dir/.mlflow/")

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Every parameter against its field's metadata, at construction: before any fold starts. All
        problems in one KitError, each naming the parameter, the value and what is allowed."""
        problems = [p for f in fields(self) if (p := problem(f, getattr(self, f.name)))]
        if not problems and self.average_top > self.save_top:
            problems.append(f"parameter average_top={self.average_top!r} averages the best {self.average_top} "
                            f"checkpoints but save_top={self.save_top!r} keeps {self.save_top}: set save_top to at "
                            f"least {self.average_top}")
        if problems:
            raise KitError("\n".join(problems))

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None = None, **kwargs) -> "TrainConfig":
        """Build from a mapping: unknown names and values of the wrong type raise KitError."""
        params = {**(params or {}), **kwargs}
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise KitError(f"unknown parameter(s) {unknown}; known parameters are {sorted(known)}")
        return cls(**{k: coerce(v, type(known[k].default), k) for k, v in params.items()})

    @classmethod
    def from_namespace(cls, namespace: Mapping[str, Any]) -> "TrainConfig":
        """Pick the config fields out of a notebook's globals() (its parameters cell)."""
        return cls.from_params({f.name: namespace[f.name] for f in fields(cls) if f.name in namespace})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def coerce(value: Any, typ: type, name: str) -> Any:
    """Values arrive typed from notebooks and YAML, as strings from the command line."""
    if isinstance(value, typ) and not (typ is int and isinstance(value, bool)):
        return value
    try:
        if typ is bool:
            if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                return value.lower() in ("1", "true", "yes", "on")
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
            raise ValueError
        if typ is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            if isinstance(value, bool):
                raise ValueError
            return int(value)
        if typ is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if typ is str:
            if isinstance(value, (int, float, bool)):
                raise ValueError
            return str(value)
    except (TypeError, ValueError):
        pass
    raise KitError(f"parameter {name}={value!r} should be {typ.__name__}")


BOUNDS = (("ge", operator.ge, "at least"), ("gt", operator.gt, "greater than"), ("lt", operator.lt, "less than"),
          ("le", operator.le, "at most"))


def problem(f: dataclasses.Field, value: Any) -> str:
    """What is wrong with `value` for field `f` ('' when nothing), by the field's metadata (see `param`)."""
    said = f"parameter {f.name}={value!r}"
    try:
        value = coerce(value, type(f.default), f.name)
    except KitError as e:
        return str(e)
    m = f.metadata
    if "choices" in m and value not in choices(f):
        return f"{said} should be one of {list(choices(f))}"
    bounds = [(m[key], op, words) for key, op, words in BOUNDS if key in m]
    if not all(op(value, bound) for bound, op, _ in bounds):  # written so that NaN fails too
        hint = f" ({m['help']})" if m.get("help") else ""
        return f"{said} should be " + " and ".join(f"{words} {bound}" for bound, _, words in bounds) + hint
    if "check" in m:
        try:
            m["check"](value)
        except KitError as e:
            return f"{said}: {e}"
    return ""


def choices(f: dataclasses.Field) -> tuple:
    """The values a choice field allows (a registry's names are read now, see `param`)."""
    allowed = f.metadata["choices"]
    return tuple(allowed() if callable(allowed) else allowed)


def describe(f: dataclasses.Field) -> str:
    """A field's meaning in one line: its help, choices and bounds. The parameters cell's comment, the README
    table's meaning and the CLI flag's help, so the three cannot drift apart."""
    m = f.metadata
    parts = [m.get("help", "")]
    if "choices" in m:
        parts.append("choices: " + ", ".join(map(str, choices(f))))
    parts.append(" and ".join(f"{words} {m[key]}" for key, _, words in BOUNDS if key in m))
    return "; ".join(part for part in parts if part)


def parameters_cell() -> str:
    """The train notebook's parameters cell: every field, its default, and `describe` as the comment."""
    return "".join(f"{f.name} = {f.default!r}  # {describe(f)}\n" for f in fields(TrainConfig))


def parameters_table() -> str:
    """README's parameter table (markdown): one row per field, its default and `describe`, escaped: `<comp>`
    would be read as an HTML tag, a `|` as a column."""
    meaning = {f.name: re.sub(r"([<|])", r"\\\1", describe(f)) for f in fields(TrainConfig)}
    rows = [f"| `{f.name}` | `{f.default!r}` | {meaning[f.name]} |" for f in fields(TrainConfig)]
    return "\n".join(["| name | default | meaning |", "| --- | --- | --- |", *rows]) + "\n"


def git_commit(path: str | Path = ".") -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def resolved(cfg: TrainConfig, **extra) -> dict:
    """What a run saves: every parameter, plus kit version, git commit and anything resolved later."""
    from .paths import project_root

    return {**cfg.to_dict(), "kit_version": __version__, "git_commit": git_commit(project_root()), **extra}


# Parameters that do not shape the trained weights: where files are and how fast they are read. A fold
# may resume, or count as finished, with these changed; any other TrainConfig field changed means another
# training run. comp/data_dir/runs_dir are path spellings (the folds hash in last.pt and config.json
# pins the data itself); exp/fold name the folder being compared; device, threads, num_workers,
# channels_last, torch_compile and image_cache change speed (and rounding; num_workers also which random
# draw each sample gets, not how they are drawn); tta and save_top act after or beside training (which
# predictions are written, how many checkpoints are kept), and so do track and track_uri (where it is
# reported), keep_last what is kept after it; resume is the switch itself.
RUNTIME_ONLY = frozenset({"comp", "data_dir", "runs_dir", "exp", "fold", "device", "threads", "num_workers",
                          "channels_last", "torch_compile", "image_cache", "tta", "save_top", "keep_last", "resume",
                          "track", "track_uri"})


def training_changes(saved: dict, new: dict) -> dict[str, tuple]:
    """{name: (saved value, new value)} for each parameter that shapes training and differs.

    saved, new: full parameter dicts (a fold's config.json, TrainConfig.to_dict()); a name missing from
    either side (a file from an older kit) is not compared, except those before_they_existed gives the value
    that older kit trained with: kit_version is checked separately."""
    names = [f.name for f in fields(TrainConfig) if f.name not in RUNTIME_ONLY]
    saved, new = {**before_they_existed(saved), **saved}, {**before_they_existed(new), **new}
    return {n: (saved[n], new[n]) for n in names if n in saved and n in new and saved[n] != new[n]}


def other_trainings(configs: Mapping[int, dict]) -> dict[int, dict]:
    """{fold: its training_changes against the first fold's config} for the folds of an experiment trained with
    other parameters (runtime-only ones such as threads do not count): the blender refuses such a mixed
    experiment (kit.ensemble.check_one_training), and the board neither counts those folds as done nor scores
    the OOF."""
    first = next(iter(configs.values()), {})
    return {k: c for k, cfg in configs.items() if (c := training_changes(first, cfg))}


def before_they_existed(saved: dict) -> dict:
    """Training parameters added later, with the behaviour a config.json written before them had: an ordinal
    fold trained before ordinal_head existed has a softmax head, so resuming it (or adding folds to its
    experiment) with today's default 'cumulative' is another model, refused by name rather than by a
    state_dict error. Other tasks ignore ordinal_head: an old multiclass fold stays comparable. Before resize
    existed every image was squashed: an old fold resumed or extended with resize='auto' is another training."""
    older = {"resize": "squash", "crop_pct": 1.0}  # before resize existed every image was squashed
    return {**older, "ordinal_head": "softmax"} if saved.get("task_resolved") in ORDINAL_TASKS else older
