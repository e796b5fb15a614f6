"""The fold runner's overhead: one fold through `run_folds` (worker process, kernel, papermill)
against calling `fit_fold` directly on the same tiny config, side by side in one run.

Run: .venv/bin/python bench/runner_overhead.py   (builds a 300-image demo in a temp folder)
"""

import os
import tempfile
import time
from pathlib import Path

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "train_fold.py"
CONFIG = {"model": "test_resnet", "img_size": 16, "epochs": 2, "batch_size": 32, "tta": "none"}


def main(repeats: int = 3) -> None:
    root = Path(tempfile.mkdtemp())
    for d in ("data", "runs", "notebooks"):
        (root / d).mkdir()
    os.environ["KIT_ROOT"] = str(root)
    os.chdir(root)
    from kit.competition import load_competition
    from kit.config import TrainConfig
    from kit.demo import build_demo
    from kit.folds import folds_path, make_folds, write_folds
    from kit.runner import run_folds
    from kit.train import fit_fold

    build_demo("data", n=300, size=16)
    comp = load_competition("demo")
    write_folds(make_folds(comp, 3), folds_path(comp))
    direct, runner = [], []
    for i in range(repeats):
        t0 = time.perf_counter()
        fit_fold(TrainConfig(exp=f"direct{i}", resume=False, **CONFIG))
        direct.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        run_folds(f"runner{i}", [0], {**CONFIG, "resume": False}, NOTEBOOK)
        runner.append(time.perf_counter() - t0)
    d, r = min(direct), min(runner)
    print("| path | seconds per fold (best of %d) |\n| --- | --- |" % repeats)
    print(f"| fit_fold in this process | {d:.1f} |\n| run_folds (worker + kernel + papermill) | {r:.1f} |")
    print(f"| overhead | {r - d:.1f} s per fold |")


if __name__ == "__main__":
    main()
