"""SAM's cost: seconds per optimizer update of kit's SAM step against its plain step, and the saving
of SAM every N updates, on in-memory batches through kit.train.train_one_epoch (same code path as a fold).

Run: .venv/bin/python bench/sam_cost.py
"""

from __future__ import annotations

import os

import torch

from common import CLASSES, Row, at_most, interleaved, timed

def epoch_run(sam: str, every: int, size: int, batch: int, updates: int, device):
    """seconds per update over `updates` in-memory batches."""
    from kit.train import train_one_epoch
    from throughput import kit_state

    state = kit_state(size, batch, device, sam=sam, sam_every=every)
    x = torch.randn(batch, 3, size, size, device=device)
    batches = [(x, torch.randint(0, CLASSES, (batch,), device=device)) for _ in range(updates)]

    def run() -> float:
        def epoch():
            state.step = 0  # every timed epoch as the first one: SAM on the same updates
            train_one_epoch(state, batches)
            if device.type == "cuda":
                torch.cuda.synchronize()
        return timed(epoch) / updates
    return run


def main(device: str = "cpu", size: int = 64, batch: int = 32, updates: int = 4, rounds: int = 3) -> list[Row]:
    device = torch.device(device)
    torch.set_num_threads(os.cpu_count() or 1)
    v = interleaved({"plain": epoch_run("off", 1, size, batch, updates, device),
                     "sam": epoch_run("sam", 1, size, batch, updates, device),
                     "sam_every2": epoch_run("sam", 2, size, batch, updates, device),
                     "sam_every4": epoch_run("sam", 4, size, batch, updates, device)}, rounds)
    print({k: round(s, 3) for k, s in v.items()}, flush=True)
    return [
        Row(f"B0 {size}px: SAM update / plain update", f"{v['sam']:.3f} s", f"{v['plain']:.3f} s",
            *at_most(v["sam"] / v["plain"], 2.1)),
        *[Row(f"B0 {size}px: SAM every {n} updates / plain update (saves {1 - v[f'sam_every{n}'] / v['sam']:.0%} "
              "of the time of SAM on every update)", f"{v[f'sam_every{n}']:.3f} s", f"{v['plain']:.3f} s",
              v[f"sam_every{n}"] / v["plain"]) for n in (2, 4)],
    ]


if __name__ == "__main__":
    from common import markdown

    print(markdown(main()))
