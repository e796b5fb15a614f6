# %% [markdown]
# # Infer and ensemble
#
# For every experiment: its OOF predictions (checked against `folds.csv`), its test predictions
# from every fold with the TTA its OOF was made with, averaged over folds. Blend weights are
# fitted on the OOF probability matrices; the honest score fits them on the other folds and
# scores the held-out one. Writes `submissions/<name>.csv` (checked against
# `sample_submission.csv`) and `submissions/<name>.blend.json`.

# %% tags=["parameters"]
comp = "demo"
data_dir = "data"
runs_dir = "runs"
exps = ["exp0"]
method = "slsqp"
metric = "accuracy"
name = "submission"
device = "auto"

# %%
from kit import eda, plots
from kit.competition import load_competition
from kit.folds import folds_hash, folds_path, read_folds
from kit.infer import infer_and_blend, save_blend
from kit.paths import resolve
from kit.submission import write_submission

c = load_competition(comp, data_dir)
folds = read_folds(folds_path(c, runs_dir))
report = infer_and_blend(c, folds, exps, runs_dir, method=method, metric=metric, device=device)
report.scores

# %%
print(f"blend OOF {metric}: in-sample {report.oof_score:.4f}, "
      f"honest (weights fitted on other folds) {report.honest_score:.4f} ± {report.honest_std:.4f}")
plots.weights_bar(report.weights);

# %%
plots.confusion(report.y, report.oof_probs, report.classes);
eda.per_class_accuracy(report.y, report.oof_probs, report.classes)

# %%
out = write_submission(report.submission, c, resolve("submissions") / f"{name}.csv")
save_blend(report, out.with_suffix(".blend.json"), method, metric, folds_hash(folds))
print(f"wrote {out}")
report.submission.head()
