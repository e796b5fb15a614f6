import dataclasses
from pathlib import Path

import jupytext
import pytest

from kit.config import TrainConfig
from kit.notebook import notebook_parameters, parameters_cell

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = ["eda", "train_fold", "infer_ensemble", "kaggle_infer"]


def cells(nb):
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


@pytest.mark.parametrize("name", NAMES)
def test_ipynb_is_in_sync_with_py(name):
    py, ipynb = jupytext.read(NOTEBOOKS / f"{name}.py"), jupytext.read(NOTEBOOKS / f"{name}.ipynb")
    assert cells(py) == cells(ipynb), f"{name}.ipynb drifted from {name}.py: run `jupytext --sync notebooks/*.py`"


@pytest.mark.parametrize("name", NAMES)
def test_every_notebook_has_a_parameters_cell(name):
    assert parameters_cell(jupytext.read(NOTEBOOKS / f"{name}.py")) is not None


def test_train_notebook_parameters_are_the_config_fields_and_defaults():
    params = notebook_parameters(jupytext.read(NOTEBOOKS / "train_fold.py"))
    assert params == dataclasses.asdict(TrainConfig())


@pytest.mark.parametrize("name", NAMES)
def test_papermill_parses_every_parameter(name, tmp_path, caplog):
    """papermill's own parser skips lines it cannot read (e.g. '=' in a comment) and then calls the
    parameter unknown: every assignment in the cell must be visible to it."""
    import papermill

    nb = jupytext.read(NOTEBOOKS / f"{name}.py")
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "python3"}
    jupytext.write(nb, tmp_path / f"{name}.ipynb")
    seen = set(papermill.inspect_notebook(str(tmp_path / f"{name}.ipynb")))
    assert seen == set(notebook_parameters(nb)) and "Unable to parse" not in caplog.text
