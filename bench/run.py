"""`make bench`: every benchmark in one run on this machine, as one Markdown table.

Writes bench/results/bench.md (the table, the machine, the date and the minutes it took) and prints it.
The README's "Benchmarks" table is a copy of one such file.
"""

from __future__ import annotations

import datetime
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("KIT_HEADLESS", "1")  # no progress bars inside timed loops

import blend_fit  # noqa: E402
import gpu  # noqa: E402
import infer_speed  # noqa: E402
import memory  # noqa: E402
import runner_overhead  # noqa: E402
import sam_cost  # noqa: E402
import throughput  # noqa: E402
import tta_speed  # noqa: E402
from common import RESULTS, machine, markdown  # noqa: E402

SECTIONS = [("training throughput", throughput.main), ("SAM", sam_cost.main), ("TTA", tta_speed.main),
            ("test inference", infer_speed.main),
            ("memory", memory.main), ("blending", blend_fit.main), ("runner overhead", runner_overhead.main),
            ("GPU", gpu.main)]


def main() -> None:
    t0 = time.time()
    rows = []
    for name, fn in SECTIONS:
        print(f"--- {name}", flush=True)
        rows += fn()
    minutes = (time.time() - t0) / 60
    text = (f"Machine: {machine()}\n\nRun {datetime.date.today()}, `make bench`, {minutes:.1f} min. Ratios are kit / "
            f"reference; each speed is the median of interleaved rounds.\n\n{markdown(rows)}\n")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
