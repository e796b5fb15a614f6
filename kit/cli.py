"""The `kit` command: the same code paths as the notebooks, headless."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

from . import KitError, __version__
from .config import TrainConfig, coerce, describe


def config_flag(p: argparse.ArgumentParser, f: dataclasses.Field, default=None) -> None:
    """The flag of one TrainConfig field, all from the field (kit.config.param): its type (argparse refuses
    `--epochs x` with the config's message), its fixed choices, its help; a bool as --flag/--no-flag."""
    typ = type(f.default)
    kind = dict(action=argparse.BooleanOptionalAction) if typ is bool else dict(type=typed(typ, f.name),
                                                                                 metavar=typ.__name__.upper())
    if isinstance(f.metadata.get("choices"), tuple):  # a registry's (a function) would import torch at every start
        kind.update(choices=f.metadata["choices"], metavar=None)
    action = p.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, default=default, help=f.metadata["help"],
                            **kind)
    action.field = f  # FieldHelp writes the whole help from it


def typed(typ: type, name: str):
    """argparse's `type` for a field: the config's own coercion, its KitError as argparse's usage error."""
    def convert(text: str):
        try:
            return coerce(text, typ, name)
        except KitError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return convert


class FieldHelp(argparse.HelpFormatter):
    """Options' defaults in --help; a config flag's help is its field's `describe` (help, choices, bounds),
    written only when help is shown: augment's choices are a registry that imports albumentations
    and torch, seconds that every `kit` start would pay."""

    def _get_help_string(self, action):  # the hook argparse's own ArgumentDefaultsHelpFormatter overrides
        f = getattr(action, "field", None)
        if f is not None:
            return f"{describe(f)} (default: {f.default!r})".replace("%", "%%")
        shown = action.option_strings and not isinstance(action.default, bool) and \
            action.default not in (None, "", argparse.SUPPRESS)
        return f"{action.help} (default: %(default)s)" if shown else action.help


def add_config_flags(p: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field but exp and fold; unset flags stay None (not passed on)."""
    g = p.add_argument_group("training parameters (the train notebook's parameters cell)")
    for f in dataclasses.fields(TrainConfig):
        if f.name not in ("exp", "fold"):
            config_flag(g, f)


def where(*names: str) -> argparse.ArgumentParser:
    """A parent parser with the --comp/--data-dir/--runs-dir flags among `names` for the subcommands that take
    them, defined by their TrainConfig fields like every config flag (help, default)."""
    p = argparse.ArgumentParser(add_help=False)
    for f in dataclasses.fields(TrainConfig):
        if f.name in names:
            config_flag(p, f, f.default)
    return p


def config_params(args: argparse.Namespace) -> dict:
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
            if getattr(args, f.name, None) is not None}


def parse_params(pairs: list[str] | None, params_file: str | None = None, defaults: dict | None = None) -> dict:
    """-p name=value pairs over an optional YAML file of parameters.

    A -p value stays the text as written when the parameter's default (`defaults`: the notebook's parameters
    cell) is a string: -p comp=007 is '007', -p model=no is 'no'; other values are read as YAML
    (-p epochs=5, -p 'exps=[a, b]'). Every value must be plain (str, int, float, bool, list, dict, null).
    """
    from .notebook import as_default_type, check_plain

    defaults = defaults or {}
    params = read_params_file(params_file) if params_file else {}
    for name in set(params) & set(defaults):  # here, where the message can name the file
        params[name] = as_default_type(name, params[name], defaults[name], params_file)
    for pair in pairs or []:
        name, sep, raw = pair.partition("=")
        name = name.strip()
        if not sep or not name:
            raise KitError(f"-p {pair!r}: write it as name=value")
        if isinstance(defaults.get(name), str):
            params[name] = raw
            continue
        try:
            params[name] = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise KitError(f"-p {pair!r}: {raw!r} is not a value ({getattr(e, 'problem', e)}); quote it as text "
                           f"or write a list as -p '{name}=[a, b]'") from None
        check_plain(name, params[name], f"-p {pair!r}")
        if name in defaults:
            params[name] = as_default_type(name, params[name], defaults[name], f"-p {pair!r}")
    return params


def read_params_file(path: str | Path) -> dict:
    """A YAML mapping of parameter names to plain values (no !! tags, no dates: they are refused)."""
    from .notebook import check_plain

    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise KitError(f"params file {path} cannot be read ({e.strerror or e}); check the path given to "
                       "--params-file") from None
    try:
        data = yaml.safe_load(text)  # safe_load: a !!python tag is an error, never an object
    except yaml.YAMLError as e:
        raise KitError(f"params file {path} is not plain YAML: {e}\nwrite one `name: value` per line, "
                       "without !! tags") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise KitError(f"params file {path} holds a {type(data).__name__}, not a mapping; write one "
                       "`name: value` per line, e.g.\nmodel: effnet_b0\nepochs: 10")
    for name, value in data.items():
        if not isinstance(name, str):
            raise KitError(f"params file {path}: the name {name!r} is a {type(name).__name__}; names are "
                           "parameters of the notebook, e.g. `epochs: 10`")
        check_plain(name, value, path)
    return data


def parse_folds(text: str, n: int) -> list[int]:
    """--folds '0,2' -> [0, 2], each a fold of folds.csv (0..n-1); '' -> every fold."""
    if not text:
        return list(range(n))
    try:
        folds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        folds = []
    bad = [k for k in folds if not 0 <= k < n]
    if not folds or bad:
        raise KitError(f"--folds {text!r}: give fold numbers of folds.csv separated by commas, e.g. --folds 0,2; "
                       f"it has folds 0..{n - 1}")
    return list(dict.fromkeys(folds))


def check_n_folds(n: int) -> int:
    if n < 2:
        raise KitError(f"--n-folds {n}: cross-validation needs at least 2 folds (5 is usual)")
    return n


def cmd_demo_data(a):
    from .demo import build_demo

    print(f"wrote {build_demo(a.data_dir, a.name, n=a.n, task=a.task, renders=a.renders, test_renders=a.test_renders)}")


def cmd_folds(a):
    from .competition import load_competition
    from .folds import folds_path, make_folds, write_folds

    comp = load_competition(a.comp, a.data_dir)
    path = folds_path(comp, a.runs_dir)
    h = write_folds(make_folds(comp, check_n_folds(a.n_folds), a.seed, a.method), path, {"seed": a.seed, "method": a.method})
    print(f"{path}: hash {h}")


def cmd_train(a):
    from .train import fit_fold

    r = fit_fold(TrainConfig.from_params(config_params(a), exp=a.exp, fold=a.fold))
    print(r.history.to_string(index=False))
    print(f"best {r.best_score:.4f} at epoch {r.best_epoch}; outputs in {r.dir}")


def cmd_lr_find(a):
    import numpy as np

    from .lrfind import lr_find
    from .paths import resolve

    curve = lr_find(TrainConfig.from_params(config_params(a), exp=a.exp, fold=a.fold), a.start, a.end, a.steps)
    shown = curve.table.iloc[np.unique(np.linspace(0, len(curve.table) - 1, 12).astype(int))]
    print(shown.to_string(index=False, formatters={"lr": "{:.2e}".format, "loss": "{:.4f}".format,
                                                   "smoothed": "{:.4f}".format}))
    if a.plot:
        from .plots import lr_curve

        lr_curve(curve).savefig(resolve(a.plot), dpi=100)
        print(f"plot: {resolve(a.plot)}")
    print(f"suggested lr {curve.suggested:.2e} (the lowest smoothed loss / 10); steepest fall at "
          f"{curve.steepest:.2e}; pass it as --lr")


def cmd_fit_full(a):
    from .full import fit_full

    r = fit_full(a.comp, a.exp, a.runs_dir, a.data_dir, a.epochs, resume=not a.force,
                 **{k: v for k, v in (("device", a.device), ("threads", a.threads)) if v is not None})
    print(f"full-data model of {a.exp}: {len(r.history)} epoch(s) on every training row; {r.dir}")


def cmd_run_folds(a):
    from .notebook import load_notebook, notebook_parameters
    from .runner import run_folds

    nb = load_notebook(a.notebook)  # read once: its defaults type the -p values, run_folds checks the rest
    defaults = notebook_parameters(nb)
    params = {**parse_params(a.param, a.params_file, defaults), **config_params(a)}  # flags come typed
    located = {**defaults, **params}  # comp, data_dir, runs_dir as the folds will see them
    folds = parse_folds(a.folds, n_folds(located))
    try:
        summary = run_folds(a.exp, folds, params, a.notebook, located.get("runs_dir", "runs"), a.force, jobs=a.jobs,
                            gpus=a.gpus, stagger=a.stagger, backend=a.backend, address=a.address,
                            on_status=StatusPrinter(), nb=nb, say=print)
    except KeyboardInterrupt:  # the workers are gone (run_local); one line, not a traceback
        print(f"\n{interrupted_line(located, a.exp, folds, a.force)}", file=sys.stderr)
        return 130
    return report_jobs(summary)


def interrupted_line(located: dict, exp: str, folds: list[int], force: bool = False) -> str:
    """What a Ctrl-C of run-folds leaves: the folds complete, and those stopped (they resume on a rerun, without
    --force, which would start them afresh)."""
    from .paths import comp_runs, fold_dir
    from .rundir import is_complete

    rerun = "rerun without --force" if force else "rerun the same command"
    try:
        runs = comp_runs(located.get("runs_dir") or "runs", located.get("comp") or "demo")
        done = [k for k in folds if is_complete(fold_dir(runs, exp, k))]
    except (KitError, OSError):
        return f"kit run-folds: interrupted ({rerun}: unfinished folds resume from their last.pt)"
    stopped = [k for k in folds if k not in done]
    return (f"kit run-folds: interrupted; {runs.name}/{exp}: folds {','.join(map(str, done)) or 'none'} complete, "
            f"{','.join(map(str, stopped)) or 'none'} not ({rerun}: they resume from their last.pt)")


class StatusPrinter:
    """The live status table, printed when a fold changes state or epoch (and at least every minute)."""

    def __init__(self):
        self.last, self.when = None, 0.0

    def __call__(self, table: pd.DataFrame) -> None:
        key = table[["state", "epoch"]].to_json()
        if key != self.last or time.time() - self.when > 60:
            print(f"\n{time.strftime('%H:%M:%S')}\n{table.to_string(index=False)}", flush=True)
            self.last, self.when = key, time.time()


def n_folds(params: dict) -> int:
    from .competition import load_competition
    from .folds import folds_path, read_folds

    comp = load_competition(params.get("comp", "demo"), params.get("data_dir", "data"))
    return int(read_folds(folds_path(comp, params.get("runs_dir", "runs")))["fold"].max()) + 1


def report_jobs(summary: pd.DataFrame) -> int:
    print(summary[["name", "status", "seconds", "notebook"]].round(1).to_string(index=False))
    failed = summary[summary["status"].isin(["failed", "stale", "differs", "busy"])]
    for _, row in failed.iterrows():
        print(f"\n--- {row['name']} {row['status']} ---\n{row['error']}", file=sys.stderr)
    return 1 if len(failed) else 0


def cmd_notebook(a):
    from .notebook import load_notebook, notebook_parameters, run_notebook
    from .paths import NOTEBOOKS, notebooks_dir, resolve

    defaults = notebook_parameters(load_notebook(a.notebook))
    params = parse_params(a.param, a.params_file, defaults)
    located = {**defaults, **params}
    folder = notebooks_dir(located.get("runs_dir") or "runs", located["comp"]) if located.get("comp") else \
        resolve("runs") / NOTEBOOKS
    out = run_notebook(a.notebook, a.out or folder / Path(a.notebook).with_suffix(".ipynb").name, params)
    print(f"executed notebook: {out}")


def cmd_blend(a):
    from .blendconfig import BlendConfig
    from .infer import blend_and_submit, blend_metric
    from .scorecard import decision_summary

    metric = blend_metric(a.metric, a.comp, a.exps, a.runs_dir)  # what the experiments were trained on, unless --metric
    config = BlendConfig(a.method, metric, a.space, a.power, a.rounds, a.fit_metric, models=a.models, tta=a.tta)
    done = blend_and_submit(a.comp, a.exps, config, a.blend_json, a.name, "submissions", a.data_dir, a.runs_dir,
                            a.device, a.submission_kind, a.batch_size, a.num_workers)
    if done.report:
        r = done.report
        print(r.scores.round(4).to_string(index=False))
        decision = decision_summary(r.blend, metric)  # thresholds / cut points: the honest score includes them
        print(decision or f"blend OOF {metric}: {r.oof_score:.4f} in-sample, {r.honest_score:.4f} ± "
                          f"{r.honest_std:.4f} honest")
    print(f"wrote {done.path} and {done.blend_path.name}")


def cmd_package(a):
    from . import publish
    from .deps import KAGGLE_MAY_LACK
    from .package import package_for_kaggle

    user = a.kaggle_user or publish.default_user()
    if a.push:  # checked before the bundle (a minute of wheel building) is written
        if not a.kaggle_comp:
            raise KitError("--push needs --comp NAME: the kernel runs on that competition's data")
        publish.kaggle_command(user)
    extra = tuple(dict.fromkeys([*KAGGLE_MAY_LACK, *(x.strip() for x in a.extra.split(",") if x.strip())]))
    out = package_for_kaggle(a.blend_json, a.out, a.runs_dir, extra, comp=a.kaggle_comp, kaggle_user=user)
    print(run_time_line(a))
    if a.push:
        print(f"bundle in {out}; pushed: kernel {publish.push(out, a.kaggle_comp, user)} runs on Kaggle")
    elif a.kaggle_comp:
        print(f"bundle in {out}: kaggle datasets create -p {out} --dir-mode zip, then kaggle kernels push -p {out} "
              f"(or kit package --push)")
    else:
        print(f"bundle in {out}: upload it as a Kaggle dataset; run kaggle_infer.ipynb with the internet off")


def run_time_line(a) -> str:
    """The bundle notebook's inference time, from the blend's models timed here on a few images of the local
    test set of --comp (kit.infer.estimate_test_run); why not, when it cannot be."""
    from .device import pick_device
    from .infer import estimate_test_run

    if not a.kaggle_comp:
        return "no run-time estimate: pass --comp NAME, with the competition's test images under --data-dir"
    try:
        seconds, n = estimate_test_run(a.blend_json, a.kaggle_comp, a.data_dir, a.runs_dir)
    except KitError as e:
        return f"no run-time estimate: {e}"
    return (f"estimated inference time: {seconds / 60:.1f} min for {n} test images, timed here on "
            f"{pick_device('auto').type} (Kaggle's GPU or a hidden test set of another size scales it)")


def cmd_score(a):
    from .demo import leaderboard_score
    from .grade import grade
    from .paths import resolve

    if a.solution:
        metric, value = grade(resolve(a.submission), resolve(a.solution), a.metric, a.task)
        print(f"{metric}: {value:.4f} (against {a.solution})")
    else:
        print(f"leaderboard {a.metric or 'score'}: {leaderboard_score(a.submission, a.data_dir, a.comp, a.metric):.4f}")


def cmd_board(a):
    from .board import board, differing_params

    table = board(a.runs_dir, a.metric or None, comp=a.board_comp or None)
    print(table.drop(columns="notes").round(4).to_string(index=False, na_rep=""))
    if table.attrs["blend"]:
        print(f"blend_weight: from the newest blend, {table.attrs['blend']}")
    notes = [f"{exp}: {n}" for exp, ns in zip(table["experiment"], table["notes"]) for n in ns]
    if notes:
        print("\n" + "\n".join(notes))
    differ = differing_params(a.runs_dir, table.attrs["comp"])
    print("\nparameters that differ between experiments:\n" + differ.to_string() if len(differ)
          else "\nno training parameter differs between experiments")
    return 0


def cmd_demo(a):
    """The whole day of SPEC.md on the embedded demo competition, then the moves beyond a blend."""
    from .demo import EXPERIMENTS, best_row, build_demo, confident_rows, day_table, pseudo_pair, scored_row
    from .infer import blend_metric
    from .io import write_csv
    from .notebook import run_notebook
    from .paths import comp_runs, notebooks_dir, resolve
    from .runner import run_folds

    check_n_folds(a.n_folds)
    t0 = time.time()
    nb = resolve("notebooks")

    def train(exp: str, params: dict) -> bool:
        params = {**params, "comp": "demo", "data_dir": a.data_dir, **({"epochs": a.epochs} if a.epochs else {})}
        summary = run_folds(exp, list(range(a.n_folds)), params, nb / "train_fold.py", a.runs_dir, force=True,
                            jobs=a.jobs, on_status=StatusPrinter() if a.verbose else None)
        if report_jobs(summary):
            return False
        print(f"[{time.time() - t0:5.0f}s] experiment {exp}: {a.n_folds} folds trained")
        return True

    build_demo(a.data_dir, "demo", n=a.n, renders=a.renders, test_renders=a.test_renders)
    print(f"[{time.time() - t0:5.0f}s] demo competition in {resolve(a.data_dir) / 'demo'}")
    run_notebook(nb / "eda.py", notebooks_dir(a.runs_dir, "demo") / "eda.ipynb",
                 {"comp": "demo", "data_dir": a.data_dir, "runs_dir": a.runs_dir, "n_folds": a.n_folds},
                 log=a.verbose)
    print(f"[{time.time() - t0:5.0f}s] EDA done, folds written")
    if not all(train(f"demo-{exp}", params) for exp, params in EXPERIMENTS.items()):
        return 1
    exps = [f"demo-{e}" for e in EXPERIMENTS]
    run_notebook(nb / "infer_ensemble.py", notebooks_dir(a.runs_dir, "demo") / "infer_ensemble.ipynb",
                 {"comp": "demo", "data_dir": a.data_dir, "runs_dir": a.runs_dir, "exps": exps, "name": "demo"},
                 log=a.verbose)
    print(f"[{time.time() - t0:5.0f}s] blended: submission {resolve('submissions') / 'demo.csv'}")
    metric = blend_metric("", "demo", exps, a.runs_dir)  # what the experiments were trained on
    table = day_table(exps, metric, a.data_dir, a.runs_dir)
    honest = f"honest_{metric}"
    if a.pseudo:  # the best single experiment again, with the confident test rows of the best blend
        teacher, student = pseudo_pair(table, honest)
        blend_json = resolve("submissions") / teacher["submission"].replace(".csv", ".blend.json")
        sure = confident_rows(blend_json, a.pseudo_threshold, a.n_folds, "demo", a.data_dir)
        print(f"[{time.time() - t0:5.0f}s] pseudo-labels from {teacher['submission']}: {', '.join(map(str, sure))} "
              f"test images at >= {a.pseudo_threshold} for the students of folds 0..{a.n_folds - 1}")
        if not any(sure):  # the student would train on what it trained on: no move to show
            print(f"no test image reaches --pseudo-threshold {a.pseudo_threshold}: the pseudo-label move is left out")
        else:
            params = {**EXPERIMENTS[student.removeprefix("demo-")], "pseudo": str(blend_json),
                      "pseudo_threshold": a.pseudo_threshold}
            if not train(f"{student}-pseudo", params):
                return 1
            moved = [f"{student}-pseudo" if e == student else e for e in exps]
            table = pd.concat([table, pd.DataFrame([
                scored_row(f"{student} + pseudo-labels ({teacher['row'].split(' (')[0]}'s)", [f"{student}-pseudo"],
                           f"{student}-pseudo", metric, a.data_dir, a.runs_dir),
                scored_row(f"stacking with {student}-pseudo", moved, "demo-stack-pseudo", metric, a.data_dir,
                           a.runs_dir, method="stack")])], ignore_index=True)
    saved = write_csv(table, comp_runs(a.runs_dir, "demo") / "day.csv")
    print(f"[{time.time() - t0:5.0f}s] each row's submission and blend.json in {resolve('submissions')}; "
          f"this table in {saved}\n")
    print(table.round(4).to_string(index=False))
    best = best_row(table, honest)
    print(f"\nbest by the honest score (the leaderboard is not for choosing): {best['row']}, "
          f"{honest} {best[honest]:.4f}, leaderboard_{metric} {best[f'leaderboard_{metric}']:.4f}")
    return 0


def command(sub, name: str, fn, help: str, *parents: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """A subcommand running `fn`: `help` is its line in `kit --help` and the description of `kit <name> --help`."""
    s = sub.add_parser(name, help=help, description=help, parents=list(parents))
    s.set_defaults(fn=fn)
    return s


def add_param_flags(s: argparse.ArgumentParser, winner: str) -> None:
    """-p and --params-file: notebook parameters as text, typed like the parameters cell's defaults."""
    s.add_argument("-p", "--param", action="append", metavar="NAME=VALUE",
                   help="a parameter of the notebook's parameters cell, repeatable")
    s.add_argument("--params-file", help=f"YAML file of parameters ({winner} win)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kit", description=__doc__, formatter_class=FieldHelp)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND",
                           parser_class=functools.partial(argparse.ArgumentParser, formatter_class=FieldHelp))

    s = command(sub, "demo", cmd_demo, "build the demo competition and run the whole day on it",
                where("data_dir", "runs_dir"))
    s.add_argument("--n-folds", type=int, default=5, help="folds of the cross-validation")
    s.add_argument("--n", type=int, default=0, help="use a stratified subset of n digits (0 = all 1,797)")
    s.add_argument("--epochs", type=int, default=0, help="override the demo experiments' epochs (0: theirs)")
    s.add_argument("--renders", type=int, default=2,
                   help="each digit rendered this many times, small, shifted, recoloured, on clutter, partly "
                        "occluded and noisy: a demo with headroom (0: the plain digits, which every model nearly "
                        "solves)")
    s.add_argument("--test-renders", type=int, default=4,
                   help="each test digit rendered this many times (with --renders > 0): a leaderboard of 1,440 "
                        "images, for the cost of inference")
    s.add_argument("--pseudo-threshold", type=float, default=TrainConfig.pseudo_threshold,
                   help="the pseudo-label move's threshold: test images whose blended top probability reaches it")
    s.add_argument("--verbose", action="store_true", help="show the notebooks' output and the fold status table")
    s.add_argument("--jobs", type=int, default=2,
                   help="folds trained at once (2: on 2 CPU cores two one-threaded folds beat one two-threaded)")
    s.add_argument("--no-pseudo", dest="pseudo", action="store_false",
                   help="skip the last move: the best experiment trained again with pseudo-labels from the best "
                        "blend's confident test predictions (minutes)")

    s = command(sub, "demo-data", cmd_demo_data, "write the demo competition to data/demo/ and its hidden labels",
                where("data_dir"))
    s.add_argument("--name", default="demo", help="the competition's folder under --data-dir")
    s.add_argument("--task", default="multiclass", choices=("multiclass", "binary", "ordinal", "multilabel"),
                   help="binary: digit >= 5 scored by AUC; ordinal: the digit scored by QWK; multilabel: which "
                        "digits appear on two side by side, mean F1")
    s.add_argument("--n", type=int, default=0, help="use a stratified subset of n digits (0 = all 1,797)")
    s.add_argument("--renders", type=int, default=0,
                   help="the hard demo: each digit rendered this many times, small, shifted, recoloured, on clutter, "
                        "partly occluded and noisy, grouped so that renderings of one digit share a side of every "
                        "split (0: the plain digits)")
    s.add_argument("--test-renders", type=int, default=0,
                   help="each test digit rendered this many times (0: as --renders): a larger leaderboard")

    s = command(sub, "folds", cmd_folds, "write folds.csv once for a competition",
                where("comp", "data_dir", "runs_dir"))
    s.add_argument("--n-folds", type=int, default=5, help="folds of the cross-validation")
    s.add_argument("--seed", type=int, default=42, help="the split's random seed")
    s.add_argument("--method", default="auto", choices=["auto", "stratified", "group"],
                   help="auto: group k-fold when train.csv has a group column, else stratified")

    s = command(sub, "train", cmd_train, "train one fold in this process (no notebook)")
    s.add_argument("--exp", required=True, help="experiment name: runs/<comp>/<exp>/fold<k>/")
    s.add_argument("--fold", type=int, required=True, help="the fold of folds.csv to train")
    add_config_flags(s)

    s = command(sub, "fit-full", cmd_fit_full, "train an experiment once more on every row, for the epochs its folds "
                "chose (runs/<comp>/<exp>/full/)", where("comp", "data_dir", "runs_dir"))
    s.add_argument("--exp", required=True, help="the experiment whose folds are trained")
    s.add_argument("--epochs", type=int, default=0, help="0: the median of the folds' best epochs")
    s.add_argument("--force", action="store_true", help="start afresh instead of resuming an interrupted fit")
    s.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:<n> or mps")
    s.add_argument("--threads", type=int, default=None, help="torch intra-op threads")

    s = command(sub, "lr-find", cmd_lr_find, "LR range test: the loss against an exponentially rising LR on a fold")
    s.add_argument("--exp", default="lr-find", help="experiment name (nothing is written under runs/)")
    s.add_argument("--fold", type=int, default=0, help="the fold whose training rows it trains on")
    s.add_argument("--start", type=float, default=1e-7, help="the first learning rate")
    s.add_argument("--end", type=float, default=10.0, help="the last learning rate")
    s.add_argument("--steps", type=int, default=100, help="updates (one micro-batch each); it stops early when "
                   "the loss diverges")
    s.add_argument("--plot", default="", help="also save the curve as a PNG here")
    add_config_flags(s)

    s = command(sub, "run-folds", cmd_run_folds, "run the train notebook headlessly once per fold")
    s.add_argument("--exp", required=True, help="experiment name: runs/<comp>/<exp>/fold<k>/")
    s.add_argument("--folds", default="", help="e.g. 0,2 (default: every fold in folds.csv)")
    s.add_argument("--notebook", default="notebooks/train_fold.py", help="the notebook each fold runs")
    s.add_argument("--force", action="store_true", help="rerun folds that are already complete")
    s.add_argument("--jobs", type=int, default=1, help="folds at once on CPU (give each --threads)")
    s.add_argument("--gpus", default="", help="one job per GPU: '0,1' or 'auto' (sets CUDA_VISIBLE_DEVICES)")
    s.add_argument("--stagger", type=float, default=2.0, help="seconds between job starts")
    s.add_argument("--backend", default="local", choices=["local", "ray"],
                   help="local: worker processes on this machine; ray: one task per fold on a Ray cluster")
    s.add_argument("--address", default="", help="Ray cluster address (default: start or join a local one)")
    add_param_flags(s, "flags")
    add_config_flags(s)

    s = command(sub, "notebook", cmd_notebook, "run any notebook headlessly with papermill")
    s.add_argument("notebook", help="a py:percent .py or an .ipynb with a cell tagged parameters")
    s.add_argument("--out", help="executed notebook path (default runs/<comp>/_notebooks/<name>.ipynb, "
                                 "runs/_notebooks/ for a notebook without a comp parameter)")
    add_param_flags(s, "-p")

    s = command(sub, "blend", cmd_blend, "infer + ensemble headlessly and write submissions/<name>.csv",
                where("comp", "data_dir", "runs_dir"))
    s.add_argument("--exps", default="", help="comma-separated experiment names")
    s.add_argument("--name", default="submission", help="submissions/<name>.csv and <name>.blend.json")
    from .blendconfig import METHODS, SPACES, BlendConfig

    b = BlendConfig()  # the flags' defaults and choices are the config's
    s.add_argument("--method", default=b.method, choices=METHODS,
                   help="caruana: ensemble selection (with replacement); slsqp: weights fitted on log loss; mean; "
                        "stack: a logistic regression on the experiments' log-probabilities (single-label tasks)")
    s.add_argument("--metric", default="",
                   help="what the blend is reported in and the TTA chosen on (default: the metric the experiments "
                        "were trained on): accuracy, log_loss, qwk, roc_auc, mean_col_auc, f_beta:<b>, map@<k>, "
                        "module:function[:max|:min] or an sklearn scorer name")
    s.add_argument("--space", default=b.space, choices=SPACES,
                   help="what the weights average: probabilities, log-probabilities, p ** --power, or ranks")
    s.add_argument("--power", type=float, default=b.power, help="the exponent of the power space")
    s.add_argument("--fit-metric", default=b.fit_metric,
                   help="what the weights are fitted on (auto: log loss; in rank space the metric); --metric is "
                        "what they are reported in")
    s.add_argument("--rounds", type=int, default=b.rounds, help="caruana's selection rounds")
    from .blendconfig import MODELS

    s.add_argument("--models", default=b.models, choices=MODELS,
                   help="what predicts the test set: each experiment's fold models, its full-data model (kit "
                        "fit-full), or both (half each); TTA and weights are fitted on the folds' OOF either way")
    s.add_argument("--tta", default=b.tta,
                   help="auto: each experiment's TTA chosen on OOF (and again inside the honest score); or one TTA "
                        "for every experiment, e.g. none, hflip, d4@squash")
    s.add_argument("--submission-kind", default="", choices=["", "auto", "label", "probability"],
                   help="a one-column target as labels or probabilities (default: auto, or the saved blend's)")
    s.add_argument("--blend-json", default="", help="apply a saved blend to the test set (no training data needed; "
                                                    "the fit flags are not used)")
    s.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:<n> or mps: where the test set is inferred")
    s.add_argument("--batch-size", type=int, default=128,
                   help="test images per batch, and per forward with the TTA views (lower it if the GPU runs out)")
    s.add_argument("--num-workers", type=int, default=-1,
                   help="processes decoding test images; -1: 0 on CPU, the cores per GPU (at most 8) on CUDA")

    s = command(sub, "package", cmd_package,
                "bundle kit, wheels, checkpoints and blend.json for an offline Kaggle notebook",
                where("runs_dir", "data_dir"))
    s.add_argument("--blend-json", required=True, help="the blend to bundle: submissions/<name>.blend.json")
    s.add_argument("--out", default="kaggle_bundle", help="the bundle folder (replaced only when it is a kit bundle)")
    from .deps import KAGGLE_MAY_LACK

    s.add_argument("--extra", default="", help=f"comma-separated packages to bundle besides kit and those a Kaggle "
                                               f"image may lack ({', '.join(KAGGLE_MAY_LACK)}); the notebook installs "
                                               f"each only where the image has no fitting version")
    # its own flag, not the config's: no default (the config's is 'demo'); the same name as data/<comp> here
    s.add_argument("--comp", dest="kaggle_comp", default="",
                   help="the competition's name on Kaggle (and here: data/<comp>): the notebook reads /kaggle/input/"
                        "<comp>, and dataset-metadata.json and kernel-metadata.json are written for the kaggle command")
    s.add_argument("--kaggle-user", default="",
                   help="your Kaggle user name, the owner in the dataset's and kernel's ids "
                        "(default: $KAGGLE_USERNAME)")
    s.add_argument("--push", action="store_true", help="upload the bundle (kaggle datasets create, or version when it "
                                                       "exists) and push the notebook (kaggle kernels push), which "
                                                       "Kaggle then runs; needs the kaggle command and --comp")

    s = command(sub, "board", cmd_board, "every experiment of a competition (runs/<comp>/): folds done, OOF scores, "
                "what differs", where("runs_dir"))
    # its own flag, not the config's: its default is no competition (then the only one with runs)
    s.add_argument("--comp", dest="board_comp", default="",
                   help="the competition (default: the only one with runs under --runs-dir)")
    s.add_argument("--metric", default="", help="score OOF in this metric (default: each experiment's own)")

    s = command(sub, "score", cmd_score, "grade a submission against the demo's hidden labels, or any labels file "
                "(--solution)", where("comp", "data_dir"))
    s.add_argument("submission", help="the submission CSV")
    s.add_argument("--solution", default="", help="a labels CSV (an id and a label column, named as in train.csv) to "
                   "grade against instead of the demo's hidden labels: your own held-out labels")
    s.add_argument("--metric", default="", help="a kit.metrics name or a scikit-learn scorer name (default: the task's "
                   "own: accuracy, roc_auc for two classes, qwk, f_beta:1 for label lists)")
    from .competition import TASKS

    s.add_argument("--task", default="auto", choices=TASKS, help="with --solution: what the labels are (auto: detected "
                   "as for train.csv; two classes read as binary, qwk as ordinal grades)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return args.fn(args) or 0
    except KitError as e:
        print(f"kit {args.cmd}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nkit {args.cmd}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
