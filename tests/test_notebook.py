"""Headless notebooks (kit.notebook): the parameters cell, plain values of its defaults' types, the kernel, and
papermill's failures as KitErrors. No kernel starts here: papermill is replaced where a run is needed; the
real runs are in test_runner, test_cli and test_e2e."""

import datetime
import json
import os
import sys

import jupytext
import pytest

import kit.notebook
from kit import KitError
from kit.notebook import (as_default_type, check_parameters, check_plain, environ, kernel_name, load_notebook,
                          notebook_parameters, run_notebook, tail)

NB = '''# %% [markdown]
# a title

# %% tags=["parameters"]
comp = "demo"
epochs = 5
lr = 0.003
resume = True
exps = ["a"]
extra = {"k": 1}
anything = None
size: int = 2 * 8

# %%
print(comp)
'''


@pytest.fixture
def nb_file(tmp_path):
    path = tmp_path / "nb.py"
    path.write_text(NB)
    return path


def test_parameters_are_the_names_and_literal_defaults_of_the_tagged_cell(nb_file):
    assert notebook_parameters(load_notebook(nb_file)) == {
        "comp": "demo", "epochs": 5, "lr": 0.003, "resume": True, "exps": ["a"], "extra": {"k": 1},
        "anything": None, "size": None}  # an expression: no default type, any value goes


def test_a_notebook_without_a_parameters_cell_or_file_is_refused(tmp_path):
    bare = tmp_path / "bare.py"
    bare.write_text("# %%\nepochs = 5\n")
    with pytest.raises(KitError, match=r"bare.py has no cell tagged 'parameters'.*tags=\[\"parameters\"\]"):
        load_notebook(bare)
    with pytest.raises(KitError, match=r"notebook .*missing.py does not exist"):
        load_notebook(tmp_path / "missing.py")


@pytest.mark.parametrize("value,default,expected", [
    ("5", 5, 5), ("-3", 1, -3), ("no", True, False), ("ON", False, True), ("1e-3", 0.1, 0.001), (2, 0.1, 2.0),
    ("007", "x", "007"), (7, None, 7), ("text", None, "text"), ([1], ["a"], [1]), (False, True, False)])
def test_values_take_the_type_of_their_default(value, default, expected):
    got = as_default_type("p", value, default, "src")
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize("value,default,message", [
    ("ten", 5, r"p='ten' from src should be int \(its default in the parameters cell is 5\), not str; give a whole"),
    (True, 5, "should be int"),  # a bool is no number here
    (1.5, 5, "should be int"),
    ("maybe", True, "give true or false"),
    (7, "x", r"should be str .*quote it"),
    ("a", ["a"], r"give a list, e.g. \[a, b\]"),
])
def test_a_value_of_another_type_is_refused_with_the_fix(value, default, message):
    with pytest.raises(KitError, match=message):
        as_default_type("p", value, default, "src")


@pytest.mark.parametrize("value,kind", [
    (b"x", "bytes"), ({1, 2}, "set"), (datetime.date(2024, 1, 1), "date"), ([1, {"k": (1,)}], "tuple"),
    ({"ok": [b"deep"]}, "bytes")])
def test_only_plain_values_all_the_way_down(value, kind):
    with pytest.raises(KitError, match=rf"parameter p.* from src is a {kind} .*plain values only"):
        check_plain("p", value, "src")


def test_plain_values_pass_and_dict_keys_must_be_strings():
    check_plain("p", {"a": [1, 2.5, None, True, "s", {"b": []}]}, "src")
    with pytest.raises(KitError, match=r"parameter p from src has the key 1 \(int\); dictionary keys must be strings"):
        check_plain("p", {1: "x"}, "src")


def test_check_parameters_names_the_unknown_ones_and_converts_the_rest(nb_file):
    nb = load_notebook(nb_file)
    assert check_parameters(nb, {"epochs": "3", "resume": "off", "anything": [1]}, nb_file) == {
        "epochs": 3, "resume": False, "anything": [1]}
    with pytest.raises(KitError, match=r"parameter\(s\) \['epoch', 'zz'\] are not in the parameters cell of .*nb.py; "
                                       r"it defines \['anything', 'comp'"):
        check_parameters(nb, {"zz": 1, "epoch": 3}, nb_file)
    with pytest.raises(KitError, match="is a bytes"):  # checked before its type: never pasted into the notebook
        check_parameters(nb, {"comp": b"x"}, nb_file)


def test_the_kernel_runs_this_interpreter_and_is_found_by_jupyter(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("JUPYTER_PATH", "/elsewhere")
    name = kernel_name()
    spec = tmp_path / "kit" / "jupyter" / "kernels" / name / "kernel.json"
    argv = json.loads(spec.read_text())["argv"]
    assert argv[:3] == [sys.executable, "-m", "kit.lifetime"] and "ipykernel_launcher" in argv
    assert os.environ["JUPYTER_PATH"].split(os.pathsep) == [str(tmp_path / "kit" / "jupyter"), "/elsewhere"]
    spec.write_text(json.dumps({"argv": ["/old/python"]}))  # an older kit's spec of the same name
    assert kernel_name() == name and json.loads(spec.read_text())["argv"] == argv
    assert os.environ["JUPYTER_PATH"].count(str(tmp_path)) == 1


def test_environ_sets_and_restores(monkeypatch):
    monkeypatch.setenv("KIT_T_OLD", "old")
    monkeypatch.delenv("KIT_T_NEW", raising=False)
    with pytest.raises(ValueError), environ(KIT_T_OLD="x", KIT_T_NEW="y"):
        assert (os.environ["KIT_T_OLD"], os.environ["KIT_T_NEW"]) == ("x", "y")
        raise ValueError  # restored on the way out of an error too
    assert os.environ["KIT_T_OLD"] == "old" and "KIT_T_NEW" not in os.environ


def test_tail_keeps_the_last_lines_without_colours():
    assert tail(["\x1b[0;31mValueError\x1b[0m", "a\nb", "c"], lines=2) == "b\nc"


@pytest.fixture
def papermill(monkeypatch, tmp_path):
    """papermill.execute_notebook replaced by a script of outcomes: an exception to raise, or None to succeed."""
    import papermill as pm

    calls, outcomes = [], []

    def execute(nb, output, parameters, **kw):
        calls.append({"parameters": parameters, "env": os.environ.get("KIT_ROOT"), **kw})
        outcome = outcomes.pop(0)
        if outcome:
            raise outcome

    monkeypatch.setattr(pm, "execute_notebook", execute)
    monkeypatch.setattr(kit.notebook.time, "sleep", lambda s: None)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return calls, outcomes


def test_a_kernel_that_fails_to_start_is_retried_then_reported(project, nb_file, papermill):
    calls, outcomes = papermill
    outcomes += [RuntimeError("Kernel died before replying"), OSError("address already in use"), None]
    out = run_notebook(nb_file, project / "out" / "nb.ipynb", {"epochs": "2"}, retries=3)
    assert out == project / "out" / "nb.ipynb" and out.parent.is_dir() and len(calls) == 3
    assert calls[-1]["parameters"] == {"epochs": 2} and calls[-1]["cwd"] == str(nb_file.parent)
    assert calls[-1]["kernel_name"].startswith("kit-") and calls[-1]["env"] == str(project)
    outcomes += [TimeoutError("no reply")] * 2
    with pytest.raises(KitError, match=r"the kernel for nb.py did not start after 2 tries: TimeoutError: no reply"):
        run_notebook(nb_file, project / "o.ipynb", retries=2)


def test_a_failing_cell_is_a_kit_error_naming_it_and_the_executed_notebook(project, nb_file, papermill):
    import papermill as pm

    calls, outcomes = papermill
    traceback = ["\x1b[31mTraceback\x1b[0m", "line"]
    outcomes.append(pm.PapermillExecutionError(3, 1, "x = f()", "ValueError", "bad value", traceback))
    with pytest.raises(KitError, match=r"(?s)nb.py failed in cell 1: ValueError: bad value\nTraceback\nline\n"
                                       r"executed notebook: .*o.ipynb"):
        run_notebook(nb_file, project / "o.ipynb")
    assert len(calls) == 1  # a cell's error is not retried


def test_parameters_are_checked_before_any_kernel_starts(project, nb_file, papermill):
    calls, _ = papermill
    with pytest.raises(KitError, match="not in the parameters cell"):
        run_notebook(nb_file, project / "o.ipynb", {"nope": 1})
    assert calls == [] and not (project / "o.ipynb").exists()


def test_a_py_percent_notebook_round_trips_through_jupytext(nb_file):
    nb = load_notebook(nb_file)
    assert [c.cell_type for c in nb.cells] == ["markdown", "code", "code"]
    assert jupytext.writes(nb, fmt="py:percent").count("# %%") == 3


def test_kits_kernels_get_no_interrupt_when_they_are_shut_down(monkeypatch, tmp_path):
    """jupyter_client sends SIGINT before every shutdown; an ipykernel busy with a message then logs
    "KeyboardInterrupt caught in kernel." into the user's terminal. kit's kernels skip it, a user's interrupt
    still goes through, and papermill's kernels (run_notebook) get the same manager class."""
    import signal

    from jupyter_client.manager import KernelManager

    from kit.notebook import kernel_config, kernel_manager_class, started_kernel

    sent = []
    real = KernelManager._async_signal_kernel

    async def recording(self, signum):
        sent.append((self.shutting_down, signum))
        await real(self, signum)

    monkeypatch.setattr(KernelManager, "_async_signal_kernel", recording)
    nb = tmp_path / "n.py"
    nb.write_text("# %% tags=['parameters']\nx = 1\n")
    with started_kernel(nb) as km:
        km.interrupt_kernel()  # a user's interrupt
    assert sent[0] == (False, signal.SIGINT) and (True, signal.SIGINT) not in sent
    with kernel_config() as config:
        assert config.NotebookClient.kernel_manager_class is kernel_manager_class()


def test_a_user_interrupt_after_a_restart_still_reaches_the_kernel(monkeypatch, tmp_path):
    import signal

    from jupyter_client.manager import KernelManager

    from kit.notebook import started_kernel

    sent = []
    real = KernelManager._async_signal_kernel

    async def recording(self, signum):
        sent.append(signum)
        await real(self, signum)

    monkeypatch.setattr(KernelManager, "_async_signal_kernel", recording)
    nb = tmp_path / "n.py"
    nb.write_text("# %% tags=['parameters']\nx = 1\n")
    with started_kernel(nb) as km:
        km.restart_kernel(now=True)  # a shutdown inside: no interrupt
        assert signal.SIGINT not in sent
        km.interrupt_kernel()  # jupyter's own shutting_down flag stays set after a restart; ours does not
    assert sent.count(signal.SIGINT) == 1
