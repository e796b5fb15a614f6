# %% [markdown]
# # Train one fold
#
# Pick the model, image size, epochs and the rest in the `parameters` cell, run fold 0 here and
# watch the curves. `kit run-folds` runs this same notebook headlessly once per fold (papermill
# injects `exp`, `fold` and any parameter you pass). Outputs land in `runs/<exp>/fold<k>/`:
# `best.pt`, `history.csv`, `oof.csv` and `config.json`.

# %% tags=["parameters"]
comp = 'demo'  # folder under data_dir, an absolute path, or a /kaggle/input/<comp> name
exp = 'exp0'  # experiment name: runs/<exp>/fold<k>/
fold = 0
data_dir = 'data'
runs_dir = 'runs'
id_col = ''  # empty: auto-detect
label_col = ''  # empty: auto-detect
on_bad_image = 'error'  # error: stop with the list of unreadable images; skip: leave them out
model = 'test_efficientnet'  # any timm name, or a preset effnet_b0..effnet_b7
pretrained = False  # from the timm/Hugging Face cache
weights = ''  # local checkpoint file, for internet-off notebooks
img_size = 0  # 0: the native resolution of the model (224 when unknown)
epochs = 5
batch_size = 64
accum_steps = 1  # micro-batches per optimizer update; effective batch: batch_size * accum_steps
lr = 0.003
backbone_lr_mult = 1.0  # differential LR: backbone at lr * this, head at lr
freeze_epochs = 0  # head-first fine-tuning: backbone frozen for the first N epochs
weight_decay = 0.05
warmup_epochs = 1
clip_grad = 0.0  # max gradient norm, 0: off
label_smoothing = 0.1
augment = 'light'  # none, light, medium, mushroom
mixup = 0.0  # mixup alpha, 0: off
cutmix = 0.0  # cutmix alpha, 0: off
mixup_off_epochs = 0  # plain targets for the last N epochs
sam = 'off'  # off, sam, asam
sam_rho = 0.05  # ASAM usually wants about 10x the SAM rho
sam_every = 1  # the two-pass SAM update every N optimizer steps, plain steps between
ema_decay = 0.0  # EMA of weights, validated and saved when > 0 (e.g. 0.999)
patience = 0  # early stopping after N epochs without improvement, 0: off
save_top = 1  # keep the best N checkpoints (best.pt is the best)
metric = 'accuracy'
tta = 'auto'  # auto: OOF for every preset, the infer step picks the best per experiment
seed = 42
device = 'auto'  # auto, cpu, cuda, cuda:1
amp = 'auto'  # auto (bf16 on CUDA, off on CPU), bf16, fp16 (with a GradScaler), off
channels_last = True  # NHWC memory layout: faster convolutions on CPU and CUDA
torch_compile = False  # torch.compile the model
resume = True  # continue from last.pt when the fold was interrupted
num_workers = -1  # loader worker processes; -1: auto (0 on CPU, the cores per GPU up to 8 on CUDA)
image_cache = True  # decoded images kept under runs_dir/.image_cache when no bigger than their file
threads = 0  # torch intra-op threads, 0: the torch default

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
