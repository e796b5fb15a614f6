"""TTA speed, images/s: kit.tta.predict_batch (the 8 views of the D4 group stacked and run in forwards of at
most the batch, merged after softmax) against ttach's ClassificationTTAWrapper (one forward per view), the
same model (eval mode, channels_last as fit_fold leaves it), batch and input.

Since forwards are bounded by the batch (a Kaggle GPU must not get 8x the batch it was sized for), kit runs
the same forwards as ttach: the target is parity (>= 0.95, the noise of interleaved rounds on 2 cores), not
the 1.25x that one 8x-batch forward gave on this CPU before.

Run: .venv/bin/python bench/tta_speed.py
"""

from __future__ import annotations

import os

import torch
import ttach

from common import CLASSES, Row, at_least, interleaved, timed

MODEL = "effnet_b0"


def main(device: str = "cpu", size: int = 64, batch: int = 32, batches: int = 3, rounds: int = 5) -> list[Row]:
    from kit.models import create_model
    from kit.tta import n_views, predict_batch

    device = torch.device(device)
    torch.set_num_threads(os.cpu_count() or 1)
    model = create_model(MODEL, CLASSES).to(device).to(memory_format=torch.channels_last).eval()
    x = torch.randn(batch, 3, size, size, device=device)
    wrapper = ttach.ClassificationTTAWrapper(model, ttach.aliases.d4_transform(), merge_mode="mean")
    assert n_views("d4") == len(ttach.aliases.d4_transform()) == 8

    def rate(fn):
        def run() -> float:
            def work():
                with torch.no_grad():
                    for _ in range(batches):
                        fn(x)
                if device.type == "cuda":
                    torch.cuda.synchronize()
            return batches * batch / timed(work)
        return run

    v = interleaved({"kit": rate(lambda b: predict_batch(model, b, "d4")), "ttach": rate(wrapper)}, rounds)
    print({k: round(s, 1) for k, s in v.items()}, flush=True)
    return [Row(f"B0 {size}px TTA, 8 views (d4): kit (forwards bounded by the batch) / ttach wrapper",
                f"{v['kit']:.1f} img/s", f"{v['ttach']:.1f} img/s", *at_least(v["kit"] / v["ttach"], 0.95))]


if __name__ == "__main__":
    from common import markdown

    print(markdown(main()))
