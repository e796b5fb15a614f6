# %% [markdown]
# # Kaggle inference, internet off
#
# The notebook of a bundle that `kit package` writes (`kaggle_infer.ipynb`): the bundle holds the
# kit's wheel and the wheels a Kaggle image lacks, each fold's `best.pt` + `config.json` and
# `blend.json`. Attach the bundle (a dataset) and the competition, set `comp`, run all: kit
# installs from the bundle with `--no-index`, and the saved blend, with the settings it was
# fitted with, writes `submission.csv` (and `submission.blend.json`) to the working folder.
# `kit blend --blend-json blend.json` gives the same submission.

# %% tags=["parameters"]
bundle = "/kaggle/input/kit-bundle"  # where the bundle dataset is mounted
comp = "competition-name"  # its folder under /kaggle/input (attach the competition), or a path
submission_kind = ""  # auto, label, probability; empty: the saved blend's
name = "submission"
out_dir = "."
device = "auto"

# %%
# Internet off: kit and what the Kaggle image lacks, from the bundle's wheels; nothing from an index.
import glob
import subprocess
import sys

subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--find-links", f"{bundle}/wheels",
                *sorted(glob.glob(f"{bundle}/wheels/*.whl"))], check=True)

# %%
from kit.infer import blend_and_submit

done = blend_and_submit(comp, blend_json=f"{bundle}/blend.json", runs_dir=f"{bundle}/runs", name=name,
                        out_dir=out_dir, device=device, submission_kind=submission_kind)
print(f"{len(done.comp.test)} test images; wrote {done.path}")
done.submission.head()
