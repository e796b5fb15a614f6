import argparse
import dataclasses
import errno
import json
import os
import re
import tempfile
from pathlib import Path

import pandas as pd
import pytest

import kit.cli
from kit import KitError
from kit.cli import main, parse_params
from kit.config import TrainConfig

NOTEBOOK = str(Path(kit.cli.__file__).resolve().parents[1] / "notebooks" / "train_fold.py")  # the kit under test's


def test_unknown_parameter_fails_before_any_fold(tiny_comp, project, capsys):
    code = main(["run-folds", "--exp", "x", "--notebook", NOTEBOOK, "-p", "epoch=3"])
    assert code == 2
    assert "parameter(s) ['epoch'] are not in the parameters cell of" in capsys.readouterr().err
    assert not (project / "runs" / "demo" / "x").exists()


@pytest.mark.parametrize("flag,value,message", [
    ("--epochs", "ten", "argument --epochs: parameter epochs='ten' should be int"),
    ("--lr", "fast", "argument --lr: parameter lr='fast' should be float"),
    ("--sam", "bogus", "argument --sam: invalid choice: 'bogus' (choose from 'off', 'sam', 'asam')"),
])
def test_ill_typed_flag_is_a_usage_error_before_anything_runs(project, capsys, flag, value, message):
    with pytest.raises(SystemExit) as e:
        main(["run-folds", "--exp", "x", "--notebook", NOTEBOOK, flag, value])
    assert e.value.code == 2 and message in capsys.readouterr().err
    assert not (project / "runs" / "demo" / "x").exists()


# --- the flags are the config's fields (issue 13) ------------------------------------------------------------

def subparsers() -> dict:
    """{name: parser} of every `kit` subcommand."""
    parser = kit.cli.build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices


def options(parser) -> dict:
    return {a.dest: a for a in parser._actions if a.option_strings and a.dest != "help"}


def test_every_config_field_is_a_flag_typed_and_documented_by_its_field():
    from kit.config import choices, describe

    for cmd in ("train", "run-folds"):
        flags = options(subparsers()[cmd])
        for f in dataclasses.fields(TrainConfig):
            if f.name in ("exp", "fold"):
                continue
            action = flags[f.name]
            assert action.option_strings[0] == "--" + f.name.replace("_", "-") and action.default is None
            assert action.help == f.metadata["help"] and action.field is f
            if isinstance(f.default, bool):
                assert isinstance(action, argparse.BooleanOptionalAction), f.name
            else:
                assert action.type("1" if f.name != "model" else "x") == type(f.default)("1" if f.name != "model"
                                                                                        else "x")
            if isinstance(f.metadata.get("choices"), tuple):
                assert tuple(action.choices) == choices(f)
    shown = subparsers()["train"].format_help()
    for name in ("sam", "tta", "label_smoothing"):
        f = {f.name: f for f in dataclasses.fields(TrainConfig)}[name]
        assert " ".join(f"{describe(f)} (default: {f.default!r})".split()) in " ".join(shown.split())


def test_bool_flags_and_typed_values_reach_the_config():
    args = kit.cli.build_parser().parse_args(["train", "--exp", "e", "--fold", "0", "--no-resume", "--pretrained",
                                              "--epochs", "3", "--lr", "1e-3", "--comp", "007"])
    assert kit.cli.config_params(args) == {"resume": False, "pretrained": True, "epochs": 3, "lr": 1e-3,
                                           "comp": "007", "exp": "e", "fold": 0}


def test_every_subcommand_and_option_says_what_it_is_for():
    for name, parser in subparsers().items():
        assert parser.description, name
        for action in parser._actions:
            assert action.help and action.help.strip(), f"kit {name} {action.option_strings or action.dest}"


def test_where_flags_are_defined_once_by_the_config():
    """--comp/--data-dir/--runs-dir in every subcommand are the TrainConfig field's flag, not a copy."""
    from kit.config import describe

    seen = 0
    for name, parser in subparsers().items():
        for dest in ("comp", "data_dir", "runs_dir"):
            action = options(parser).get(dest)
            if action is not None:
                seen += 1
                assert getattr(action, "field", None) is not None, f"kit {name} --{dest} is written by hand"
                assert describe(action.field) in " ".join(parser.format_help().split()), name
    assert seen >= 10


def test_version(capsys):
    import kit

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out == f"kit {kit.__version__}\n"


def test_run_folds_reads_the_notebook_once(tiny_comp, project, monkeypatch, capsys):
    import jupytext

    reads = []
    read = jupytext.read
    monkeypatch.setattr(jupytext, "read", lambda *a, **k: reads.append(a[0]) or read(*a, **k))
    assert main(["run-folds", "--exp", "x", "--notebook", NOTEBOOK, "--model", "no_such_model"]) == 2
    assert "unknown model 'no_such_model'" in capsys.readouterr().err
    assert len(reads) == 1, reads


def test_demo_experiments_live_in_the_demo_module():
    from kit.demo import EXPERIMENTS

    assert set(EXPERIMENTS) == {"effnet", "resnet"} and not hasattr(kit.cli, "DEMO_EXPERIMENTS")
    for params in EXPERIMENTS.values():
        TrainConfig.from_params(params)  # valid parameters


def test_notebook_without_parameters_cell_is_refused(project, tmp_path, capsys):
    nb = tmp_path / "bare.py"
    nb.write_text("# %%\nx = 1\n")
    assert main(["run-folds", "--exp", "x", "--notebook", str(nb)]) == 2
    assert "has no cell tagged 'parameters'" in capsys.readouterr().err


def test_params_from_yaml_and_flags(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("epochs: 3\nmodel: test_resnet\n")
    assert parse_params(["epochs=5", "tta=hflip"], str(f)) == {"epochs": 5, "model": "test_resnet", "tta": "hflip"}


def test_score_without_demo_says_how_to_build_it(project, capsys):
    (project / "s.csv").write_text("image_id,label\n")
    assert main(["score", str(project / "s.csv")]) == 2
    assert "kit demo-data" in capsys.readouterr().err


# --- parameters are plain values, never code (issue 12 item 2) ---------------------------------------------

PARAMS_NB = '# %% tags=["parameters"]\nname = ""\ncode = "x"\nday = ""\nepochs = 1\n\n# %%\nprint(repr((name, code, day, epochs)))\n'


def payload_file(tmp_path, tag: str) -> tuple[Path, Path]:
    """A params file whose `name` value, if it ever reached the notebook, would create `pwned`."""
    import base64

    pwned = tmp_path / "pwned"
    code = f'" + str(__import__("os").system("touch {pwned}")) + "'  # what str(bytes) pastes into the cell
    values = {
        "binary": f"name: !!binary {base64.b64encode(code.encode()).decode()}\n",
        "python_object": f"name: !!python/object/apply:os.system ['touch {pwned}']\n",
        "set": "name: !!set {a: null, b: null}\n",
        "date": "name: 2024-01-01\n",
        "nested": f"name: [ok, {{deep: !!binary {base64.b64encode(code.encode()).decode()}}}]\n",
    }
    f = tmp_path / "params.yaml"
    f.write_text(values[tag])
    return f, pwned


@pytest.mark.parametrize("tag,kind", [("binary", "bytes"), ("python_object", "python/object"), ("set", "set"),
                                      ("date", "date"), ("nested", "bytes")])
def test_params_file_values_that_are_not_plain_are_refused_and_never_run(project, tmp_path, capsys, tag, kind):
    nb = tmp_path / "p.py"
    nb.write_text(PARAMS_NB)
    params, pwned = payload_file(tmp_path, tag)
    assert main(["notebook", str(nb), "--params-file", str(params), "--out", str(tmp_path / "o.ipynb")]) == 2
    err = capsys.readouterr().err
    assert str(params) in err and kind in err and "name" in err
    assert not pwned.exists()  # the payload did not run
    assert not (tmp_path / "o.ipynb").exists()  # no kernel was started at all


def test_string_parameters_stay_text_and_cannot_break_out_of_their_quotes(project, tmp_path):
    nb = tmp_path / "p.py"
    nb.write_text(PARAMS_NB)
    pwned = tmp_path / "pwned"
    evil = f'x" + str(__import__("os").system("touch {pwned}")) + "'
    out = tmp_path / "o.ipynb"
    assert main(["notebook", str(nb), "--out", str(out), "-p", f"name={evil}", "-p", "code=007",
                 "-p", "day=2024-01-01", "-p", "epochs=3"]) == 0
    printed = "".join(json.loads(out.read_text())["cells"][-1]["outputs"][0]["text"])
    assert printed.strip() == repr((evil, "007", "2024-01-01", 3))
    assert not pwned.exists()


def test_dash_p_values_follow_the_type_of_the_notebook_default():
    defaults = {"comp": "demo", "model": "x", "epochs": 5, "exps": ["a"]}
    assert parse_params(["comp=007", "model=no", "epochs=7", "exps=[a, b]"], None, defaults) == {
        "comp": "007", "model": "no", "epochs": 7, "exps": ["a", "b"]}
    with pytest.raises(KitError, match=r"parameter epochs from -p 'epochs=2024-01-01' is a date"):
        parse_params(["epochs=2024-01-01"], None, defaults)


# --- clear errors before any fold starts --------------------------------------------------------------------

def run_folds_args(*extra):
    return ["run-folds", "--exp", "e", "--notebook", NOTEBOOK, "--epochs", "1", *extra]


@pytest.mark.parametrize("args,message", [
    (["-p", "model=no"], r"unknown model 'no'"),  # YAML would make it False: "model=False should be str"
    (["-p", "comp=007"], r"competition '007' not found"),  # not 7
    (["-p", "comp=2024-01-01"], r"competition '2024-01-01' not found"),  # not a date (a TypeError before)
    (["--folds", "a"], r"--folds 'a': give fold numbers of folds.csv .* it has folds 0..2"),
    (["--folds", "0,3"], r"--folds '0,3': .* it has folds 0..2"),
    (["--stagger", "-1"], r"stagger=-1.0: the seconds between worker starts cannot be negative"),
    (["--jobs", "0"], r"jobs=0: run at least 1 fold at a time"),
    (["--model", "no_such_model"], r"unknown model 'no_such_model'"),
    (["-p", "metric=bogus"], r"metric"),
    (["--tta", "bogus"], r"tta"),
    (["--exp", "../../escaped"], r"experiment name '../../escaped' is not a plain name"),
    (["--runs-dir", "afile/runs"], r"runs_dir='.*afile/runs' cannot be written \(Not a directory\)"),
])
def test_run_folds_bad_input_is_a_clear_error_before_any_fold(tiny_comp, project, capsys, args, message):
    (project / "afile").write_text("a file, not a folder")
    before = sorted(p.relative_to(project) for p in project.rglob("*"))
    assert main(run_folds_args(*args)) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert "Traceback" not in err
    assert sorted(p.relative_to(project) for p in project.rglob("*")) == before  # nothing written anywhere


@pytest.mark.parametrize("text,message", [
    (None, r"params file .*missing.yaml cannot be read"),
    ("- epochs\n- 3\n", r"params file .*p.yaml holds a list, not a mapping"),
    ("epochs: [1,\n", r"params file .*p.yaml is not plain YAML"),
    ("model: no\n", r"parameter model=False from .*p.yaml should be str .* quote it"),
    ("comp: 007\n", r"parameter comp=7 from .*p.yaml should be str"),
    ("3: x\n", r"the name 3 is a int"),
])
def test_bad_params_file_is_a_clear_error(project, tmp_path, capsys, text, message):
    f = tmp_path / ("missing.yaml" if text is None else "p.yaml")
    if text is not None:
        f.write_text(text)
    assert main(run_folds_args("--params-file", str(f))) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert not (project / "runs" / "demo" / "e").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through permission bits")
def test_read_only_runs_folder_is_a_clear_error(tiny_comp, project, capsys):
    (project / "runs").chmod(0o555)
    try:
        assert main(run_folds_args()) == 2
    finally:
        (project / "runs").chmod(0o755)
    assert re.search(r"runs_dir='.*runs' cannot be written \(Permission denied\)", capsys.readouterr().err)


@pytest.mark.parametrize("error", [OSError(errno.EROFS, "Read-only file system"),
                                   PermissionError(errno.EACCES, "Permission denied")], ids=["erofs", "eacces"])
def test_read_only_runs_folder_is_refused_before_any_fold_even_as_root(tiny_comp, project, capsys, monkeypatch, error):
    """Root writes into a 0o555 folder (the test above is skipped then): the errors a read-only mount or another
    user's folder raise, where run-folds probes runs/, stop it before any fold with the folder and the reason."""
    runs, real = (project / "runs").resolve(), tempfile.TemporaryFile

    def probe(*args, dir=None, **kwargs):
        if dir is not None and Path(dir).resolve() == runs:
            raise error
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryFile", probe)
    before = sorted(p.relative_to(project) for p in project.rglob("*"))
    assert main(run_folds_args()) == 2
    err = capsys.readouterr().err
    assert re.search(rf"runs_dir='.*runs' cannot be written \({error.strerror}\)", err), err
    assert sorted(p.relative_to(project) for p in project.rglob("*")) == before  # no fold started


@pytest.mark.parametrize("n", ["0", "1"])
def test_fewer_than_two_folds_is_a_clear_error(tiny_comp, project, capsys, n):
    (tiny_comp.root / "folds.csv").unlink()
    assert main(["folds", "--n-folds", n]) == 2
    assert f"--n-folds {n}: cross-validation needs at least 2 folds" in capsys.readouterr().err
    assert not (tiny_comp.root / "folds.csv").exists()
    assert main(["demo", "--n-folds", n, "--data-dir", "demo_data"]) == 2  # before the demo data is built
    assert f"--n-folds {n}: cross-validation needs at least 2 folds" in capsys.readouterr().err
    assert not (project / "demo_data").exists()


def test_score_with_a_non_integer_label_is_a_clear_error(tiny_comp, project, capsys):
    sample = pd.read_csv(tiny_comp.sample_submission, dtype=str)
    sample.loc[3, "label"] = "seven"
    sample.to_csv(project / "s.csv", index=False)
    assert main(["score", str(project / "s.csv")]) == 2
    assert "s.csv: column 'label' has 1 value(s) that are not a digit class 0..9, e.g. ['seven']" in \
        capsys.readouterr().err


def test_ctrl_c_on_run_folds_ends_with_one_line_saying_what_is_done(tiny_comp, project, fit_tiny, monkeypatch, capsys):
    import kit.board
    import kit.runner

    fit_tiny("m", 0)  # fold 0 finished before the Ctrl-C; 1 and 2 were running
    capsys.readouterr()

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(kit.runner, "run_folds", interrupted)
    assert main(["run-folds", "--exp", "m", "--notebook", NOTEBOOK]) == 130
    err = capsys.readouterr().err
    assert err.strip() == ("kit run-folds: interrupted; demo/m: folds 0 complete, 1,2 not (rerun the same command: "
                           "they resume from their last.pt)")
    assert main(["run-folds", "--exp", "m", "--notebook", NOTEBOOK, "--force"]) == 130
    assert "(rerun without --force: they resume from their last.pt)" in capsys.readouterr().err  # --force restarts
    monkeypatch.setattr(kit.board, "board", interrupted)  # any other command: one line too
    assert main(["board"]) == 130 and capsys.readouterr().err.strip() == "kit board: interrupted"


@pytest.mark.slow  # starts a kernel
def test_kit_notebook_keeps_executed_notebooks_under_their_competition(project, capsys):
    (project / "probe.py").write_text('# %% tags=["parameters"]\ncomp = "flowers"\n\n# %%\nx = 1\n')
    (project / "plain.py").write_text('# %% tags=["parameters"]\ny = 2\n\n# %%\nx = 1\n')
    assert main(["notebook", str(project / "probe.py")]) == 0
    assert main(["notebook", str(project / "probe.py"), "-p", "comp=mushrooms"]) == 0
    assert main(["notebook", str(project / "plain.py")]) == 0
    assert (project / "runs" / "flowers" / "_notebooks" / "probe.ipynb").is_file()
    assert (project / "runs" / "mushrooms" / "_notebooks" / "probe.ipynb").is_file()  # two competitions, two files
    assert (project / "runs" / "_notebooks" / "plain.ipynb").is_file()  # no competition: runs/_notebooks
