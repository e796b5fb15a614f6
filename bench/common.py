"""What every benchmark shares: the machine, the photo dataset on disk, interleaved timing, table rows.

Speed on a shared or throttled machine drifts by 10-20% within a minute, so two things compared
are timed in alternation (A, B, A, B, ...) and each is reported as the median of its rounds.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
CLASSES = 10


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    return (f"{cpu}, {os.cpu_count()} cores{gpu}; Python {platform.python_version()}, torch {torch.__version__}, "
            f"{torch.get_num_threads()} torch threads")


def photo_dataset(n: int, side: int = 512, root: Path | None = None) -> Path:
    """n JPEGs (quality 90, side x side) in ImageFolder layout, root/train/c<k>/<i>.jpg: random crops,
    flips and colour shifts of scikit-learn's two sample photos, so they decode like real photos (flat
    noise or solid colours would decode faster than anything a competition ships)."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    root = root or RESULTS / f"photos{side}"
    train = root / "train"
    if sum(1 for _ in train.glob("c*/*.jpg")) >= n:
        return root
    photos = load_sample_images().images  # 427 x 640 each
    rng = np.random.default_rng(0)
    for i in range(n):
        path = train / f"c{i % CLASSES}" / f"{i:06d}.jpg"
        if path.is_file():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        im = photos[i % len(photos)]
        crop = int(rng.integers(280, 420))
        y, x = rng.integers(0, im.shape[0] - crop + 1), rng.integers(0, im.shape[1] - crop + 1)
        part = im[y:y + crop, x:x + crop][:, :: rng.choice([-1, 1])]
        part = np.clip(part * rng.uniform(0.7, 1.3, 3), 0, 255).astype(np.uint8)
        Image.fromarray(part).resize((side, side), Image.BICUBIC).save(path, quality=90)
    return root


def image_files(root: Path, n: int) -> tuple[list[str], np.ndarray]:
    paths = sorted(str(p) for p in (root / "train").glob("c*/*.jpg"))[:n]
    return paths, np.array([int(Path(p).parent.name[1:]) for p in paths])


def interleaved(runs: dict[str, Callable[[], float]], rounds: int, warmup: bool = True) -> dict[str, float]:
    """{name: median of `rounds` values}; each callable does one timed unit of work and returns its value
    (e.g. images/s). With warmup, one untimed call of each first: lazy kernel setup, worker start."""
    if warmup:
        for fn in runs.values():
            fn()
    values = {name: [] for name in runs}
    for _ in range(rounds):
        for name, fn in runs.items():
            values[name].append(fn())
    return {name: statistics.median(v) for name, v in values.items()}


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


@dataclass
class Row:
    """One line of the table: the kit's figure against a reference, and the target for their ratio."""
    measure: str
    kit: str
    reference: str
    ratio: float | None = None
    target: str = ""
    met: bool | None = None

    def cells(self) -> list[str]:
        ratio = "" if self.ratio is None else f"{self.ratio:.2f}"
        met = {None: "", True: "yes", False: "**no**"}[self.met]
        return [self.measure, self.kit, self.reference, ratio, self.target, met]


def at_least(ratio: float, target: float) -> tuple[float, str, bool]:
    return ratio, f">= {target}", ratio >= target


def at_most(ratio: float, target: float) -> tuple[float, str, bool]:
    return ratio, f"<= {target}", ratio <= target


def markdown(rows: list[Row]) -> str:
    head = ["measure", "kit", "reference", "ratio", "target", "met"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r.cells()) + " |" for r in rows]
    return "\n".join(lines)
