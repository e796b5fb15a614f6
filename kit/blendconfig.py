"""A blend's settings as one validated object: what its weights are fitted on and in which space, and the
shape of its submission. Saved as is in blend.json (its "config") and read back from it, so a saved blend
is applied with the settings it was fitted with."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

from . import KitError
from .config import check_tta
from .metrics import lookup
from .paths import check_name, comp_runs
from .submission import SUBMISSION_KINDS

METHODS = ("caruana", "slsqp", "mean", "stack")
SPACES = ("prob", "logit", "power", "rank")
MODELS = ("folds", "full", "both")


def check_space(space: str, metric: str) -> None:
    """Rank space keeps only the order of rows per class: right for a ranking metric (AUC), wrong for
    any metric that reads probabilities (accuracy, log loss...)."""
    if space not in SPACES:
        raise KitError(f"unknown blend space {space!r}; choose one of {SPACES}")
    if space == "rank" and not lookup(metric).ranking:
        raise KitError(f"space='rank' blends per-class ranks, which keep only the order of the rows: fine for a "
                       f"ranking metric (roc_auc..., average_precision...) but metric={metric!r} reads "
                       "probabilities; use space='prob', 'logit' or 'power'")


def fit_objective(fit_metric: str, metric: str, space: str) -> str:
    """What the weights are fitted on. 'auto': log loss, a smooth proper score (a flat one such as accuracy
    lets noise models in by flipping borderline rows by luck), except in rank space, where the rows are no
    probabilities and the (ranking) metric itself is fitted."""
    objective = (metric if space == "rank" else "log_loss") if fit_metric == "auto" else fit_metric
    try:
        lookup(objective)  # an unknown name is refused here, not after the first fold
    except KitError as e:
        raise KitError(f"fit_metric={fit_metric!r}: {e}; or 'auto' (log loss, in rank space the metric)") from None
    check_space(space, objective)
    return objective


@dataclass(frozen=True)
class BlendConfig:
    method: str = "caruana"  # caruana (ensemble selection), slsqp (log loss, constrained), mean, stack (a
    # cross-fitted logistic regression on the experiments' log-probabilities: kit.ensemble.fit_stack)
    metric: str = "accuracy"  # the competition's: what the blend is reported in and the TTA chosen on
    space: str = "prob"  # where predictions are averaged: prob, logit, power, rank (ranking metrics only)
    power: float = 2.0  # the exponent of space='power'
    rounds: int = 50  # caruana's selection rounds
    fit_metric: str = "auto"  # what the weights are fitted on; auto: log loss (in rank space: metric)
    submission_kind: str = "auto"  # auto, label, probability: see submission.make_submission
    models: str = "folds"  # what predicts the test set: the fold models, the full-data models (kit fit-full), both
    tta: str = "auto"  # auto: each experiment's best on OOF (chosen again inside the honest score); or one TTA
    # name (a preset, optionally @<resize mode>) that every experiment uses, chosen by nobody

    def __post_init__(self):
        """Refused at construction, naming the setting, its value and the choices: a bad value never reaches
        a fit that has already run for minutes."""
        choose("method", self.method, METHODS)
        choose("space", self.space, SPACES)
        choose("submission_kind", self.submission_kind, SUBMISSION_KINDS)
        choose("models", self.models, MODELS)
        try:
            check_tta(self.tta)  # the train config's own rule: 'auto' or a TTA name
        except KitError as e:
            raise KitError(f"blend tta={self.tta!r}: {e}") from None
        try:
            lookup(self.metric)
        except KitError as e:
            raise KitError(f"blend metric={self.metric!r}: {e}") from None
        if isinstance(self.power, bool) or not isinstance(self.power, (int, float)) or not self.power > 0:
            raise KitError(f"blend power={self.power!r} is not a positive number; space='power' averages p**power, "
                           "e.g. power=2.0")
        if isinstance(self.rounds, bool) or not isinstance(self.rounds, int) or self.rounds < 1:
            raise KitError(f"blend rounds={self.rounds!r} is not a positive integer; caruana adds one model a "
                           "round, e.g. rounds=50")
        object.__setattr__(self, "power", float(self.power))
        check_space(self.space, self.metric)
        objective = self.objective  # fit_metric known and right for the space
        if self.method == "stack" and (objective != "log_loss" or self.space != "prob"):
            raise KitError(f"method='stack' fits a logistic regression (log loss) on each experiment's "
                           f"log-probabilities: fit_metric={self.fit_metric!r} and space={self.space!r} do not apply; "
                           "leave them 'auto' and 'prob'")
        if self.method == "slsqp" and objective != "log_loss":
            raise KitError(f"method='slsqp' minimizes log loss, a smooth score; fit_metric={objective!r} is "
                           "not one: use fit_metric='log_loss' (or 'auto' outside rank space), or method='caruana'")

    @property
    def objective(self) -> str:
        """What the weights are fitted on, 'auto' resolved (fit_objective)."""
        return fit_objective(self.fit_metric, self.metric, self.space)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_blend(cls, spec: dict, source: str = "blend.json") -> BlendConfig:
        """The config a blend.json was fitted with: its "config", or the loose top-level keys of a blend.json
        written before the config was one object."""
        if not isinstance(spec, dict):
            raise KitError(f"{source} holds a {type(spec).__name__}, not a blend; pass one written by `kit blend`")
        known = [f.name for f in fields(cls)]
        config = spec.get("config", {k: spec[k] for k in known if k in spec})
        if not isinstance(config, dict):
            raise KitError(f"{source}: the blend's config is {config!r}, not a mapping of settings; fit the blend "
                           "again (kit blend --exps ...)")
        unknown = sorted(set(config) - set(known))
        if unknown:
            raise KitError(f"{source}: the blend's config has unknown setting(s) {unknown}; the known ones are "
                           f"{known} (a blend.json written by another kit version? fit the blend again)")
        return cls(**config)


def choose(name: str, value, choices: tuple) -> None:
    if value not in choices:
        raise KitError(f"blend {name}={value!r} is not one of {list(choices)}")


def blend_runs(spec: dict, runs_dir: str | Path) -> Path:
    """runs/<comp>/ of the competition a blend (blend.json's spec) was fitted on: where its experiments' folds are
    (in a Kaggle bundle, the bundle's runs/<comp>/)."""
    if not spec.get("competition"):
        raise KitError("the blend.json records no competition (written by a kit before runs were kept per "
                       "competition, runs/<comp>/<exp>): fit the blend again (kit blend --exps ...)")
    return comp_runs(runs_dir, check_name("blend competition", spec["competition"]))  # a name, never a path
