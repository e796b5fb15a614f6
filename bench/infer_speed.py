"""Test inference images/s of a blend of 2 experiments x 5 folds with d4 TTA: kit's one pass (each test
image decoded once, resized once per model input, all 10 fold models run on the batch in memory) against
the old way, one pass per fold (every fold decodes the test set again), same models, batch and images.

The models are timm's tiny test models at small sizes, so a forward costs about what decoding a 512 px
JPEG does: the regime of a GPU running real models, where the CPU's decoding is what limits the pass.

Run: .venv/bin/python bench/infer_speed.py
"""

from __future__ import annotations

import os

import torch

from common import Row, at_least, image_files, interleaved, photo_dataset, timed

# (experiment, timm model, input size, normalization mean): two experiments with their own size and mean
EXPERIMENTS = (("a", "test_convnext", 32, 0.5), ("b", "test_vit", 32, 0.45))
FOLDS, TTA = 5, "d4"


def fold_models(classes: int = 10):
    """(FoldModel, tta) per fold of each experiment, as kit.infer.load_fold returns them (untrained weights)."""
    from kit.infer import FoldModel
    from kit.models import create_model

    models = []
    for exp, name, size, mean in EXPERIMENTS:
        for k in range(FOLDS):
            torch.manual_seed(k)
            model = create_model(name, classes).eval().to(memory_format=torch.channels_last)
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


def main(images: int = 64, batch: int = 32, rounds: int = 3) -> list[Row]:
    torch.set_num_threads(os.cpu_count() or 1)
    paths, _ = image_files(photo_dataset(images, 512), images)
    models = fold_models()

    def rate(fn):
        return lambda: len(paths) / timed(lambda: fn(models, paths, batch))

    v = interleaved({"kit": rate(one_pass), "old": rate(pass_per_fold)}, rounds)
    print({k: round(s, 1) for k, s in v.items()}, flush=True)
    return [Row(f"test inference, {len(EXPERIMENTS)} exps x {FOLDS} folds, {TTA} TTA, tiny models on 512 px JPEGs: "
                "one decode per image / one per fold", f"{v['kit']:.1f} img/s", f"{v['old']:.1f} img/s",
                *at_least(v["kit"] / v["old"], 2.0))]


if __name__ == "__main__":
    from common import markdown

    print(markdown(main()))
