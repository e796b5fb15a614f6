"""OOF accuracy on the demo competition: plain training vs SAM vs SAM+mixup, same epochs.

Run: .venv/bin/python bench/sam_mixup_demo.py  (after `kit demo-data` and `kit folds`)
"""

import sys
import time

import pandas as pd

from kit.competition import load_competition
from kit.config import TrainConfig
from kit.ensemble import load_oof
from kit.folds import folds_path, read_folds
from kit.metrics import metric_value
from kit.paths import comp_runs
from kit.train import fit_fold

BASE = dict(model=sys.argv[1] if len(sys.argv) > 1 else "test_efficientnet", img_size=32, epochs=12, lr=3e-3)
VARIANTS = {
    "plain": {},
    "sam": {"sam": "sam", "sam_rho": 0.05},
    "sam+mixup": {"sam": "sam", "sam_rho": 0.05, "mixup": 0.2, "cutmix": 0.0, "mixup_off_epochs": 2},
}

folds = read_folds(folds_path(load_competition("demo")))
rows = []
for name, extra in VARIANTS.items():
    exp = f"bench-{name}"
    t0 = time.time()
    for k in range(int(folds["fold"].max()) + 1):
        fit_fold(TrainConfig(exp=exp, fold=k, resume=False, **BASE, **extra))
    e = load_oof(comp_runs("runs", "demo"), exp, folds)
    y = e.oof["target"].to_numpy()
    rows.append({"variant": name, "oof_accuracy": metric_value("accuracy", y, e.probs),
                 "oof_log_loss": metric_value("log_loss", y, e.probs), "seconds": time.time() - t0})
    print(rows[-1], flush=True)
print(pd.DataFrame(rows).round(4).to_string(index=False))
