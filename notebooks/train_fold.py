# %% [markdown]
# # Train one fold
#
# Pick the model, image size, epochs and the rest in the `parameters` cell, run fold 0 here and
# watch the curves. `kit run-folds` runs this same notebook headlessly once per fold (papermill
# injects `exp`, `fold` and any parameter you pass). Outputs land in `runs/<exp>/fold<k>/`:
# `best.pt`, `history.csv`, `oof.csv` and `config.json`.

# %% tags=["parameters"]
comp = 'demo'
exp = 'exp0'
fold = 0
data_dir = 'data'
runs_dir = 'runs'
id_col = ''
label_col = ''
model = 'test_efficientnet'
pretrained = False
weights = ''
img_size = 0
epochs = 5
batch_size = 64
lr = 0.003
weight_decay = 0.05
warmup_epochs = 1
label_smoothing = 0.1
augment = 'light'
metric = 'accuracy'
tta = 'none'
seed = 42
device = 'auto'
num_workers = 0
threads = 0

# %%
from kit.config import TrainConfig
from kit.plots import curves
from kit.train import fit_fold

cfg = TrainConfig.from_namespace(globals())
cfg

# %%
result = fit_fold(cfg)
print(f"best val {cfg.metric} {result.best_score:.4f} at epoch {result.best_epoch}; outputs in {result.dir}")
result.history

# %%
curves(result.history, cfg.metric);
