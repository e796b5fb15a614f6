"""Where and how kit computes (kit.device): the device, training and inference precision, seeds, threads."""

import random

import numpy as np
import pytest
import torch

from kit import KitError
from kit.device import amp_dtype, dtype_name, headless, inference_dtype, pick_device, seed_everything, set_threads

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def bf16_gpu(monkeypatch, has: bool):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: has)


def test_auto_amp_is_bf16_on_a_gpu_that_has_it_and_full_precision_elsewhere(monkeypatch):
    assert amp_dtype("auto", CPU) is None
    bf16_gpu(monkeypatch, True)
    assert amp_dtype("auto", CUDA) == torch.bfloat16
    bf16_gpu(monkeypatch, False)  # a T4: fp16 would need a GradScaler, so auto stays in full precision
    assert amp_dtype("auto", CUDA) is None
    assert [amp_dtype(a, CPU) for a in ("off", "bf16", "fp16")] == [None, torch.bfloat16, torch.float16]


def test_inference_dtype_keeps_the_training_precision_where_the_device_has_it(monkeypatch):
    assert [inference_dtype(a, "cpu") for a in ("off", "bfloat16", "float16")] == [None, torch.bfloat16, None]
    bf16_gpu(monkeypatch, True)
    assert [inference_dtype(a, "cuda") for a in ("off", "bfloat16", "float16")] == [None, torch.bfloat16,
                                                                                    torch.float16]
    bf16_gpu(monkeypatch, False)  # a T4
    assert inference_dtype("bfloat16", "cuda") == torch.float16
    assert inference_dtype("bfloat16", "mps") is None  # autocast only where kit has measured it


def test_what_training_records_is_what_inference_reads():
    recorded = [dtype_name(d) for d in (None, torch.bfloat16, torch.float16)]
    assert recorded == ["off", "bfloat16", "float16"]
    assert [inference_dtype(r, "cpu") for r in recorded] == [None, torch.bfloat16, None]


def test_an_unknown_recorded_precision_names_where_it_was_read():
    with pytest.raises(KitError, match=r"runs/e/fold0/config.json: amp_resolved='bf16' is not one of 'off', "
                                       r"'bfloat16', 'float16'.*retrain it \(--force\)"):
        inference_dtype("bf16", "cpu", source="runs/e/fold0/config.json")


def test_pick_device_refuses_cuda_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto") == CPU and pick_device("cpu") == CPU
    with pytest.raises(KitError, match=r"device='cuda:1' but torch sees no CUDA GPU; use device='cpu' or 'auto'"):
        pick_device("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto") == CUDA and pick_device("cuda:1") == torch.device("cuda:1")


def test_seed_everything_repeats_every_generator():
    def draw():
        return random.random(), float(np.random.rand()), float(torch.rand(1))

    seed_everything(3)
    first = draw()
    seed_everything(3)
    assert draw() == first
    seed_everything(4)
    assert all(a != b for a, b in zip(draw(), first))


def test_threads_zero_keeps_torchs_default():
    before = torch.get_num_threads()
    try:
        set_threads(0)
        assert torch.get_num_threads() == before
        set_threads(1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_headless_is_read_when_asked_not_when_kit_is_imported(monkeypatch):
    monkeypatch.setenv("KIT_HEADLESS", "1")
    assert headless()
    monkeypatch.setenv("KIT_HEADLESS", "0")
    assert not headless()
