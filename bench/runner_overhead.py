"""The fold runner's overhead: `run_folds` on N tiny folds (worker processes, kernels, papermill, imports,
one executed notebook per fold) against the same N fits called directly in this process, side by side.

overhead per fold = (run_folds wall time - the direct fits' time) / N, each the median of alternating
rounds (common.interleaved). The direct fits run after one untimed fit, so they hold no import or
first-call cost: all of that is the runner's to hide.

Run: .venv/bin/python bench/runner_overhead.py [folds]   (builds a tiny demo in a temp folder; ~2 min)
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from common import Row, at_most, interleaved, timed

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "train_fold.py"
CONFIG = {"model": "test_resnet", "img_size": 16, "epochs": 2, "batch_size": 32, "tta": "none"}
TARGET = 5.0  # seconds per fold (issue 16)


def main(folds: int = 5, rounds: int = 3) -> list[Row]:
    from kit.notebook import environ

    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as root, environ(KIT_ROOT=root, KIT_HEADLESS="1"):
        os.chdir(root)
        try:
            seconds = measure(Path(root), folds, rounds)
        finally:
            os.chdir(cwd)
    direct, runner = seconds["direct"], seconds["runner"]
    overhead = (runner - direct) / folds
    print(f"run_folds {runner:.1f} s, direct fits {direct:.1f} s, {folds} folds: {overhead:.1f} s per fold", flush=True)
    _, target, met = at_most(overhead, TARGET)
    return [Row(f"runner overhead per fold: run-folds of {folds} tiny folds (jobs=1) minus the same fits called "
                "directly", f"{overhead:.1f} s ({runner:.1f} s in all)", f"fit alone {direct / folds:.1f} s/fold",
                None, f"{target} s", met)]


def measure(root: Path, folds: int, rounds: int) -> dict[str, float]:
    """{"direct": seconds of the N fits called here, "runner": seconds of run_folds on the same N folds}, each
    the median of `rounds` alternating rounds (a run_folds is a new run each time: its start is counted)."""
    from kit.competition import load_competition
    from kit.config import TrainConfig
    from kit.demo import build_demo
    from kit.folds import folds_path, make_folds, write_folds
    from kit.runner import run_folds
    from kit.train import fit_fold

    for d in ("data", "runs"):
        (root / d).mkdir()
    build_demo("data", n=50 * folds, size=16)
    comp = load_competition("demo")
    write_folds(make_folds(comp, folds), folds_path(comp))
    fit_fold(TrainConfig(exp="warmup", resume=False, **CONFIG))  # imports, first calls, the image cache
    runs = iter(range(rounds))

    def direct() -> float:
        return sum(timed(lambda: fit_fold(TrainConfig(exp="direct", fold=k, resume=False, **CONFIG)))
                   for k in range(folds))

    def runner() -> float:
        exp = f"runner{next(runs)}"
        t0 = time.perf_counter()
        summary = run_folds(exp, list(range(folds)), CONFIG, NOTEBOOK, jobs=1)
        assert summary["status"].tolist() == ["done"] * folds, summary.to_dict("records")
        return time.perf_counter() - t0

    return interleaved({"direct": direct, "runner": runner}, rounds, warmup=False)


if __name__ == "__main__":
    from common import markdown

    print(markdown(main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)))
