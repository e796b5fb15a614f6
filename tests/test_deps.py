"""The bundle's install on a full image: only the wheels it lacks, --no-deps, then every requirement named."""

import subprocess
import zipfile
from importlib.metadata import distribution, requires
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import kit.deps
from kit import KitError
from kit.deps import DIST, KAGGLE_MAY_LACK, install_bundle, requirements, to_install, unmet


def wheel(folder: Path, name: str, version: str, *requires: str) -> Path:
    """A wheel holding only its metadata: what to_install and install_bundle read."""
    stem = f"{name.replace('-', '_')}-{version}"
    path = folder / f"{stem}-py3-none-any.whl"
    meta = "".join([f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
                    *(f"Requires-Dist: {r}\n" for r in requires)])
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{stem}.dist-info/METADATA", meta)
    return path


def image(**versions):
    """A stand-in for what the running image has installed: {distribution: version}."""
    return lambda name: versions.get(name.lower().replace("_", "-"))


@pytest.fixture
def bundle(tmp_path):
    kit = wheel(tmp_path, DIST, "0.1.0", "scikit-learn>=1.2", "ttach>=0.0.3", "jupytext>=1.16", "pandas>=2.0",
                'ray>=2.9; extra == "ray"')
    return {"kit": kit, "ttach": wheel(tmp_path, "ttach", "0.0.3"),
            "jupytext": wheel(tmp_path, "jupytext", "1.19.6", "mdit-py-plugins"),
            "mdit": wheel(tmp_path, "mdit-py-plugins", "0.7.0")}


def test_only_kit_and_what_the_image_lacks_or_has_too_old_is_installed(bundle):
    have = image(**{"scikit-learn": "1.2.2", "pandas": "2.0.3", "jupytext": "1.15.0", "mdit-py-plugins": "0.4.0"})
    chosen = to_install(list(bundle.values()), have)
    # ttach: missing; jupytext 1.15 is older than kit's >=1.16; mdit-py-plugins is there and jupytext accepts it
    assert chosen == [bundle["kit"], bundle["ttach"], bundle["jupytext"]]
    assert to_install(list(bundle.values()), image(**{"ttach": "0.0.3", "jupytext": "1.16.0",
                                                      "mdit-py-plugins": "0.4.0"})) == [bundle["kit"]]


def test_unmet_names_each_missing_and_too_old_requirement_and_who_needs_it():
    reqs = [("kaggle-kit", Requirement(r)) for r in ("scikit-learn>=1.2", "ttach>=0.0.3", "pandas>=2.0")]
    assert unmet(reqs, image(**{"scikit-learn": "1.0.2", "pandas": "2.2.0"})) == [
        "scikit-learn>=1.2 (kaggle-kit needs it): the image has scikit-learn 1.0.2",
        "ttach>=0.0.3 (kaggle-kit needs it): not installed"]


def test_an_extra_requirement_is_not_required(bundle):
    names = [r.name for r in requirements(kit.deps.wheel_metadata(bundle["kit"]))]
    assert "ray" not in names and {"scikit-learn", "ttach"} <= set(names)


def test_install_bundle_runs_pip_with_no_deps_and_names_what_the_image_does_not_meet(bundle, monkeypatch):
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: calls.append(cmd))
    have = image(**{"scikit-learn": "1.0.2", "pandas": "2.0.3", "jupytext": "1.19.6", "mdit-py-plugins": "0.7.0"})
    with pytest.raises(KitError) as e:
        install_bundle(bundle["kit"].parent, have)
    assert len(calls) == 1 and calls[0][3:7] == ["install", "-q", "--no-index", "--no-deps"]
    assert calls[0][7:] == [str(bundle["kit"]), str(bundle["ttach"])]  # the image's own packages are not touched
    msg = str(e.value)
    assert "scikit-learn>=1.2 (kaggle-kit needs it): the image has scikit-learn 1.0.2" in msg
    assert "ttach" not in msg  # installed from the bundle: met
    assert "kit package --extra" in msg
    calls.clear()
    have = image(**{"scikit-learn": "1.2.2", "pandas": "2.0.3", "ttach": "0.0.3", "jupytext": "1.19.6",
                    "mdit-py-plugins": "0.7.0"})
    assert install_bundle(bundle["kit"].parent, have) == [DIST]


def test_a_folder_without_kit_s_wheel_is_refused(tmp_path):
    wheel(tmp_path, "ttach", "0.0.3")
    with pytest.raises(KitError, match="no kaggle-kit wheel in"):
        install_bundle(tmp_path, image())


def test_kit_is_installed_as_kaggle_kit_and_meets_its_own_requirements_here():
    assert distribution(DIST).version  # the distribution is kaggle-kit (`kit` on PyPI is another project)
    assert unmet([(DIST, r) for r in requirements(distribution(DIST))]) == []


def test_what_a_kaggle_image_may_lack_is_a_requirement_of_kit_or_of_those():
    """A name left here after kit dropped the dependency would make `kit package` bundle it for nothing."""
    names = {Requirement(r).name for d in (DIST, *KAGGLE_MAY_LACK) for r in requires(d) or []}
    assert set(KAGGLE_MAY_LACK) <= names, set(KAGGLE_MAY_LACK) - names
