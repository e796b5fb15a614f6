"""A bundle on Kaggle: the dataset-metadata.json and kernel-metadata.json that the `kaggle` command reads, and
`kit package --push`, which runs that command: the bundle as a private dataset (created, or a new version), then
its notebook as a private kernel on the competition, internet off.

The service cannot be reached from tests; they put a stand-in `kaggle` on PATH that records its arguments.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from . import KitError
from .io import write_json

NOTEBOOK = "kaggle_infer.ipynb"
DATASET_META, KERNEL_META = "dataset-metadata.json", "kernel-metadata.json"  # the names `kaggle` looks for
USER_PLACEHOLDER = "INSERT_KAGGLE_USERNAME"
SLUG = re.compile(r"[a-z0-9][a-z0-9-]*[a-z0-9]")  # a competition's name in its URL: kaggle.com/competitions/<slug>


def check_comp(comp: str) -> str:
    if not SLUG.fullmatch(comp):
        raise KitError(f"--comp {comp!r} is not a Kaggle competition name; give the name in the competition's URL, "
                       "kaggle.com/competitions/<name> (lowercase letters, digits and dashes)")
    return comp


def ids(comp: str, user: str) -> tuple[str, str]:
    """The dataset's and the kernel's ids: <user>/<comp>-kit-bundle and <user>/<comp>-kit-infer, the competition
    name cut so that each slug (and title, which Kaggle derives it from) stays within 50 characters."""
    stem = comp[:39].rstrip("-")
    return f"{user}/{stem}-kit-bundle", f"{user}/{stem}-kit-infer"


def write_metadata(bundle: Path, comp: str, user: str = "") -> tuple[Path, Path]:
    """dataset-metadata.json and kernel-metadata.json in the bundle folder: `kaggle datasets create -p <bundle>
    --dir-mode zip` uploads it (the two files themselves are skipped), `kaggle kernels push -p <bundle>` the
    notebook, attached to the competition and the dataset, on a GPU, internet off (a code competition's rule).
    Without a user the ids carry a placeholder to replace by hand."""
    dataset, kernel = ids(check_comp(comp), user or USER_PLACEHOLDER)
    d = write_json({"title": dataset.split("/")[1], "id": dataset, "licenses": [{"name": "other"}],
                    "description": f"A kit bundle for {comp}: the kaggle-kit wheel (Apache-2.0), the wheels a Kaggle "
                                   "image lacks (each under its own license), the blend's checkpoints and blend.json"},
                   bundle / DATASET_META)
    k = write_json({"id": kernel, "title": kernel.split("/")[1], "code_file": NOTEBOOK, "language": "python",
                    "kernel_type": "notebook", "is_private": True, "enable_gpu": True, "enable_internet": False,
                    "dataset_sources": [dataset], "competition_sources": [comp], "kernel_sources": [],
                    "model_sources": []}, bundle / KERNEL_META)
    return d, k


def kaggle_command(user: str) -> str:
    """The `kaggle` executable, checked before a bundle is written for --push; KitError with the fix."""
    exe = shutil.which("kaggle")
    if exe is None:
        raise KitError("--push runs the `kaggle` command, which is not on PATH: pip install kaggle and put your API "
                       "token in ~/.kaggle/kaggle.json (kaggle.com > Settings > API), or leave out --push and upload "
                       "the bundle folder by hand")
    if not user:
        raise KitError("--push needs your Kaggle user name for the dataset's and kernel's ids: pass --kaggle-user "
                       "NAME or set KAGGLE_USERNAME")
    return exe


def kaggle(exe: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([exe, *args], capture_output=True, text=True)


def push(bundle: Path, comp: str, user: str, wait_s: float = 900, poll_s: float = 15) -> str:
    """Upload the bundle as a private dataset (a new version when it exists), wait until Kaggle has processed it,
    then push the notebook, which Kaggle runs. Returns the kernel's id."""
    exe = kaggle_command(user)
    dataset, kernel = ids(comp, user)
    exists = kaggle(exe, "datasets", "status", dataset).returncode == 0
    upload = (["datasets", "version", "-p", str(bundle), "-m", "kit package", "--dir-mode", "zip"] if exists else
              ["datasets", "create", "-p", str(bundle), "--dir-mode", "zip"])
    check(kaggle(exe, *upload), upload)
    deadline = time.monotonic() + wait_s
    while (status := last_line(kaggle(exe, "datasets", "status", dataset).stdout)) != "ready":
        if "error" in status or time.monotonic() > deadline:
            raise KitError(f"the dataset {dataset} is not ready on Kaggle ({status or 'no status'}); the notebook was "
                           f"not pushed. When it is ready: kaggle kernels push -p {bundle}")
        time.sleep(poll_s)
    check(kaggle(exe, "kernels", "push", "-p", str(bundle)), ["kernels", "push"])
    return kernel


def check(res: subprocess.CompletedProcess, args: list[str]) -> None:
    if res.returncode:
        out = (res.stderr or res.stdout)[-2000:]
        raise KitError(f"`kaggle {' '.join(args)}` failed (exit {res.returncode}):\n{out}")


def last_line(out: str) -> str:
    """The status `kaggle datasets status` prints last (warnings, e.g. about the token file, may come first)."""
    return (out.strip().splitlines() or [""])[-1].strip().lower()


def default_user() -> str:
    return os.environ.get("KAGGLE_USERNAME", "")
