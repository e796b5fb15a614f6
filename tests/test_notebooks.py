import dataclasses
import os
import shutil
import time
from pathlib import Path

import jupytext
import nbformat
import pytest

from kit.config import TrainConfig
from kit.notebook import check_kernel, notebook_parameters, parameters_cell, run_notebook

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


@pytest.mark.parametrize("name", NAMES)
def test_each_ipynb_names_its_kernel_and_language_for_plain_papermill(name):
    """`papermill notebooks/<name>.ipynb out.ipynb` with no -k or --language reads both from the notebook."""
    from papermill.utils import nb_kernel_name, nb_language

    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    assert nb_kernel_name(nb) == "python3" and nb_language(nb) == "python"


@pytest.mark.parametrize("name", ["eda", "train_fold", "infer_ensemble"])
def test_notebooks_that_draw_say_inline_before_any_figure(name):
    """A kernel started with MPLBACKEND=Agg in its environment (make demo, make test) keeps no figure unless the
    notebook asks for the inline backend; kit's own kernels have it anyway (test below), plain papermill's not."""
    nb = jupytext.read(NOTEBOOKS / f"{name}.py")
    code = [c for c in nb.cells if c.cell_type == "code" and c is not parameters_cell(nb)]
    assert code[0].source.splitlines()[0] == "%matplotlib inline"


def test_jupytext_sync_of_an_edited_py_keeps_the_kernel_and_language(tmp_path):
    from jupytext.cli import jupytext as jupytext_cli

    for f in ("eda.py", "eda.ipynb", "jupytext.toml"):
        shutil.copy(NOTEBOOKS / f, tmp_path / f)
    py = tmp_path / "eda.py"
    py.write_text(py.read_text() + "\n# %%\nprint('edited')\n")
    os.utime(py, (time.time() + 10,) * 2)  # the newer of the pair: the one sync reads
    jupytext_cli(["--sync", str(py)])
    nb = nbformat.read(tmp_path / "eda.ipynb", as_version=4)
    assert nb.cells[-1].source == "print('edited')"
    assert nb.metadata.kernelspec.name == "python3" and nb.metadata.language_info.name == "python"


def test_kits_kernels_keep_figures_run_headless_and_talk_over_a_private_socket(tmp_path, monkeypatch, capfd):
    """Whatever the shell has (make demo: MPLBACKEND=Agg), a notebook without `%matplotlib inline` run by kit keeps
    its figure, shows no progress bars (KIT_HEADLESS) and its kernel uses no TCP port (ipykernel's "Kernel is
    running over TCP without encryption")."""
    from kit.device import HEADLESS_ENV

    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.delenv(HEADLESS_ENV, raising=False)
    monkeypatch.setenv("KIT_ROOT", str(tmp_path))
    nb = tmp_path / "nb.py"
    nb.write_text('# %% tags=["parameters"]\nx = 1\n\n'
                  '# %%\nimport json, os\nfrom ipykernel.connect import get_connection_file\n'
                  f'print(os.environ.get("{HEADLESS_ENV}"), json.load(open(get_connection_file()))["transport"])\n\n'
                  '# %%\nimport matplotlib.pyplot as plt\nplt.plot([1, 2]);\n')
    check_kernel()
    out = nbformat.read(run_notebook(nb, tmp_path / "out.ipynb", log=False), as_version=4)
    code = [c for c in out.cells if c.cell_type == "code"]
    assert code[-2].outputs[0].text.split() == ["1", "ipc" if os.name == "posix" else "tcp"]
    assert [o.output_type for o in code[-1].outputs] == ["display_data"] and "image/png" in code[-1].outputs[0].data
    assert "without encryption" not in capfd.readouterr().err
