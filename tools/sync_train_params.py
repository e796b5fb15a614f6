"""Regenerate the train notebook's parameters cell from kit.config.TrainConfig (fields, defaults, comments).

Run after changing TrainConfig: .venv/bin/python tools/sync_train_params.py && jupytext --sync notebooks/train_fold.py
tests/test_notebooks.py fails when the two disagree.
"""

import dataclasses
import re
from pathlib import Path

from kit.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
src = (ROOT / "kit" / "config.py").read_text()
lines = []
for f in dataclasses.fields(TrainConfig):
    m = re.search(rf"^    {f.name}: \w+ = [^#\n]*(#.*)?$", src, re.M)
    comment = f"  {m.group(1)}" if m and m.group(1) else ""
    lines.append(f"{f.name} = {getattr(TrainConfig(), f.name)!r}{comment}")
path = ROOT / "notebooks" / "train_fold.py"
nb = path.read_text()
start = nb.index('# %% tags=["parameters"]\n') + len('# %% tags=["parameters"]\n')
end = nb.index("\n# %%", start)
path.write_text(nb[:start] + "\n".join(lines) + "\n" + nb[end:])
