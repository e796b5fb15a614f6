"""Kaggle offline: the bundle's notebook runs in a fresh Kaggle-like venv, installing from the bundle only what
that image lacks, with --no-index --no-deps."""

import ast
import json
import os
import subprocess
import sys
import sysconfig
from importlib.metadata import version
from pathlib import Path

import jupytext
import nbformat
import pandas as pd
import pytest

import kit.package
from kit import KitError
from kit.blendconfig import BlendConfig
from kit.cli import main
from kit.folds import folds_path, read_folds
from kit.infer import infer_and_blend, save_blend
from kit.package import package_for_kaggle
from kit.submission import validate_submission
from test_publish import fake_kaggle  # noqa: F401 (a fixture: a `kaggle` on PATH that records its calls)


# An older Kaggle-like set, below the versions installed here: Kaggle's image pins scikit-learn 1.2.2 and
# matplotlib < 3.8; numpy 1.x for that scikit-learn, the OpenCV built for numpy 1.x, and pytz for pandas 2.
KAGGLE_LIKE = ("numpy==1.26.4", "scikit-learn==1.2.2", "pandas==2.0.3", "matplotlib==3.7.5",
               "opencv-python-headless==4.11.0.86", "pytz==2026.6")
IMAGE_LACKS = ("ttach", "iterative-stratification", "grad-cam")  # kit's requirements a Kaggle image has not


def wheelhouse() -> tuple[Path, Path]:
    """The wheels a bundle carries and the Kaggle-like set, fetched once per venv (the test then runs offline)."""
    extras, old = Path(sys.prefix) / "kit-test-wheels", Path(sys.prefix) / "kit-test-wheels" / "kaggle-like"
    if not old.is_dir() or len(list(old.glob("*.whl"))) < len(KAGGLE_LIKE):
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary", ":all:", "-d",
                        str(old), *KAGGLE_LIKE], check=True)
    missing = tuple(n for n in kit.package.KAGGLE_MAY_LACK
                    if not list(extras.glob(f"{n.replace('-', '_')}-{version(n)}-*.whl")))
    if missing:
        kit.package.fetch_wheels(extras, missing)
    return extras, old


def kaggle_like_image(tmp_path: Path) -> Path:
    """A fresh venv as a Kaggle image: the Kaggle-like set installed in it, and the rest of what is installed here
    (torch, timm, papermill, jupytext...) seen through a .pth, less kit and what IMAGE_LACKS."""
    from importlib.metadata import distributions

    extras, old = wheelhouse()
    venv = tmp_path / "fresh"
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = Path(subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    hidden = {"kaggle-kit", *IMAGE_LACKS, *(r.split("==")[0] for r in KAGGLE_LIKE)}
    purelib = sysconfig.get_paths()["purelib"]  # not the checkout's kaggle_kit.egg-info, which `pip wheel` leaves
    hidden_paths = {Path(str(f)).parts[0] for n in hidden for d in distributions(name=n, path=[purelib])
                    for f in d.files or [] if not str(f).startswith("..")}
    image = tmp_path / "kaggle-image"
    image.mkdir()
    for p in Path(purelib).iterdir():
        if p.name not in hidden_paths and not p.name.endswith(".pth") and not p.name.startswith("__editable__"):
            (image / p.name).symlink_to(p)
    (site / "kaggle_image.pth").write_text(str(image) + "\n")
    subprocess.run([py, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--find-links", str(old),
                    *KAGGLE_LIKE], check=True, env={**os.environ, "PIP_NO_INDEX": "1"})
    return py


def installed_in(py: Path, *names: str) -> dict:
    code = ("import json, sys; from importlib.metadata import version, PackageNotFoundError\n"
            "def v(n):\n try: return version(n)\n except PackageNotFoundError: return None\n"
            "print(json.dumps({n: v(n) for n in sys.argv[1:]}))")
    # outside the checkout and without PYTHONPATH: what the fresh venv itself holds, not an egg-info `pip wheel`
    # leaves in the checkout
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return json.loads(subprocess.run([py, "-c", code, *names], capture_output=True, text=True, check=True, env=env,
                                     cwd=py.parent).stdout)


@pytest.mark.slow
def test_bundle_notebook_installs_only_what_a_kaggle_like_image_lacks_and_submits_as_kit_blend(tiny_comp, project,
                                                                                                 fit_tiny, tmp_path):
    for k in range(3):
        fit_tiny("m", k, tta="hflip")
    report = infer_and_blend(tiny_comp, read_folds(folds_path(tiny_comp)), ["m"])
    save_blend(report, project / "blend.json")
    extras, _ = wheelhouse()
    bundle = package_for_kaggle(project / "blend.json", tmp_path / "bundle", wheels_from=extras, comp="comp")
    wheels = sorted(p.name.split("-")[0] for p in (bundle / "wheels").iterdir())
    assert wheels == sorted(["kaggle_kit", *(n.replace("-", "_") for n in kit.package.KAGGLE_MAY_LACK)])
    assert sorted(p.parent.name for p in (bundle / "runs" / "demo" / "m").glob("fold*/best.pt")) == [
        "fold0", "fold1", "fold2"]

    py = kaggle_like_image(tmp_path)
    old = {r.split("==")[0]: r.split("==")[1] for r in KAGGLE_LIKE}
    assert installed_in(py, "kaggle-kit", *IMAGE_LACKS, *old) == {"kaggle-kit": None, **dict.fromkeys(IMAGE_LACKS),
                                                                  **old}
    # Kaggle's layout: the competition (test images and sample only) and the bundle's dataset, mounted two deep
    kaggle_input = tmp_path / "input"
    (kaggle_input / "comp" / "test").mkdir(parents=True)
    for p in tiny_comp.test["path"]:
        (kaggle_input / "comp" / "test" / Path(p).name).symlink_to(p)
    (kaggle_input / "comp" / "sample_submission.csv").write_bytes(tiny_comp.sample_submission.read_bytes())
    (kaggle_input / "datasets" / "ann").mkdir(parents=True)
    (kaggle_input / "datasets" / "ann" / "comp-kit-bundle").symlink_to(bundle)
    working = tmp_path / "working"
    working.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "KIT_ROOT": str(working), "PIP_NO_INDEX": "1"}
    env.pop("PYTHONPATH", None)
    spec = tmp_path / "jupyter" / "kernels" / "image" / "kernel.json"  # the kernel runs the image's python
    spec.parent.mkdir(parents=True)
    spec.write_text(json.dumps({"argv": [str(py), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                                "display_name": "image", "language": "python"}))
    env["JUPYTER_PATH"] = str(tmp_path / "jupyter")
    code = (f"import papermill as pm; pm.execute_notebook({str(bundle / 'kaggle_infer.ipynb')!r}, 'executed.ipynb', "
            f"parameters={{'kaggle_input': {str(kaggle_input)!r}}}, kernel_name='image', progress_bar=False)")
    run = subprocess.run([py, "-c", code], env=env, capture_output=True, text=True, cwd=working)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    # kit and what the image lacked came from the bundle; the image's own packages are as they were
    assert installed_in(py, "kaggle-kit", *IMAGE_LACKS, *old, "jupytext") == {
        "kaggle-kit": kit.__version__, "ttach": version("ttach"), "iterative-stratification":
        version("iterative-stratification"), "grad-cam": version("grad-cam"), **old, "jupytext": version("jupytext")}
    executed = nbformat.read(working / "executed.ipynb", as_version=4)
    printed = "".join(o.get("text", "") for c in executed.cells for o in c.get("outputs", []))
    listed = ast.literal_eval(printed.split("installed from the bundle: ")[1].split("\n")[0])
    assert sorted(n.lower().replace("_", "-") for n in listed) == sorted(["kaggle-kit", *IMAGE_LACKS])  # not jupytext

    sub = working / "submission.csv"
    validate_submission(pd.read_csv(sub, dtype=str), tiny_comp.sample_submission)
    # `kit blend --blend-json` on the same bundle, here with the newest packages, writes the same file
    assert main(["blend", "--blend-json", str(bundle / "blend.json"), "--runs-dir", str(bundle / "runs"),
                 "--comp", str(kaggle_input / "comp"), "--name", "cli"]) == 0
    assert (project / "submissions" / "cli.csv").read_bytes() == sub.read_bytes()
    assert json.loads((bundle / "blend.json").read_text())["config"] == BlendConfig().to_dict()
    assert json.loads((bundle / "blend.json").read_text())["experiments"][0]["tta"] == "hflip"
    # packaged again into its own bundle: replaced, not refused
    assert package_for_kaggle(project / "blend.json", bundle, wheels_from=extras) == bundle
    assert sorted(p.parent.name for p in (bundle / "runs" / "demo" / "m").glob("fold*/best.pt")) == [
        "fold0", "fold1", "fold2"]


# --- a command deletes only what it created (issue 12 item 1) -----------------------------------------------

def fake_runs(project, exp="m", n_folds=2, name=None):
    """A blend.json over `exp` and its folds' files (the bundle copies them as they are)."""
    for k in range(n_folds):
        d = project / "runs" / "demo" / exp / f"fold{k}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "best.pt").write_bytes(b"weights %d" % k)
        (d / "config.json").write_text("{}")
    spec = {"experiments": [{"name": name or exp, "tta": "none", "weight": 1.0, "n_folds": n_folds}],
            "classes": ["0", "1"], "space": "prob", "power": 2.0, "competition": "demo"}
    (project / "blend.json").write_text(json.dumps(spec))
    return project / "blend.json"


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None for p in sorted(root.rglob("*"))}


@pytest.fixture
def no_wheel_build(monkeypatch):
    """pip wheel takes a minute: these tests are about which files are written and deleted, so the wheels
    step only drops a file (test_bundle_notebook_runs_offline_in_a_fresh_venv builds real ones)."""
    def build(dest, extra, wheels_from):
        dest.mkdir(parents=True)
        (dest / "kaggle_kit-0.1.0-py3-none-any.whl").write_text("wheel")

    monkeypatch.setattr(kit.package, "build_wheels", build)


@pytest.mark.parametrize("out", ["data", ".", "runs", "runs/demo", "runs/demo/m"])
def test_package_into_a_folder_holding_other_files_deletes_nothing(project, no_wheel_build, capsys, out):
    blend = fake_runs(project)
    (project / "data" / "demo").mkdir()
    (project / "data" / "demo" / "train.csv").write_text("image_id,label\n")
    (project / "README.md").write_text("mine")
    (project / ".git").mkdir()
    (project / ".git" / "HEAD").write_text("ref")
    before = snapshot(project)
    assert main(["package", "--blend-json", str(blend), "--out", out]) == 2
    err = capsys.readouterr().err
    assert "already holds files and is not a kit bundle" in err and "nothing was written or deleted" in err
    assert snapshot(project) == before


def test_package_checks_every_input_before_writing(project, no_wheel_build):
    blend = fake_runs(project)
    (project / "runs" / "demo" / "m" / "fold1" / "best.pt").unlink()
    with pytest.raises(KitError, match=r"fold1/best.pt is missing: the blend needs every fold of 'm'"):
        package_for_kaggle(blend, project / "bundle")
    assert not (project / "bundle").exists()
    with pytest.raises(KitError, match=r"nope.json does not exist"):
        package_for_kaggle(project / "nope.json", project / "bundle")
    (project / "bad.json").write_text('{"experiments": [{"weight": 1}]}')
    with pytest.raises(KitError, match=r"bad.json is not a blend made by `kit blend`"):
        package_for_kaggle(project / "bad.json", project / "bundle")
    assert not (project / "bundle").exists()


def test_package_refuses_an_experiment_name_that_is_a_path(project, no_wheel_build):
    fake_runs(project, "escaped")
    (project / "runs" / "demo" / "escaped").rename(project / "runs" / "escaped")  # where '../escaped' points
    blend = fake_runs(project, "m", name="../escaped")
    with pytest.raises(KitError, match=r"experiment name '../escaped' is not a plain name"):
        package_for_kaggle(blend, project / "bundle")
    assert not (project / "bundle").exists()


def test_package_replaces_its_own_bundle_and_keeps_the_rest(project, no_wheel_build):
    blend = fake_runs(project, "m", n_folds=3)
    bundle = package_for_kaggle(blend, project / "bundle")
    assert (bundle / ".kit-bundle").is_file() and (bundle / "runs" / "demo" / "m" / "fold2" / "best.pt").is_file()
    (bundle / "notes.txt").write_text("mine")  # something the user added to the bundle folder
    blend = fake_runs(project, "m2", n_folds=2)
    assert package_for_kaggle(blend, project / "bundle") == bundle
    assert sorted(p.name for p in (bundle / "runs" / "demo").iterdir()) == ["m2"]  # the old bundle's runs replaced
    assert (bundle / "notes.txt").read_text() == "mine"
    assert json.loads((bundle / "blend.json").read_text())["experiments"][0]["name"] == "m2"


def test_package_into_an_empty_folder_works(project, no_wheel_build):
    (project / "empty").mkdir()
    bundle = package_for_kaggle(fake_runs(project), project / "empty")
    assert (bundle / ".kit-bundle").is_file() and (bundle / "kaggle_infer.ipynb").is_file()


def test_the_bundle_notebook_is_the_kaggle_template(project, no_wheel_build):
    """Written from notebooks/kaggle_infer.py as it is: one blend_and_submit call on the bundle's blend.json,
    not the infer notebook with its parameters patched."""
    bundle = package_for_kaggle(fake_runs(project), project / "bundle")
    written = nbformat.read(bundle / "kaggle_infer.ipynb", as_version=4)
    template = jupytext.read(kit.package.TEMPLATE)
    assert [(c.cell_type, c.source) for c in written.cells] == [(c.cell_type, c.source) for c in template.cells]
    code = "\n".join(c.source for c in written.cells if c.cell_type == "code")
    assert code.count("blend_and_submit(") == 1 and 'blend_json=os.path.join(bundle, "blend.json")' in code
    assert "infer_and_blend" not in code and "write_submission" not in code


def test_package_refuses_a_blend_json_whose_config_is_bad_before_writing(project, no_wheel_build):
    blend = fake_runs(project)
    spec = json.loads(blend.read_text())
    blend.write_text(json.dumps({**spec, "config": {"space": "rank", "metric": "accuracy"}}))
    with pytest.raises(KitError, match="space='rank' .* metric='accuracy' reads probabilities"):
        package_for_kaggle(blend, project / "bundle")
    assert not (project / "bundle").exists()


# --- kit package --comp / --push (issue 16) ---------------------------------------------------------------------

def test_package_with_comp_sets_it_in_the_notebook_and_writes_the_kaggle_metadata(project, no_wheel_build):
    bundle = package_for_kaggle(fake_runs(project), project / "bundle", comp="comp-x", kaggle_user="ann")
    written = nbformat.read(bundle / "kaggle_infer.ipynb", as_version=4)
    template = jupytext.read(kit.package.TEMPLATE)
    at = next(i for i, c in enumerate(template.cells) if "parameters" in c.metadata.get("tags", []))
    assert [c.source for i, c in enumerate(written.cells) if i != at] == [
        c.source for i, c in enumerate(template.cells) if i != at]  # the template, but for comp's default
    assert written.cells[at].metadata["tags"] == ["parameters"]  # a default: papermill's parameters still win
    scope, default = {}, {}
    exec(written.cells[at].source, scope)
    exec(template.cells[at].source, default)
    assert scope.pop("comp") == "comp-x" and default.pop("comp") == "competition-name"
    assert scope == default and scope["kaggle_input"] == "/kaggle/input"
    assert '"comp-x"  # ' in written.cells[at].source  # its comment kept
    kernel = json.loads((bundle / "kernel-metadata.json").read_text())
    assert kernel["code_file"] == "kaggle_infer.ipynb" and kernel["competition_sources"] == ["comp-x"]
    assert json.loads((bundle / "dataset-metadata.json").read_text())["id"] == "ann/comp-x-kit-bundle"
    package_for_kaggle(fake_runs(project), bundle)  # packaged again for no competition: no stale metadata
    assert not (bundle / "kernel-metadata.json").exists() and not (bundle / "dataset-metadata.json").exists()
    assert [c.source for c in nbformat.read(bundle / "kaggle_infer.ipynb", as_version=4).cells] == [
        c.source for c in template.cells]


def test_kit_package_push_uploads_the_bundle_then_pushes_its_notebook(project, no_wheel_build, fake_kaggle,
                                                                       monkeypatch, capsys):
    monkeypatch.setenv("KAGGLE_USERNAME", "ann")
    blend = fake_runs(project)
    assert main(["package", "--blend-json", str(blend), "--out", "bundle", "--comp", "comp-x", "--push"]) == 0
    bundle = str((project / "bundle").resolve())
    assert fake_kaggle() == [["datasets", "status", "ann/comp-x-kit-bundle"],
                             ["datasets", "create", "-p", bundle, "--dir-mode", "zip"],
                             ["datasets", "status", "ann/comp-x-kit-bundle"],
                             ["kernels", "push", "-p", bundle]]
    assert "kernel ann/comp-x-kit-infer runs on Kaggle" in capsys.readouterr().out


@pytest.mark.parametrize("args, error", [
    (["--comp", "comp-x", "--kaggle-user", "ann"], "runs the `kaggle` command, which is not on PATH"),
    (["--kaggle-user", "ann"], "--push needs --comp NAME"),
])
def test_kit_package_push_that_cannot_run_writes_nothing(project, no_wheel_build, monkeypatch, capsys, args, error):
    monkeypatch.setenv("PATH", str(project / "notebooks"))  # no kaggle
    assert main(["package", "--blend-json", str(fake_runs(project)), "--out", "bundle", "--push", *args]) == 2
    assert error in capsys.readouterr().err and not (project / "bundle").exists()
