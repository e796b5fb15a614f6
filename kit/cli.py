"""The `kit` command: the same code paths as the notebooks, headless."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

from . import KitError
from .config import TrainConfig

DEMO_EXPERIMENTS = {  # tiny timm models: the demo must run in minutes on 2 CPU cores
    "effnet": dict(model="test_efficientnet", img_size=32, epochs=12, lr=3e-3),
    "resnet": dict(model="test_resnet", img_size=32, epochs=12, lr=3e-3),
}


def add_config_flags(p: argparse.ArgumentParser, required_default: bool) -> None:
    """One flag per TrainConfig field; with required_default=False, unset flags stay None (not passed on)."""
    g = p.add_argument_group("training parameters (the train notebook's parameters cell)")
    for f in dataclasses.fields(TrainConfig):
        if f.name in ("exp", "fold"):
            continue
        g.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, metavar=type(f.default).__name__.upper(),
                       default=f.default if required_default else None, help=f"default {f.default!r}")


def config_params(args: argparse.Namespace) -> dict:
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
            if getattr(args, f.name, None) is not None}


def parse_params(pairs: list[str] | None, params_file: str | None = None, defaults: dict | None = None) -> dict:
    """-p name=value pairs over an optional YAML file of parameters.

    A -p value stays the text as written when the parameter's default (`defaults`: the notebook's parameters
    cell) is a string: -p comp=007 is '007', -p model=no is 'no'; other values are read as YAML
    (-p epochs=5, -p 'exps=[a, b]'). Every value must be plain (str, int, float, bool, list, dict, null).
    """
    from .runner import as_default_type, check_plain

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
    from .runner import check_plain

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

    print(f"wrote {build_demo(a.data_dir, a.name, n=a.n)}")


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


def cmd_run_folds(a):
    from .runner import load_notebook, notebook_parameters, run_folds

    nb = load_notebook(a.notebook)
    params = {**parse_params(a.param, a.params_file, notebook_parameters(nb)), **config_params(a)}
    cfg = TrainConfig.from_params(params)  # names and types before any fold starts
    params = {k: getattr(cfg, k) for k in params}  # typed: flags arrive as text
    folds = parse_folds(a.folds, n_folds(params))
    summary = run_folds(a.exp, folds, params, a.notebook, params.get("runs_dir", "runs"), a.force, jobs=a.jobs,
                        gpus=a.gpus, stagger=a.stagger, backend=a.backend, address=a.address, on_status=StatusPrinter())
    return report_jobs(summary)


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
    from .runner import load_notebook, notebook_parameters, run_notebook

    params = parse_params(a.param, a.params_file, notebook_parameters(load_notebook(a.notebook)))
    out = run_notebook(a.notebook, a.out or Path("runs") / "_notebooks" / Path(a.notebook).with_suffix(".ipynb").name,
                       params)
    print(f"executed notebook: {out}")


def cmd_blend(a):
    from .competition import load_competition
    from .folds import folds_path, read_folds
    from .infer import infer_and_blend, save_blend, submission_from_blend
    from .paths import resolve
    from .submission import write_submission

    if a.blend_json:
        comp, sub = submission_from_blend(a.comp, a.blend_json, a.data_dir, a.runs_dir, a.device)
        print(f"wrote {write_submission(sub, comp, resolve('submissions') / f'{a.name}.csv')}")
        return 0
    if not a.exps:
        raise KitError("pass --exps exp_a,exp_b (or --blend-json to apply a saved blend)")
    comp = load_competition(a.comp, a.data_dir)
    r = infer_and_blend(comp, read_folds(folds_path(comp, a.runs_dir)), a.exps, a.runs_dir, a.method, a.metric,
                        a.space, a.power, a.device, a.fit_metric)
    out = write_submission(r.submission, comp, resolve("submissions") / f"{a.name}.csv")
    save_blend(r, out.with_suffix(".blend.json"))
    print(r.scores.round(4).to_string(index=False))
    print(f"blend OOF {a.metric}: {r.oof_score:.4f} in-sample, {r.honest_score:.4f} ± {r.honest_std:.4f} honest")
    print(f"wrote {out}")


def cmd_package(a):
    from .package import package_for_kaggle

    out = package_for_kaggle(a.blend_json, a.out, a.runs_dir, tuple(x for x in a.extra.split(",") if x))
    print(f"bundle in {out}: upload it as a Kaggle dataset; run kaggle_infer.ipynb with the internet off")


def cmd_score(a):
    from .demo import leaderboard_score

    print(f"leaderboard {a.metric}: {leaderboard_score(a.submission, a.data_dir, a.comp, a.metric):.4f}")


def cmd_demo(a):
    """The whole day of SPEC.md on the embedded demo competition."""
    from .demo import build_demo, leaderboard_score
    from .io import read_json
    from .paths import resolve
    from .runner import run_folds, run_notebook

    check_n_folds(a.n_folds)
    t0 = time.time()
    nb = resolve("notebooks")
    build_demo(a.data_dir, "demo", n=a.n)
    print(f"[{time.time() - t0:5.0f}s] demo competition in {resolve(a.data_dir) / 'demo'}")
    run_notebook(nb / "eda.py", resolve(a.runs_dir) / "_notebooks" / "eda.ipynb",
                 {"comp": "demo", "data_dir": a.data_dir, "runs_dir": a.runs_dir, "n_folds": a.n_folds},
                 log=a.verbose)
    print(f"[{time.time() - t0:5.0f}s] EDA done, folds written")
    for exp, params in DEMO_EXPERIMENTS.items():
        params = {**params, "comp": "demo", "data_dir": a.data_dir, **({"epochs": a.epochs} if a.epochs else {})}
        summary = run_folds(f"demo-{exp}", list(range(a.n_folds)), params, nb / "train_fold.py", a.runs_dir,
                            force=True, jobs=a.jobs, on_status=StatusPrinter() if a.verbose else None)
        if report_jobs(summary):
            return 1
        print(f"[{time.time() - t0:5.0f}s] experiment demo-{exp}: {a.n_folds} folds trained")
    exps = [f"demo-{e}" for e in DEMO_EXPERIMENTS]
    run_notebook(nb / "infer_ensemble.py", resolve(a.runs_dir) / "_notebooks" / "infer_ensemble.ipynb",
                 {"comp": "demo", "data_dir": a.data_dir, "runs_dir": a.runs_dir, "exps": exps, "name": "demo"},
                 log=a.verbose)
    sub = resolve("submissions") / "demo.csv"
    blend = read_json(sub.with_suffix(".blend.json"))
    lb = leaderboard_score(sub, a.data_dir, "demo")
    rows = [{"model": e["experiment"], "tta (chosen on OOF)": e["tta"], "weight": e["weight"],
             "oof_accuracy_no_tta": e["oof_accuracy_no_tta"], "oof_accuracy": e["oof_accuracy"]}
            for e in blend["scores"]]
    rows.append({"model": "blend", "tta (chosen on OOF)": "", "weight": 1.0, "oof_accuracy": blend["oof_score"],
                 "honest_oof_accuracy": blend["honest_score"], "leaderboard_accuracy": lb})
    print(f"[{time.time() - t0:5.0f}s] submission {sub}\n")
    print(pd.DataFrame(rows).round(4).fillna("").to_string(index=False))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kit", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("demo", help="build the demo competition and run the whole day on it")
    s.add_argument("--data-dir", default="data")
    s.add_argument("--runs-dir", default="runs")
    s.add_argument("--n-folds", type=int, default=5)
    s.add_argument("--n", type=int, default=0, help="use a stratified subset of n digits (0 = all 1,797)")
    s.add_argument("--epochs", type=int, default=0, help="override the demo experiments' epochs")
    s.add_argument("--verbose", action="store_true", help="show the notebooks' output and the fold status table")
    s.add_argument("--jobs", type=int, default=1, help="folds trained at once")
    s.set_defaults(fn=cmd_demo)

    s = sub.add_parser("demo-data", help="write the demo competition to data/demo/")
    s.add_argument("--data-dir", default="data")
    s.add_argument("--name", default="demo")
    s.add_argument("--n", type=int, default=0)
    s.set_defaults(fn=cmd_demo_data)

    s = sub.add_parser("folds", help="write folds.csv once for a competition")
    s.add_argument("--comp", default="demo")
    s.add_argument("--data-dir", default="data")
    s.add_argument("--runs-dir", default="runs")
    s.add_argument("--n-folds", type=int, default=5)
    s.add_argument("--seed", type=int, default=42)
    s.add_argument("--method", default="auto", choices=["auto", "stratified", "group"])
    s.set_defaults(fn=cmd_folds)

    s = sub.add_parser("train", help="train one fold in this process (no notebook)")
    s.add_argument("--exp", required=True)
    s.add_argument("--fold", type=int, required=True)
    add_config_flags(s, required_default=False)
    s.set_defaults(fn=cmd_train)

    s = sub.add_parser("run-folds", help="run the train notebook headlessly once per fold")
    s.add_argument("--exp", required=True)
    s.add_argument("--folds", default="", help="e.g. 0,2 (default: every fold in folds.csv)")
    s.add_argument("--notebook", default="notebooks/train_fold.py")
    s.add_argument("--force", action="store_true", help="rerun folds that are already complete")
    s.add_argument("--jobs", type=int, default=1, help="folds at once on CPU (give each --threads)")
    s.add_argument("--gpus", default="", help="one job per GPU: '0,1' or 'auto' (sets CUDA_VISIBLE_DEVICES)")
    s.add_argument("--stagger", type=float, default=2.0, help="seconds between job starts")
    s.add_argument("--backend", default="local", choices=["local", "ray"])
    s.add_argument("--address", default="", help="Ray cluster address (default: start or join a local one)")
    s.add_argument("-p", "--param", action="append", metavar="NAME=VALUE")
    s.add_argument("--params-file", help="YAML file of parameters (flags win)")
    add_config_flags(s, required_default=False)
    s.set_defaults(fn=cmd_run_folds)

    s = sub.add_parser("notebook", help="run any notebook headlessly with papermill")
    s.add_argument("notebook")
    s.add_argument("--out", help="executed notebook path (default runs/_notebooks/<name>.ipynb)")
    s.add_argument("-p", "--param", action="append", metavar="NAME=VALUE")
    s.add_argument("--params-file")
    s.set_defaults(fn=cmd_notebook)

    s = sub.add_parser("blend", help="infer + ensemble headlessly and write submissions/<name>.csv")
    s.add_argument("--comp", default="demo")
    s.add_argument("--exps", default="", help="comma-separated experiment names")
    s.add_argument("--name", default="submission")
    s.add_argument("--method", default="caruana", choices=["caruana", "slsqp", "mean"])
    s.add_argument("--metric", default="accuracy", help="accuracy, log_loss, macro_f1, or an sklearn scorer name")
    s.add_argument("--space", default="prob", choices=["prob", "logit", "power", "rank"])
    s.add_argument("--power", type=float, default=2.0)
    s.add_argument("--fit-metric", default="auto",
                   help="what the weights are fitted on (auto: log loss; in rank space the metric); --metric is "
                        "what they are reported in")
    s.add_argument("--blend-json", default="", help="apply a saved blend to the test set (no training data needed)")
    s.add_argument("--data-dir", default="data")
    s.add_argument("--runs-dir", default="runs")
    s.add_argument("--device", default="auto")
    s.set_defaults(fn=cmd_blend)

    s = sub.add_parser("package", help="bundle kit, wheels, checkpoints and blend.json for an offline Kaggle notebook")
    s.add_argument("--blend-json", required=True)
    s.add_argument("--out", default="kaggle_bundle")
    s.add_argument("--runs-dir", default="runs")
    s.add_argument("--extra", default="ttach", help="comma-separated packages the Kaggle image lacks")
    s.set_defaults(fn=cmd_package)

    s = sub.add_parser("score", help="grade a submission against the demo's hidden labels")
    s.add_argument("submission")
    s.add_argument("--comp", default="demo")
    s.add_argument("--data-dir", default="data")
    s.add_argument("--metric", default="accuracy")
    s.set_defaults(fn=cmd_score)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return args.fn(args) or 0
    except KitError as e:
        print(f"kit {args.cmd}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
