# %% [markdown]
# # Kaggle inference, internet off
#
# The notebook of a bundle that `kit package` writes (`kaggle_infer.ipynb`): the bundle holds the
# kit's wheel and the wheels a Kaggle image may lack, each fold's `best.pt` + `config.json` and
# `blend.json`. Attach the bundle (a dataset) and the competition, run all: the bundle is found
# wherever Kaggle mounts it, kit installs from it with `--no-index --no-deps` (only the wheels the
# image lacks; nothing the image has is replaced, and a missing or too-old package is named with
# its fix), and the saved blend, with the settings it was fitted with, writes `submission.csv`
# (and `submission.blend.json`) to the working folder. `kit package --comp NAME` sets `comp`;
# `kit blend --blend-json blend.json` gives the same submission.

# %% tags=["parameters"]
bundle = ""  # the bundle's folder; empty: the folder under kaggle_input that holds its .kit-bundle marker
comp = "competition-name"  # the competition's folder under kaggle_input, or a path
kaggle_input = "/kaggle/input"  # where Kaggle mounts the competition and the datasets attached
submission_kind = ""  # auto, label, probability; empty: the saved blend's
name = "submission"
out_dir = "."
device = "auto"
batch_size = 128  # test images per batch, and per forward with the TTA views; lower it if the GPU runs out
num_workers = -1  # processes decoding test images; -1: the cores per GPU (at most 8)

# %%
# Internet off. kit is not installed yet, so this cell uses the standard library only: find the bundle
# (its dataset may be mounted one to three folders deep), then install kit's wheel without dependencies.
import glob
import os
import subprocess
import sys

if not bundle:
    found = [m for depth in (1, 2, 3) for m in sorted(glob.glob(f"{kaggle_input}/{'*/' * depth}.kit-bundle"))]
    if len(found) != 1:
        raise FileNotFoundError(f"{len(found)} kit bundles under {kaggle_input} ({found}): attach exactly one bundle "
                                "dataset (Add Input), or set bundle to its folder")
    bundle = os.path.dirname(found[0])
subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                *glob.glob(os.path.join(bundle, "wheels", "kaggle_kit-*.whl"))], check=True)

# %%
# The other wheels the image lacks, then every requirement of kit checked against the image.
from kit.deps import install_bundle

print("installed from the bundle:", install_bundle(os.path.join(bundle, "wheels")))

# %%
from kit.infer import blend_and_submit

done = blend_and_submit(os.path.join(kaggle_input, comp), blend_json=os.path.join(bundle, "blend.json"),
                        runs_dir=os.path.join(bundle, "runs"), name=name, out_dir=out_dir, device=device,
                        submission_kind=submission_kind, batch_size=batch_size, num_workers=num_workers)
print(f"{len(done.comp.test)} test images; wrote {done.path}")
done.submission.head()
