# %% [markdown]
# # Infer and ensemble
#
# For every experiment: its OOF predictions with each TTA preset it was scored with (checked
# against `folds.csv`); the TTA that scores best on OOF is the one its test predictions use,
# averaged over all its folds. Blend weights are fitted on the OOF probability matrices (on
# `fit_metric`, log loss by default, while reported in `metric`); the honest score chooses each
# experiment's TTA and fits the weights on the other folds and scores the held-out one (each
# fold's best epoch was still chosen on its own rows: `report.honest_leak`). Writes
# `submissions/<name>.csv` (checked against `sample_submission.csv`) and
# `submissions/<name>.blend.json`.
#
# With `blend_json` set, the notebook needs no training data, OOF or folds: it applies a saved
# blend (checkpoints + `blend.json`) to the test set, as a Kaggle code competition or an
# internet-off notebook does.

# %% tags=["parameters"]
comp = "demo"
data_dir = "data"
runs_dir = "runs"
exps = ["exp0"]
method = "caruana"  # caruana, slsqp, mean
metric = "accuracy"  # accuracy, log_loss, macro_f1, balanced_accuracy, or any sklearn scorer name
space = "prob"  # prob, logit, power, rank
power = 2.0
fit_metric = "auto"  # what the weights are fitted on; auto: log loss (in rank space: metric)
name = "submission"
out_dir = "submissions"
device = "auto"
blend_json = ""  # a saved blend: predict the test set with it and nothing else

# %%
from kit import eda, plots
from kit.competition import load_competition
from kit.folds import folds_path, read_folds
from kit.infer import infer_and_blend, save_blend, submission_from_blend
from kit.paths import resolve
from kit.submission import write_submission

if blend_json:
    c, submission = submission_from_blend(comp, blend_json, data_dir, runs_dir, device)
    report = None
else:
    c = load_competition(comp, data_dir)
    report = infer_and_blend(c, read_folds(folds_path(c, runs_dir)), exps, runs_dir, method, metric, space, power,
                             device, fit_metric)
    submission = report.submission
print(f"{len(c.test)} test images")

# %% [markdown]
# ## TTA per experiment, chosen on OOF

# %%
report.tta_scores.pivot(index="experiment", columns="tta", values=f"oof_{metric}") if report else None

# %%
report.scores if report else None

# %% [markdown]
# ## The blend: weights, honest score, confusion matrix

# %%
if report:
    print(f"blend OOF {metric}: in-sample {report.oof_score:.4f}, "
          f"honest (TTA and weights chosen on other folds) {report.honest_score:.4f} ± {report.honest_std:.4f}; "
          f"weights fitted on {report.fit_metric}\nnot held out: {report.honest_leak}")
    plots.weights_bar(report.weights);

# %%
if report:
    plots.confusion(report.y, report.oof_probs, report.classes);
eda.per_class_accuracy(report.y, report.oof_probs, report.classes) if report else None

# %% [markdown]
# ## Submission

# %%
out = write_submission(submission, c, resolve(out_dir) / f"{name}.csv")
if report:
    save_blend(report, out.with_suffix(".blend.json"))
print(f"wrote {out}")
submission.head()
