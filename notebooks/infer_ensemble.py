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
# blend (checkpoints + `blend.json`, with the settings it was fitted with) to the test set, as a
# Kaggle code competition or an internet-off notebook does. `kit blend` and the Kaggle bundle's
# notebook run the same `blend_and_submit`.

# %% tags=["parameters"]
comp = "demo"
data_dir = "data"
runs_dir = "runs"
exps = ["exp0"]
method = "caruana"  # caruana, slsqp, mean
metric = "accuracy"  # accuracy, log_loss, macro_f1, balanced_accuracy, or any sklearn scorer name
space = "prob"  # prob, logit, power, rank
power = 2.0
rounds = 50  # caruana's selection rounds
fit_metric = "auto"  # what the weights are fitted on; auto: log loss (in rank space: metric)
submission_kind = ""  # auto, label, probability; empty: auto (with blend_json: the saved blend's)
name = "submission"
out_dir = "submissions"
device = "auto"
blend_json = ""  # a saved blend: predict the test set with it and nothing else

# %%
from kit import eda, plots
from kit.blendconfig import BlendConfig
from kit.infer import blend_and_submit

config = BlendConfig(method, metric, space, power, rounds, fit_metric)
done = blend_and_submit(comp, exps, config, blend_json, name, out_dir, data_dir, runs_dir, device, submission_kind)
report = done.report  # None with blend_json: no OOF to report on
print(f"{len(done.comp.test)} test images")

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
print(f"wrote {done.path} and {done.blend_path.name}")
done.submission.head()
