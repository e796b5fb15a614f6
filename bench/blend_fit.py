"""Blend weight fitting time: 10 experiments x rows x 10 classes, each method, at 1x and 10x the rows.

Run: .venv/bin/python bench/blend_fit.py [rows]   (default 100000)
"""

from __future__ import annotations

import sys

import numpy as np

from common import Row, timed

METHODS = ("mean", "slsqp", "caruana")
CARUANA_TARGET = 10.0  # seconds for caruana at the larger size, 1,000,000 rows in `make bench` (issue 16)


def synthetic(rows: int, experiments: int = 10, classes: int = 10, seed: int = 0):
    """OOF-like float32 probabilities: experiment e is a little better than e - 1."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, rows)
    preds = []
    for e in range(experiments):
        z = rng.normal(size=(rows, classes)).astype(np.float32)
        z[np.arange(rows), y] += 1 + 0.1 * e
        p = np.exp(z)
        preds.append(p / p.sum(1, keepdims=True))
    return preds, y


def duration(s: float) -> str:
    return f"{s:.3g} s" if s >= 0.1 else f"{s * 1000:.2g} ms"


def main(rows: int = 100_000, growth: int = 10) -> list[Row]:
    from kit.blendconfig import BlendConfig
    from kit.ensemble import fit_blend_weights

    seconds = {}
    for n in (rows, rows * growth):
        preds, y = synthetic(n)
        for method in METHODS:
            seconds[method, n] = timed(lambda: fit_blend_weights(preds, y, BlendConfig(method, "accuracy")))
            print(f"{method} {n} rows: {seconds[method, n]:.2f} s", flush=True)
        del preds
    # 'mean' takes microseconds: its ratio would be timer noise
    table = [Row(f"blend fit, 10 exps x 10 classes, {method}: {rows * growth:,} rows / {rows:,} rows",
                 duration(seconds[method, rows * growth]), duration(seconds[method, rows]),
                 None if method == "mean" else seconds[method, rows * growth] / seconds[method, rows])
             for method in METHODS]
    table[-1].target = f"<= {CARUANA_TARGET:g} s at {rows * growth:,} rows"
    table[-1].met = seconds["caruana", rows * growth] <= CARUANA_TARGET
    return table


if __name__ == "__main__":
    from common import markdown

    print(markdown(main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)))
