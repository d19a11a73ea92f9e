"""Fast style models: apply time by network size, training step time, and judged quality next to the optimiser.

Run: .venv/bin/python benchmarks/fast.py [--apply-sizes 512 1024] [--train-steps 20]
                                         [--model MODEL.npz [--size 384] [--steps 300] [--out benchmark-output]]

- apply: seconds per photo (median of three, after a warm-up) for each transformer size in
  ARCHITECTURES, in float32 and, where it is fast, bfloat16 (random weights: the time does not depend
  on them);
- train: seconds per training step of the default architecture (VGG19, 160 px crops, batch 4);
- quality (with --model): for each pair in PAIRS, the judged style and content distances (see
  benchmarks/quality.py) of the optimiser's default output (--steps steps), the model's one-pass
  output, and that output refined by the optimiser for a third of the steps, all at --size; the
  pictures side by side in --out.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

import styleplug  # noqa: E402
from styleplug.core.device import fast_bfloat16  # noqa: E402
from styleplug.fast.model import Architecture, StyleModel  # noqa: E402
from styleplug.run.image import load_image, resize_long_side  # noqa: E402
from styleplug.fast.training import train  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from quality import EXAMPLES, WEIGHTS, Judge, measure  # noqa: E402

ARCHITECTURES = [Architecture((16, 32, 64), 4), Architecture((24, 48, 96), 4), Architecture((32, 64, 128), 5)]
# (photo, painting, the model's style name): the held-out photo with each painting.
PAIRS = [("chelsea", "starry_night", "starry_night"), ("chelsea", "shipwreck", "shipwreck"),
         ("chelsea", "woman_with_hat_matisse", "matisse")]


def apply_times(sizes: list[int]) -> None:
    precisions = ["float32", "bfloat16"] if fast_bfloat16() else ["float32"]
    print(f"{'architecture':<32} {'parameters':>10} {'precision':>9} " + " ".join(f"{size:>7}px" for size in sizes))
    photo = np.random.default_rng(0).uniform(0, 255, (max(sizes), max(sizes), 3)).astype(np.uint8)
    for architecture in ARCHITECTURES:
        for precision in precisions:
            model = StyleModel.new(["a", "b", "c"], architecture, precision)
            parameters = sum(int(np.prod(weight.shape)) for weight in model.transformer.weights)
            seconds = []
            for size in sizes:
                image = Image.fromarray(photo[:size, :size])
                model.stylize(image)
                times = []
                for _ in range(3):
                    started = time.perf_counter()
                    model.stylize(image)
                    times.append(time.perf_counter() - started)
                seconds.append(statistics.median(times))
            widths = f"{architecture.widths} x{architecture.residual_blocks}"
            print(f"{widths:<32} {parameters:>10} {precision:>9} " + " ".join(f"{value:>8.3f}s" for value in seconds))


def train_step_time(steps: int) -> None:
    stamps: list[float] = []
    with tempfile.TemporaryDirectory() as folder:
        photos = Path(folder) / "photos"
        photos.mkdir()
        for name in ("tubingen", "hoovertowernight", "astronaut"):
            load_image(EXAMPLES / f"{name}.jpg", name).save(photos / f"{name}.png")
        train([EXAMPLES / "starry_night.jpg"], photos, Path(folder) / "model.npz", steps=steps + 3, weights=WEIGHTS,
              checkpoint_every=10**6, callback=lambda progress: stamps.append(time.perf_counter()))
    per_step = (stamps[-1] - stamps[2]) / (len(stamps) - 3)
    print(f"training: {per_step:.2f} s per step (VGG19 {WEIGHTS}, 160 px crops, batch 4, "
          f"{'bfloat16' if fast_bfloat16() else 'float32'}), {steps} steps after 3 to warm up")


def quality(model_path: Path, size: int, steps: int, out: Path) -> None:
    judge = Judge()
    model = StyleModel.load(model_path)
    engine = styleplug.Engine("vgg19", WEIGHTS)
    refine = max(1, steps // 3)
    print(f"{'pair':<40} {'method':<26} {'seconds':>7} {'style':>6} {'content':>7}")
    rows = []
    for photo_name, painting_name, style in PAIRS:
        photo_path, painting_path = EXAMPLES / f"{photo_name}.jpg", EXAMPLES / f"{painting_name}.jpg"
        photo, painting = load_image(photo_path, "photo"), load_image(painting_path, "painting")
        results = {}
        started = time.perf_counter()
        results["optimiser"] = (engine.stylize(photo_path, painting_path, size=size, steps=steps), time.perf_counter() - started)
        started = time.perf_counter()
        results["fast"] = (model.stylize(photo_path, style=style, size=size), time.perf_counter() - started)
        started = time.perf_counter()
        refined = engine.stylize(photo_path, painting_path, size=size, steps=refine, init=f"{model_path}:{style}")
        results[f"fast + {refine} steps"] = (refined, time.perf_counter() - started)
        for method, (image, seconds) in results.items():
            distance_style, distance_content, _ = measure(judge, photo, painting, image)
            print(f"{photo_name + ' x ' + painting_name:<40} {method:<26} {seconds:>7.1f} {distance_style:>6.3f} "
                  f"{distance_content:>7.3f}")
        rows.append([resize_long_side(photo, size)] + [image for image, _ in results.values()])
    out.mkdir(parents=True, exist_ok=True)
    width, height = rows[0][0].size
    sheet = Image.new("RGB", (width * len(rows[0]), height * len(rows)), "white")
    for row, images in enumerate(rows):
        for column, image in enumerate(images):
            sheet.paste(image.resize((width, height)), (column * width, row * height))
    sheet.save(out / "fast_quality.jpg", quality=90)
    print(f"pictures (photo, optimiser, fast, fast + refine): {out / 'fast_quality.jpg'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--apply-sizes", type=int, nargs="*", default=[512, 1024])
    parser.add_argument("--train-steps", type=int, default=20, help="0 skips the training measurement")
    parser.add_argument("--model", type=Path, help="a trained model to judge against the optimiser")
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--out", type=Path, default=Path("benchmark-output"))
    args = parser.parse_args()
    if args.apply_sizes:
        apply_times(args.apply_sizes)
    if args.train_steps:
        train_step_time(args.train_steps)
    if args.model:
        quality(args.model, args.size, args.steps, args.out)


if __name__ == "__main__":
    main()
