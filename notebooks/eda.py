# %% [markdown]
# # EDA: look at the competition, then write the folds once
#
# Class balance, image sizes and modes, unreadable files, a sample grid per class and an
# augmentation preview, and what fits the task: labels per image and labels seen together for a
# multi-label task, the grade histogram for an ordinal one, images per group when there is a group
# column. The last cell writes `folds.csv` beside `train.csv`; it is written once per competition
# and every run records its hash.

# %% tags=["parameters"]
comp = "demo"
data_dir = "data"
runs_dir = "runs"
n_folds = 5
seed = 42
fold_method = "auto"
augment = "light"
img_size = 32
model = "test_efficientnet"  # the model you will train: its resize (auto) frames the augmentation preview
resize = "auto"  # as the train notebook's: auto (the model's pretrained config), squash, crop, letterbox
crop_pct = 0.0  # as the train notebook's: 0 is the model's own
task = "auto"  # auto (from train.csv and sample_submission.csv), multiclass, binary, multilabel, ordinal, regression
metric = ""  # the competition's metric: with qwk, integer grades are an ordinal task

# %%
# %matplotlib inline
from kit import eda, plots
from kit.augment import preview
from kit.competition import load_competition
from kit.data import read_image
from kit.folds import folds_path, make_folds, write_folds
from kit.models import eval_geometry, resolve_model

c = load_competition(comp, data_dir, task=task, metric=metric)
print(f"{c.root}: {c.task} task, {len(c.train)} train, {len(c.test)} test images, {len(c.classes)} classes "
      f"(id column {c.id_col!r}, label column {c.label_col!r})")
spaces = eda.stripped_spaces(c)  # 'cat ' and 'cat' are one class
print(f"{spaces['values stripped'].sum()} id/label value(s) had surrounding spaces, stripped")
display(spaces) if len(spaces) else None

# %% [markdown]
# ## Class balance
#
# Images per class in kit's class order. Multi-label: images carrying each label (an image counts
# once per label). Ordinal or regression: images per grade, every grade from the lowest to the
# highest (a grade no image has is an empty bar).

# %%
counts = eda.label_counts(c)
plots.label_counts(counts);
counts

# %% [markdown]
# ## Multi-label: labels per image and labels seen together
#
# How many labels an image carries, and how many images carry two labels together (the diagonal:
# images carrying the label; the 30 most frequent labels). Only for a multi-label task.

# %%
if c.task == "multilabel":
    per_image = eda.labels_per_image(c.label_matrix)
    plots.labels_per_image(per_image)
    plots.cooccurrence(eda.label_cooccurrence(c.label_matrix, c.classes))
    display(per_image)

# %% [markdown]
# ## Groups: images per group
#
# With a group column (a patient), folds keep each group's images together: a few big groups make
# uneven folds. For a binary task, how many groups of each size hold a positive. Only when train.csv
# has a group column.

# %%
if "group" in c.train:
    sizes = eda.group_sizes(c)
    plots.group_sizes(sizes)
    display(sizes)

# %% [markdown]
# ## Image sizes, modes and unreadable files
#
# Modes and formats; the short side and aspect ratio of every image as histograms (what `resize`
# scales from, what `squash` distorts and `crop` cuts); then each (width, height) when there are
# a few, else the images per bucket of short side and aspect ratio.

# %%
stats = eda.image_stats(list(c.train["path"]) + list(c.test["path"]))
bad, noted = stats[stats["error"] != ""], stats[stats["note"] != ""]
print(f"{len(bad)} unreadable file(s): training stops on them unless on_bad_image='skip'")
display(bad[["path", "error"]]) if len(bad) else None
print(f"{len(noted)} file(s) kit converts on the fly (mode, extension, rotation, size)")
display(noted.groupby("note").size().rename("files").to_frame()) if len(noted) else None
display(eda.mode_summary(stats))
plots.image_sizes(stats);
eda.size_summary(stats)

# %% [markdown]
# ## Samples per class

# %%
plots.samples_per_class(eda.one_row_per_label(c), per_class=8);  # multi-label: a row per label

# %% [markdown]
# ## Augmentation preview (the `augment` preset the training will use, framed by the model's resize)

# %%
geometry = eval_geometry(resolve_model(model)[0], resize, crop_pct)  # (mode, crop_pct) as training will use
plots.image_grid(preview(read_image(c.train["path"].iloc[0]), augment, img_size, 16, 0, *geometry), cols=8);

# %% [markdown]
# ## Folds: written once

# %%
folds = make_folds(c, n_folds=n_folds, seed=seed, method=fold_method)
h = write_folds(folds, folds_path(c, runs_dir), meta={"seed": seed, "method": fold_method})
print(f"folds.csv hash {h}")
eda.fold_counts(c, folds)  # multi-label: images carrying each label, per fold
