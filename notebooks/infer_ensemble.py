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
method = "caruana"  # caruana, slsqp, mean, or stack (a logistic regression on the experiments' log-probabilities)
models = "folds"  # what predicts the test set: folds, full (the full-data models of kit fit-full), both
tta = "auto"  # auto: each experiment's best TTA on OOF; or one for all of them: none, hflip, d4@squash...
metric = ""  # empty: the metric the experiments were trained on; accuracy, qwk, roc_auc, f_beta:2, map@5...
space = "prob"  # prob, logit, power, rank
power = 2.0
rounds = 50  # caruana's selection rounds
fit_metric = "auto"  # what the weights are fitted on; auto: log loss (in rank space: metric)
submission_kind = ""  # auto, label, probability; empty: auto (with blend_json: the saved blend's)
name = "submission"
out_dir = "submissions"
device = "auto"
batch_size = 128  # test images per batch, and per forward with the TTA views; lower it if the GPU runs out
num_workers = -1  # processes decoding test images; -1: 0 on CPU, the cores per GPU (at most 8) on CUDA
blend_json = ""  # a saved blend: predict the test set with it and nothing else

# %%
# %matplotlib inline
from kit import board, eda, explain, plots, scorecard
from kit.blendconfig import BlendConfig
from kit.infer import blend_and_submit, blend_metric

metric = blend_metric(metric, comp, exps, runs_dir)  # as `kit blend` does
config = BlendConfig(method, metric, space, power, rounds, fit_metric, models=models, tta=tta)
done = blend_and_submit(comp, exps, config, blend_json, name, out_dir, data_dir, runs_dir, device, submission_kind,
                        batch_size, num_workers)
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
single = report is not None and report.y.ndim == 1  # one label per image (a multi-label task: per class below)
if single:
    plots.confusion(report.y, report.oof_probs, report.classes);
eda.per_class_accuracy(report.y, report.oof_probs, report.classes) if single else None

# %% [markdown]
# ## Multi-label: per-class thresholds and scores
#
# Each class's threshold fitted on the blended OOF (0.5 where the blend fitted none: a metric that
# does not cut, such as AUC), its F-beta (beta of `metric`, else F1) at 0.5 and at its threshold,
# its ROC AUC and how many images carry it. In-sample: thresholds fitted and scored on the same
# rows; the honest score fits them on the other folds.

# %%
if report and done.comp.task == "multilabel":
    print(scorecard.decision_summary(report.blend, metric) or f"no per-class thresholds: {metric} does not cut")
    display(scorecard.class_thresholds(report.y, report.oof_probs, report.classes, report.blend.get("thresholds"),
                                       metric))

# %% [markdown]
# ## Ordinal: cut points on the expected grade
#
# The grade is decided by where the expected grade (each grade weighed by its probability) falls
# between cut points fitted on the blended OOF, rather than by the argmax, which ignores how far
# apart grades are. QWK by argmax, by plain rounding and by the cut points; the confusion matrix of
# the grades the cut points give.

# %%
if report and done.comp.task == "ordinal":
    cuts = report.blend.get("cut_points")
    print(scorecard.decision_summary(report.blend, metric) or "no cut points in this blend: the argmax decides")
    display(scorecard.cut_points_table(cuts, report.classes)) if cuts else None
    display(scorecard.ordinal_scores(report.y, report.oof_probs, report.classes, cuts, metric))
    plots.predicted_confusion(report.y, scorecard.grade_predictions(report.oof_probs, report.classes, cuts),
                              report.classes, "blend OOF grades" + (" by the cut points" if cuts else ""));

# %% [markdown]
# ## Binary: ROC curve of the blended OOF

# %%
if report and done.comp.task == "binary":
    plots.roc(report.y, report.oof_probs, report.classes);

# %% [markdown]
# ## Where the blend goes wrong
#
# The OOF images the blend was surest of and got wrong (a mislabelled image or two classes the
# models confuse show here first), then Grad-CAM maps for the first few from the best experiment:
# where the fold model that held each image out found the class the blend predicted, and the true one.

# %%
errors = None
if report and report.y.ndim == 1:  # one label per image
    errors = explain.confident_errors(explain.oof_rows(done.comp, runs_dir), report.y, report.oof_probs,
                                      report.classes, n=16)
    if len(errors):
        plots.error_grid(errors);
errors

# %%
if errors is not None and len(errors):
    best = explain.best_experiment(report.scores, metric)
    print(f"Grad-CAM of {best}, the best experiment on OOF {metric}")
    plots.cam_grid(errors.head(4), explain.class_activation_maps(errors.head(4), runs_dir, done.comp, best, device));

# %% [markdown]
# ## Submission

# %%
print(f"wrote {done.path} and {done.blend_path.name}")
done.submission.head()

# %% [markdown]
# ## Experiments compared
#
# Every experiment of the competition (`runs_dir/<comp>/`): folds done, OOF score per TTA, best epoch and time per fold,
# weight in the newest blend; then the training parameters that differ between them.

# %%
if report:
    display(board.board(runs_dir, submissions=out_dir, comp=comp))
board.differing_params(runs_dir, comp) if report else None
