# %% [markdown]
# # Train one fold
#
# Pick the model, image size, epochs and the rest in the `parameters` cell, run fold 0 here and
# watch the curves. `kit run-folds` runs this same notebook headlessly once per fold (papermill
# injects `exp`, `fold` and any parameter you pass). Outputs land in
# `runs/<comp>/<exp>/fold<k>/`:
# `best.pt`, `history.csv`, `oof.csv` and `config.json`.

# %% tags=["parameters"]
comp = 'demo'  # the competition: a folder under data_dir, an absolute path, or a /kaggle/input/<comp> name
exp = 'exp0'  # experiment name: runs/<comp>/<exp>/fold<k>/ (set by the runner)
fold = 0  # the fold of folds.csv trained and validated on (set by the runner); at least 0
data_dir = 'data'  # the folder that holds the competitions
runs_dir = 'runs'  # the folder that holds the experiments' run folders
id_col = ''  # train.csv's id column; empty: auto-detect (id, image_id, filename...)
label_col = ''  # train.csv's label column; empty: auto-detect (label, target, class...)
task = 'auto'  # what is predicted; auto: from train.csv and sample_submission.csv (one label, a label list or 0/1 columns per class, a numeric grade with an ordinal metric); choices: auto, multiclass, binary, multilabel, ordinal, regression
on_bad_image = 'error'  # unreadable images: error stops with their list, skip leaves them out; choices: error, skip
model = 'test_efficientnet'  # any timm name, or a preset effnet_b0..effnet_b7 (Noisy Student weights at native 224..600 px; B6 is 528 px)
pretrained = False  # pretrained weights from the timm/Hugging Face cache
weights = ''  # local checkpoint file (state_dict, kit or timm checkpoint, .safetensors), for internet-off notebooks; a class-count mismatch keeps the backbone and starts a fresh head
img_size = 0  # 0: the native resolution of the model (224 when unknown); at least 0
resize = 'auto'  # how an image becomes an img_size square for validation, OOF, test and the none/light presets: squash stretches it; crop scales the short side to img_size / crop_pct and keeps the centre; letterbox fits the long side and pads; auto: the model's pretrained config (timm's crop_mode; crop for most); choices: auto, squash, crop, letterbox
crop_pct = 0.0  # resize crop: the share of the short side kept; 0: the model's pretrained crop_pct (0.875 when unknown); at least 0 and at most 1
ordinal_head = 'cumulative'  # ordinal (and regression) tasks only, no effect on others: cumulative trains K-1 sigmoids P(grade > k) with BCE on the targets [y > k] (CORAL, the APTOS/PANDA binned BCE); softmax a softmax over the K grades with cross-entropy; choices: cumulative, softmax
epochs = 5  # training epochs; at least 1
batch_size = 64  # images per micro-batch; at least 1
accum_steps = 1  # micro-batches per optimizer update; effective batch: batch_size * accum_steps; at least 1
lr = 0.003  # AdamW learning rate (the head's; see backbone_lr_mult); greater than 0
backbone_lr_mult = 1.0  # differential LR: backbone at lr * this, head at lr; greater than 0
freeze_epochs = 0  # head-first fine-tuning: backbone frozen for the first N epochs; at least 0
weight_decay = 0.05  # AdamW weight decay; none on biases and norms; at least 0
warmup_epochs = 1  # warmup of timm's cosine schedule, stepped per update; a run no longer than this warms up throughout; at least 0
clip_grad = 0.0  # max gradient norm, 0: off; at least 0
label_smoothing = 0.1  # label smoothing of the cross-entropy targets; at least 0 and less than 1
augment = 'light'  # albumentations preset (mushroom: the mushroom-competition list); choices: none, light, medium, mushroom
mixup = 0.0  # timm's Mixup alpha (soft-target loss), 0: off; at least 0
cutmix = 0.0  # timm's CutMix alpha (soft-target loss), 0: off; at least 0
mixup_off_epochs = 0  # plain targets for the last N epochs; at least 0
distill = ''  # knowledge distillation: a blend.json of kit blend whose OOF probabilities (the <name>.oof.csv beside it) are mixed into the training rows' targets; single-label tasks, no mixup
distill_weight = 0.5  # the teacher's share of a training row's target with distill; at least 0 and at most 1
pseudo = ''  # pseudo-labels: a blend.json of kit blend whose confident test predictions (the <name>.test.csv beside it) join every fold's training side, never its validation; single-label tasks, no mixup
pseudo_threshold = 0.9  # a test image is pseudo-labelled when the blend's top probability is at least this; greater than 0 and at most 1
pseudo_soft = False  # train on the blend's probabilities of a pseudo-labelled image, not its top class
sam = 'off'  # sharpness-aware minimization (asam: adaptive); choices: off, sam, asam
sam_rho = 0.05  # ASAM usually wants about 10x the SAM rho; at least 0
sam_every = 1  # the two-pass SAM update every N optimizer steps, plain steps between; at least 1
ema_decay = 0.0  # EMA of the weights (timm's ModelEmaV3), validated and saved when > 0 (e.g. 0.999); at least 0 and less than 1
patience = 0  # early stopping after N epochs without improvement, 0: off; at least 0
save_top = 1  # keep the best N checkpoints (best.pt the best, then top-<epoch>.pt); at least 1
average_top = 0  # after training, average the weights of the best N checkpoints (save_top must keep at least N) into best.pt, BatchNorm statistics recomputed on the training images; 0 or 1: off; at least 0
keep_last = True  # keep last.pt (the training state for a resume) once the fold is finished; False deletes it then (a resnet18's is 134 MB): an unfinished fold keeps it and resumes
metric = 'accuracy'  # validation metric: accuracy, log_loss, macro_f1, balanced_accuracy, another kit.metrics name, or a scikit-learn scorer name
full = False  # the experiment's full-data model: every row of folds.csv trained on (no validation, no OOF) for epochs epochs into runs/<comp>/<exp>/full/; kit fit-full sets epochs from the folds' best epochs
tta = 'auto'  # auto: OOF for every preset and resize mode, the infer step picks the best per experiment; or a preset (none, hflip, flips, multiscale, d4), optionally @squash, @crop or @letterbox for another resize than the fold's
seed = 42  # seeds the weights' init, and each epoch's batches, augmentations and mixes
device = 'auto'  # auto, cpu, cuda, cuda:<n> (e.g. cuda:1) or mps
amp = 'auto'  # mixed precision: auto is bf16 on CUDA, off on CPU; fp16 uses a GradScaler; choices: auto, bf16, fp16, off
channels_last = True  # NHWC memory layout: faster convolutions on CPU and CUDA
torch_compile = False  # torch.compile the model
resume = True  # continue from last.pt when the fold was interrupted (kit run-folds --force starts afresh)
num_workers = -1  # loader worker processes; -1: auto (0 on CPU, the cores per GPU up to 8 on CUDA); at least -1
image_cache = True  # keep each decoded image as a .npy under runs_dir/.image_cache/ when no bigger than its file: later epochs and folds skip the decode (delete the folder to reclaim the disk)
threads = 0  # torch intra-op threads, 0: the torch default; at least 0
track = 'off'  # log parameters, per-epoch metrics, history and config to MLflow and/or W&B (offline unless WANDB_MODE says otherwise); needs the tracking extra; choices: off, mlflow, wandb, mlflow+wandb
track_uri = ''  # MLflow tracking URI; empty: MLFLOW_TRACKING_URI, else a SQLite store under runs_dir/.mlflow/

# %%
# %matplotlib inline
from kit.config import TrainConfig
from kit.plots import curves
from kit.train import fit_fold

cfg = TrainConfig.from_namespace(globals())
cfg

# %% [markdown]
# Optional, before training: the LR range test (`kit lr-find` headlessly) trains this fold's model for
# up to 100 updates with the learning rate rising from 1e-7 to 10 and plots the loss against it.

# %%
find_lr = False  # True: plot loss against LR on this fold and print the suggested lr
if find_lr:
    from kit.lrfind import lr_find
    from kit.plots import lr_curve

    curve = lr_find(cfg)
    lr_curve(curve)
    print(f"suggested lr {curve.suggested:.2e} (lowest smoothed loss / 10); steepest fall at {curve.steepest:.2e}")

# %%
result = fit_fold(cfg)
print(f"best val {cfg.metric} {result.best_score:.4f} at epoch {result.best_epoch}; outputs in {result.dir}")
result.history

# %%
curves(result.history, cfg.metric);
