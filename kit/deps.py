"""Installing a Kaggle bundle's wheels into an image that is already full: only what the image lacks, with
--no-deps, then every requirement checked against what the image has.

Letting pip re-resolve kit's requirements on a Kaggle image fights the image's own pins (it has, say,
scikit-learn 1.2.2 and no index to fetch another), so nothing the image has is touched, and what does not fit is
named with its fix instead. This module runs right after kit's own wheel is installed on an unknown image: it
imports the standard library and `packaging` only. `pip check` is not used: it reports the whole image's
conflicts, which are not the bundle's to fix.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import zipfile
from importlib.metadata import Distribution, PackageNotFoundError, PathDistribution, version
from pathlib import Path
from typing import Callable

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from . import KitError

DIST = "kaggle-kit"  # kit's distribution name (`kit` on PyPI is another project)
# Kaggle's image ships torch, timm, albumentations, scikit-learn, pandas and papermill. These small requirements of
# kit it may lack: `kit package` bundles them always, the notebook installs them only where the image has no fitting
# version.
KAGGLE_MAY_LACK = ("ttach", "iterative-stratification", "grad-cam", "jupytext", "mdit-py-plugins")
Have = Callable[[str], "str | None"]  # distribution name -> the version the image has, None when it has none


def installed(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def wheel_metadata(wheel: Path) -> Distribution:
    """The metadata inside a wheel (its .dist-info), read without installing it."""
    with zipfile.ZipFile(wheel) as z:
        info = next((n.split("/")[0] for n in z.namelist() if n.endswith(".dist-info/METADATA")), None)
    if info is None:
        raise KitError(f"{wheel} is not a wheel (no .dist-info/METADATA in it); rebuild the bundle with kit package")
    return PathDistribution(zipfile.Path(wheel, at=f"{info}/"))


def requirements(dist: Distribution) -> list[Requirement]:
    """The requirements that apply here: no extras, markers evaluated for this interpreter."""
    reqs = [Requirement(r) for r in dist.requires or []]
    return [r for r in reqs if r.marker is None or r.marker.evaluate({"extra": ""})]


def unmet(reqs: list[tuple[str, Requirement]], have: Have = installed) -> list[str]:
    """One line per (who needs it, requirement) the image does not meet: missing, or a version outside it."""
    out = []
    for who, req in reqs:
        got = have(req.name)
        if got is None:
            out.append(f"{req} ({who} needs it): not installed")
        elif not req.specifier.contains(got, prereleases=True):
            out.append(f"{req} ({who} needs it): the image has {req.name} {got}")
    return out


def to_install(wheels: list[Path], have: Have = installed) -> list[Path]:
    """kit's wheel, and each other wheel whose distribution the image lacks or has in a version that kit or
    another bundled wheel does not accept; the image's own packages are left as they are otherwise."""
    dists = {w: wheel_metadata(w) for w in wheels}
    wanted = [r for d in dists.values() for r in requirements(d)]
    out = []
    for w, d in dists.items():
        name = canonicalize_name(d.metadata["Name"])
        got = have(name)
        fits = got is not None and all(r.specifier.contains(got, prereleases=True) for r in wanted
                                       if canonicalize_name(r.name) == name)
        if name == DIST or not fits:
            out.append(w)
    return out


def install_bundle(wheels_dir: str | Path, have: Have = installed) -> list[str]:
    """pip install --no-index --no-deps the wheels `to_install` picks, then KitError naming every requirement of
    kit (and of the wheels installed) that the image still does not meet, with the fix. Returns the
    distributions installed."""
    wheels = sorted(Path(wheels_dir).glob("*.whl"))
    if not any(canonicalize_name(wheel_metadata(w).metadata["Name"]) == DIST for w in wheels):
        raise KitError(f"no {DIST} wheel in {wheels_dir}; is it a bundle's wheels/ folder? `kit package` writes one")
    chosen = to_install(wheels, have)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", *map(str, chosen)],
                   check=True)
    importlib.invalidate_caches()
    dists = [wheel_metadata(w) for w in chosen]
    now = {canonicalize_name(d.metadata["Name"]): d.version for d in dists}  # the image, with what was installed
    problems = unmet([(d.metadata["Name"], r) for d in dists for r in requirements(d)],
                     lambda name: now.get(canonicalize_name(name)) or have(name))
    if problems:
        raise KitError("kit is installed, but this image does not meet these requirements (nothing of the image "
                       "was changed):\n  " + "\n  ".join(problems) + "\nBundle them where you package: `kit "
                       "package --extra NAME,...` adds the wheel of each, in the version installed there, and the "
                       "notebook installs it when the image lacks it; or pip install them here with the internet on")
    return [d.metadata["Name"] for d in dists]
