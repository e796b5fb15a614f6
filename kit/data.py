"""Images on disk -> normalized tensors, read lazily one file at a time."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import Sequence

import albumentations as A
import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset

from . import KitError
from .device import headless


# Images larger than this many pixels are decoded at a reduced size (JPEG draft mode) or refused:
# a 30000x30000 PNG would need 2.7 GB as RGB before any resize.
MAX_PIXELS = 64_000_000
Image.MAX_IMAGE_PIXELS = None  # our own limit below, with a message that names the file


# A dataset decodes JPEGs at the smallest 1/2, 1/4 or 1/8 scale whose sides stay at least this many
# times the training size: libjpeg scales in the DCT, which is several times faster than decoding the
# full image (the bottleneck for 512+ px photos trained at 64-256 px) and a proper low-pass filter,
# unlike a bilinear resize by 4x or 8x. The margin leaves crops and zooms their detail.
DECODE_MARGIN = 2


def read_image(path: str, min_side: int = 0) -> np.ndarray:
    """HWC uint8 RGB from any file PIL reads: grayscale, palette, RGBA (on white), 16-bit (scaled, not
    clipped), EXIF-rotated (turned upright), whatever its extension says.

    min_side > 0: a JPEG may be decoded reduced (DCT scaling) as long as both sides stay >= min_side."""
    try:
        with Image.open(path) as im:
            draft(im, min_side, path)
            im = ImageOps.exif_transpose(im)
            return np.asarray(to_rgb(im))
    except FileNotFoundError:
        raise KitError(f"image file {path} does not exist") from None
    except (OSError, SyntaxError, ValueError) as e:  # truncated, empty, not an image, broken header
        raise KitError(f"cannot read image {path}: {e}; delete it, drop its row from train.csv, "
                       "or train with on_bad_image='skip'") from None


def draft(im: Image.Image, min_side: int, path: str) -> None:
    """Before any pixel is decoded: a JPEG set to decode reduced as far as min_side allows; an image over
    MAX_PIXELS reduced (JPEG) or refused."""
    if im.width * im.height > MAX_PIXELS:
        if im.format == "JPEG":  # decode at 1/2, 1/4 or 1/8 scale: never the full bitmap
            im.draft("RGB", (max(min_side, 1024), max(min_side, 1024)))
        else:
            raise KitError(f"image {path} is {im.width}x{im.height} ({im.width * im.height / 1e6:.0f} MP), "
                           f"over kit.data.MAX_PIXELS={MAX_PIXELS / 1e6:.0f} MP; downscale it first")
    elif min_side and im.format == "JPEG":
        im.draft("RGB", (min_side, min_side))


def decoded_size(path: str, min_side: int) -> tuple[int, int] | None:
    """The size read_image(path, min_side) decodes at, read from the header alone; None if it cannot be
    read (read_image then says why)."""
    try:
        with Image.open(path) as im:
            draft(im, min_side, path)
            return im.size
    except (KitError, OSError, SyntaxError, ValueError):
        return None


def decode_once(path: str, sides: list[int]) -> dict[int, np.ndarray]:
    """{min_side: read_image(path, min_side)} for several sides, decoding the file once per distinct scale
    it decodes at: once, unless a large JPEG decodes reduced further for a smaller side (as training read
    it: the same pixels as each side alone)."""
    if len(sides) == 1:
        return {sides[0]: read_image(path, sides[0])}
    images, by_size = {}, {}
    for side in sides:
        size = decoded_size(path, side)
        if size is None or size not in by_size:
            by_size[size] = read_image(path, side)
        images[side] = by_size[size]
    return images


def to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16/32-bit grayscale: scale to 8 bits
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
        return Image.fromarray((a * (255.0 / top)).clip(0, 255).astype(np.uint8)).convert("RGB")
    if im.mode == "P" and "transparency" in im.info or im.mode in ("RGBA", "LA", "PA"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def cache_file(path: str, min_side: int, cache_dir: str | Path) -> Path:
    """Where the decoded image lives: keyed on the file's path, size and mtime, so an edited file misses."""
    st = os.stat(path)
    key = hashlib.sha1(f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}|{min_side}".encode()).hexdigest()
    return Path(cache_dir) / key[:2] / f"{key}.npy"


def load_image(path: str, min_side: int = 0, cache_dir: str | Path | None = None) -> np.ndarray:
    """read_image through the decoded-image cache.

    Decoding a photo costs more CPU than augmenting it (about 1 ms for a 512 px JPEG even at 1/4 scale,
    see bench/), and it is the same every epoch. The decoded array is kept as a .npy beside the runs
    when it is no bigger than the file itself (so the cache never takes more disk than the images),
    and loading it is ~20x cheaper than decoding again."""
    if cache_dir is None or not os.path.isfile(path):
        return read_image(path, min_side)  # no cache, or the error that names the missing image
    cached = cache_file(path, min_side, cache_dir)
    try:
        return np.load(cached)
    except (OSError, ValueError, EOFError):  # not cached yet, or a torn write from a crash
        pass
    image = read_image(path, min_side)
    if image.nbytes <= os.path.getsize(path):
        try:
            save_npy(image, cached)
        except OSError:  # a read-only or full disk: the cache is an optimization, training goes on
            pass
    return image


def save_npy(array: np.ndarray, path: Path) -> None:
    """Write-then-rename, so a reader never sees half a file; no fsync (unlike kit.io.atomic_path): a
    cache entry lost in a power cut is decoded again, and an fsync per image would cost more than the
    decode it saves. Safe with several workers or folds writing the same entry."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.save(f, array)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def check_image(path: str, min_side: int = 0, cache_dir: str | Path | None = None) -> str:
    """'' if the file decodes, else why not. A reduced JPEG decode still reads every byte of the
    entropy-coded data, so a truncated file fails just the same; a cached file decoded before."""
    try:
        if os.path.getsize(path) == 0:
            raise KitError(f"image {path} is an empty file (0 bytes)")
        if cache_dir is None or not cache_file(path, min_side, cache_dir).is_file():
            load_image(path, min_side, cache_dir)
    except (KitError, OSError) as e:
        return str(e)
    return ""


def scan_images(paths, desc: str = "checking images", min_side: int = 0, threads: int = 0,
                cache_dir: str | Path | None = None) -> pd.DataFrame:
    """Every image decoded once (filling the cache): (path, error) for each file that cannot be read.

    Threads, not processes: PIL releases the GIL while it decodes."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    paths, errors = list(paths), []
    with ThreadPoolExecutor(threads or min(8, os.cpu_count() or 1)) as pool, \
            tqdm(total=len(paths), desc=desc, mininterval=2, leave=False,
                 disable=headless()) as bar:
        for i in range(0, len(paths), 1024):  # in chunks: a million pending futures would cost memory
            chunk = paths[i:i + 1024]
            errors += pool.map(check_image, chunk, [min_side] * len(chunk), [cache_dir] * len(chunk))
            bar.update(len(chunk))
    return pd.DataFrame([(p, e) for p, e in zip(paths, errors) if e], columns=["path", "error"])


def readable_images(paths: pd.Series, on_bad_image: str, min_side: int = 0, cache_dir: Path | None = None
                    ) -> np.ndarray:
    """Decode every image once (at the scale training reads it, into the cache; a cached image was
    decoded before): stop with the list of unreadable ones, or (skip) mark them out."""
    bad = scan_images(paths, desc=f"checking {len(paths)} images", min_side=min_side, cache_dir=cache_dir)
    if len(bad) and on_bad_image == "error":
        listing = "\n".join(f"  {r.path}: {r.error}" for r in bad.head(20).itertuples())
        raise KitError(f"{len(bad)} image(s) cannot be read:\n{listing}\nfix or delete them, or set "
                       "on_bad_image='skip' to leave them out (they get uniform OOF probabilities)")
    if len(bad):
        print(f"skipping {len(bad)} unreadable image(s); the first: {bad['path'].iloc[0]}")
    return ~paths.isin(set(bad["path"])).to_numpy()


class ImageDataset(Dataset):
    """size: the side the transform produces; JPEGs are decoded no larger than DECODE_MARGIN * size needs.
    cache_dir: decoded images are kept there (see load_image)."""

    def __init__(self, paths: Sequence[str], targets: Sequence[int] | np.ndarray | None, transform: A.Compose,
                 size: int = 0, cache_dir: str | Path | None = None):
        """targets: class indices, an (N, K) 0/1 matrix (multi-label), or (N, K) probabilities (soft targets: a
        teacher's, kit.teacher): a sample's target is then its row."""
        self.paths = list(paths)
        t = None if targets is None else np.asarray(targets)
        # class indices or 0/1 rows stay integers; (N, K) probabilities (distillation, pseudo-labels) stay floats
        self.targets = None if t is None else t.astype(np.float32) if t.dtype.kind == "f" else t.astype(np.int64)
        self.transform = transform
        self.min_side = DECODE_MARGIN * size
        self.cache_dir = cache_dir

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        image = self.transform(image=load_image(self.paths[i], self.min_side, self.cache_dir))["image"]
        x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return x, (-1 if self.targets is None else self.targets[i])


class SharedDecodeDataset(Dataset):
    """The test images for several models at once: item i is (a tuple of one tensor per (transform, size),
    -1), each image decoded once for all of them (decode_once) and resized and normalized per model group."""

    def __init__(self, paths: Sequence[str], transforms: list[tuple[A.Compose, int]]):
        self.paths, self.transforms = list(paths), transforms
        self.sides = sorted({DECODE_MARGIN * size for _, size in transforms}, reverse=True)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        images = decode_once(self.paths[i], self.sides)
        return tuple(chw(t(image=images[DECODE_MARGIN * size])["image"]) for t, size in self.transforms), -1


def chw(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


def make_loader(ds: Dataset, batch_size: int, train: bool, num_workers: int = 0, seed: int = 0) -> DataLoader:
    """Workers are started afresh for every pass (not persistent): each gets its seeds from the loader's
    generator at that pass (see seed_worker), so reseeding the generator per epoch reaches the workers.
    Persistent workers would each keep a copy of one augmentation generator, made once, and the epoch
    would never reach them. Starting them costs a fork per epoch; their prefetch restarts either way."""
    return DataLoader(ds, batch_size=batch_size, shuffle=train, drop_last=train and len(ds) > batch_size,
                      num_workers=num_workers, pin_memory=torch.cuda.is_available(),
                      worker_init_fn=seed_worker if num_workers > 0 else None,
                      generator=torch.Generator().manual_seed(seed) if train else None)


def seed_worker(worker_id: int) -> None:
    """worker_init_fn: give this worker's augmentation generator its own seed.

    torch seeds a worker's torch, random and numpy from base_seed + worker_id, with base_seed drawn from
    the loader's generator when the pass starts: from (seed, epoch) when fit_fold reseeds the generator
    each epoch. Albumentations 2 draws from a generator of its own, which torch does not reseed: forked
    from the main process, every worker would repeat the same draws."""
    info = torch.utils.data.get_worker_info()
    transform = getattr(info.dataset, "transform", None)
    if hasattr(transform, "set_random_seed"):
        transform.set_random_seed(info.seed)


AUTO_WORKERS = -1  # num_workers=-1: pick from the device (loader_workers)


def loader_workers(num_workers: int, device: torch.device) -> int:
    """num_workers, or for AUTO_WORKERS: 0 on CPU, where the forward/backward already keeps every core
    busy and a worker only competes with it (bench/: 0.94-1.02x with 1-2 workers on 2 cores); on CUDA the
    cores per visible GPU, at most 8, so decoding and augmenting keep up with the GPU. A run-folds worker
    sees only its own GPU: with several folds on one machine set num_workers to cores / GPUs."""
    if num_workers != AUTO_WORKERS:
        return num_workers
    if device.type != "cuda":
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(8, cores // max(1, torch.cuda.device_count())))
