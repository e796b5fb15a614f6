"""Peak memory (RSS) of one fold's training at 1x and 10x the number of images: images are read lazily,
one batch at a time, so the peak must not grow with the dataset. Each size runs fit_fold in its own
process (its own peak).

Run: .venv/bin/python bench/memory.py [images]   (default 1000; the 10x run uses 10000)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from common import Row, at_most

HERE = Path(__file__).resolve().parent
CONFIG = dict(model="test_efficientnet", img_size=32, epochs=1, batch_size=64, tta="none", device="cpu")


def child(n: int, folder: str) -> None:
    """Build an n-image Kaggle-layout competition of 96 px JPEGs, train fold 0, print the peak RSS."""
    import numpy as np
    import pandas as pd
    from PIL import Image

    from kit.competition import load_competition
    from kit.config import TrainConfig
    from kit.folds import folds_path, make_folds, write_folds
    from kit.train import fit_fold

    root = Path(folder) / "data" / "mem"
    (root / "train").mkdir(parents=True)
    rng = np.random.default_rng(0)
    tiles = [Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)) for _ in range(16)]
    for i in range(n):
        tiles[i % 16].save(root / "train" / f"{i:06d}.jpg", quality=80)
    pd.DataFrame({"id": [f"{i:06d}" for i in range(n)], "label": [f"c{i % 10}" for i in range(n)]}).to_csv(
        root / "train.csv", index=False)
    os.chdir(folder)
    comp = load_competition("mem")
    write_folds(make_folds(comp, 5), folds_path(comp))
    setup = peak_rss_mb()
    fit_fold(TrainConfig(comp="mem", exp="mem", fold=0, **CONFIG))
    print(json.dumps({"images": n, "peak_rss_mb": peak_rss_mb(), "setup_peak_rss_mb": setup}))


def peak_rss_mb() -> float:
    """This process's own high-water RSS. Not getrusage's ru_maxrss: Linux carries the parent's peak
    into a child across fork and exec, so every child would report the bench's own (blend) peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak(n: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        out = subprocess.run([sys.executable, __file__, "--child", str(n), folder], capture_output=True, text=True,
                             env={**os.environ, "KIT_HEADLESS": "1", "KIT_ROOT": folder}, cwd=HERE)
        if out.returncode:
            raise RuntimeError(f"memory child with {n} images failed:\n{out.stderr[-3000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])


def main(images: int = 1000, growth: int = 10) -> list[Row]:
    small, large = peak(images), peak(images * growth)
    print(small, large, flush=True)
    return [Row(f"peak RSS of a fold's training ({CONFIG['model']}, 1 epoch): {images * growth:,} images / "
                f"{images:,} images", f"{large['peak_rss_mb']:.0f} MB", f"{small['peak_rss_mb']:.0f} MB",
                *at_most(large["peak_rss_mb"] / small["peak_rss_mb"], 1.2))]


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(int(sys.argv[2]), sys.argv[3])
    else:
        from common import markdown

        print(markdown(main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)))
