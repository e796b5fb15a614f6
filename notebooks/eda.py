# %% [markdown]
# # EDA: look at the competition, then write the folds once
#
# Class balance, image sizes and modes, unreadable files, a sample grid per class and an
# augmentation preview. The last cell writes `folds.csv` beside `train.csv`; it is written once
# per competition and every run records its hash.

# %% tags=["parameters"]
comp = "demo"
data_dir = "data"
runs_dir = "runs"
n_folds = 5
seed = 42
fold_method = "auto"
augment = "light"
img_size = 32

# %%
# %matplotlib inline
from kit import eda, plots
from kit.augment import preview
from kit.competition import load_competition
from kit.data import read_image
from kit.folds import folds_path, make_folds, write_folds

c = load_competition(comp, data_dir)
print(f"{c.root}: {len(c.train)} train, {len(c.test)} test images, {len(c.classes)} classes "
      f"(id column {c.id_col!r}, label column {c.label_col!r})")
spaces = eda.stripped_spaces(c)  # 'cat ' and 'cat' are one class
print(f"{spaces['values stripped'].sum()} id/label value(s) had surrounding spaces, stripped")
display(spaces) if len(spaces) else None

# %% [markdown]
# ## Class balance

# %%
plots.class_balance(c.train);
eda.class_counts(c.train)

# %% [markdown]
# ## Image sizes, modes and unreadable files

# %%
stats = eda.image_stats(list(c.train["path"]) + list(c.test["path"]))
bad, noted = stats[stats["error"] != ""], stats[stats["note"] != ""]
print(f"{len(bad)} unreadable file(s): training stops on them unless on_bad_image='skip'")
display(bad[["path", "error"]]) if len(bad) else None
print(f"{len(noted)} file(s) kit converts on the fly (mode, extension, rotation, size)")
display(noted.groupby("note").size().rename("files").to_frame()) if len(noted) else None
eda.size_summary(stats)

# %% [markdown]
# ## Samples per class

# %%
plots.samples_per_class(c.train, per_class=8);

# %% [markdown]
# ## Augmentation preview (the `augment` preset the training will use)

# %%
plots.image_grid(preview(read_image(c.train["path"].iloc[0]), augment, img_size, n=16), cols=8);

# %% [markdown]
# ## Folds: written once

# %%
folds = make_folds(c, n_folds=n_folds, seed=seed, method=fold_method)
h = write_folds(folds, folds_path(c, runs_dir), meta={"seed": seed, "method": fold_method})
print(f"folds.csv hash {h}")
folds.pivot_table(index="label", columns="fold", values="id", aggfunc="count")
