"""GPU figures, run by `make bench` only where torch sees a CUDA GPU: the training and TTA ratios of
throughput.py and tta_speed.py on the GPU (bf16 autocast, channels_last, as fit_fold does there), and
EfficientNet-B6 at its native 528 px: training images/s in bf16 with channels_last.

Run: .venv/bin/python bench/gpu.py
"""

from __future__ import annotations

import torch

from common import CLASSES, Row, interleaved

B6_BATCH = 16


def b6_rows(device: str = "cuda", rounds: int = 3) -> list[Row]:
    from kit.models import create_model, resolve_model
    from throughput import limit_run

    _, size = resolve_model("effnet_b6", 0)
    model = create_model("effnet_b6", CLASSES).to(device).to(memory_format=torch.channels_last)
    v = interleaved({"b6": limit_run(model, size, B6_BATCH, 10, torch.device(device), True)}, rounds)
    return [Row(f"B6 train {size}px, bf16, channels_last, batch {B6_BATCH}, {torch.cuda.get_device_name(0)}",
                f"{v['b6']:.1f} img/s", "")]


def main() -> list[Row]:
    import tta_speed
    import throughput

    if not torch.cuda.is_available():
        return [Row("GPU: training and TTA ratios, B6 528 px bf16 channels_last img/s",
                    "not measured: torch sees no CUDA GPU here", "")]
    name = torch.cuda.get_device_name(0)
    rows = throughput.main(device="cuda", sizes=(128, 224), batch=64)
    rows += tta_speed.main(device="cuda", size=224, batch=64)
    for r in rows:
        r.measure = f"[{name}] {r.measure}"
    return rows + b6_rows()


if __name__ == "__main__":
    from common import markdown

    print(markdown(main()) if torch.cuda.is_available() else "no CUDA GPU: nothing to measure")
