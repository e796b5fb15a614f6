"""Regenerate what is written from kit.config.TrainConfig (fields, defaults, help/choices/bounds metadata):
the train notebook's parameters cell and README.md's parameter table.

Run after changing TrainConfig: .venv/bin/python tools/sync_train_params.py && jupytext --sync notebooks/train_fold.py
tests/test_config.py and tests/test_notebooks.py fail when they and the config disagree.
"""

from pathlib import Path

from kit.config import parameters_cell, parameters_table

ROOT = Path(__file__).resolve().parents[1]
CELL = ('# %% tags=["parameters"]\n', "\n# %%")  # from the cell's tag line to the next cell
TABLE = ("<!-- parameters:start -->\n", "<!-- parameters:end -->")


def replace_between(path: Path, marks: tuple[str, str], text: str) -> None:
    """Rewrite what lies between the two marks (both kept) in `path`; the rest of the file stays as is."""
    old = path.read_text()
    start = old.index(marks[0]) + len(marks[0])
    end = old.index(marks[1], start)
    path.write_text(old[:start] + text + old[end:])


if __name__ == "__main__":
    replace_between(ROOT / "notebooks" / "train_fold.py", CELL, parameters_cell())
    replace_between(ROOT / "README.md", TABLE, parameters_table())
