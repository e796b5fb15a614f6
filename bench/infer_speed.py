"""Test inference images/s of a blend of 2 experiments x 5 folds with d4 TTA: kit's one pass (each test
image decoded once, resized once per model input, all 10 fold models run on the batch in memory) against
the old way, one pass per fold (every fold decodes the test set again), same models, batch and images.

The models are stand-ins that cost next to nothing (a global average pool and a linear layer): on a
CPU a real model's forward outweighs decoding whatever the pipeline does, so what is measured is the CPU
side of the pass (decode, resize, normalize, TTA views, loader), which is what limits it when a GPU runs
the models. Both experiments' sizes decode the 512 px JPEGs at the same reduced scale (1/4).

Run: .venv/bin/python bench/infer_speed.py
"""

from __future__ import annotations

import os

import torch
from torch import nn

from common import Row, at_least, image_files, interleaved, photo_dataset, timed

# (experiment, input size, normalization mean): two experiments with their own size and normalization
EXPERIMENTS = (("a", 40, 0.5), ("b", 48, 0.45))
FOLDS, TTA = 5, "d4"


def fold_models(classes: int = 10):
    """(FoldModel, tta) per fold of each experiment, as kit.infer.load_fold returns them."""
    from kit.infer import FoldModel

    models = []
    for exp, size, mean in EXPERIMENTS:
        for k in range(FOLDS):
            torch.manual_seed(k)
            model = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, classes)).eval()
            models.append((FoldModel(None, model, size, (mean,) * 3, (0.25,) * 3, None, "softmax"), TTA))
    return models


def one_pass(models, paths, batch: int):
    from kit.infer import predict_images

    return predict_images(models, paths, torch.device("cpu"), batch, 0)


def pass_per_fold(models, paths, batch: int):
    """What kit.infer did before: per fold its own dataset, loader and pass."""
    from kit.augment import eval_transform
    from kit.data import ImageDataset, make_loader
    from kit.tta import predict

    return [predict(m.model, make_loader(ImageDataset(paths, None, eval_transform(m.size, m.mean, m.std), m.size),
                                         batch, False), tta, dtype=m.dtype) for m, tta in models]


def main(images: int = 64, batch: int = 32, rounds: int = 3, root=None) -> list[Row]:
    torch.set_num_threads(os.cpu_count() or 1)
    paths, _ = image_files(photo_dataset(images, 512, root), images)
    models = fold_models()

    def rate(fn):
        return lambda: len(paths) / timed(lambda: fn(models, paths, batch))

    v = interleaved({"kit": rate(one_pass), "old": rate(pass_per_fold)}, rounds)
    print({k: round(s, 1) for k, s in v.items()}, flush=True)
    return [Row(f"test inference, {len(EXPERIMENTS)} exps x {FOLDS} folds, {TTA} TTA, 512 px JPEGs, stand-in models "
                "(the CPU side of a GPU pass): one decode per image / one per fold", f"{v['kit']:.1f} img/s", f"{v['old']:.1f} img/s",
                *at_least(v["kit"] / v["old"], 2.0))]


if __name__ == "__main__":
    from common import markdown

    print(markdown(main()))
