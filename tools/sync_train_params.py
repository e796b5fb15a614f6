"""Regenerate the train notebook's parameters cell from kit.config.TrainConfig (fields, defaults, help metadata).

Run after changing TrainConfig: .venv/bin/python tools/sync_train_params.py && jupytext --sync notebooks/train_fold.py
tests/test_config.py and tests/test_notebooks.py fail when the two disagree.
"""

from pathlib import Path

from kit.config import parameters_cell

MARK = '# %% tags=["parameters"]\n'
path = Path(__file__).resolve().parents[1] / "notebooks" / "train_fold.py"
nb = path.read_text()
start = nb.index(MARK) + len(MARK)
end = nb.index("\n# %%", start)
path.write_text(nb[:start] + parameters_cell() + nb[end:])
