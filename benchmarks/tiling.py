"""Exact tiled optimisation: gradient agreement, the per-step cost of tiles, and large jobs' memory and time.

Run: .venv/bin/python benchmarks/tiling.py [--parts agreement overhead jobs apply checkpoint] [--job-sizes 1024 2048 4096]
                                          [--steps 300] [--max-memory 8] [--apply-size 4096] [--checkpoint-size 4096]
                                          [--out benchmark-output]

agreement: the tiled loss and gradient against the untiled ones (tubingen, two masked styles,
  noise start, 512 px), in float32 and in the engine's automatic precision.
overhead: ms per step at 1024 px, untiled and in the tiles the planner picks under --max-memory
  (both in one process, the engine's automatic precision, after a chunk that traces).
jobs: each size in a process of its own (the peak RSS is the kernel's): a default coarse-to-fine
  job on tubingen/starry_night with --max-memory GiB, printing the planner's tiles, the time and
  the peak. Then a crop of the largest output beside the same crop of the smallest, upscaled.
apply: the shipped fast style model on tubingen at --apply-size, in one pass and in tiles of 1024
  and 2048 px, each in a process of its own: time, peak RSS, and how far the tiled pictures are
  from the one-pass one.
checkpoint: a run's L-BFGS state (history 5) for a --checkpoint-size px photo (4:3) saved to a
  checkpoint and resumed into a new run's state, in a process of its own: the file's size, the
  seconds, and the most RSS each held above the run's own (sampled every 5 ms).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from timing import Gaps, logged_lines, peak_rss_gib  # noqa: E402

EXAMPLES = Path(__file__).resolve().parent.parent / "styleplug" / "examples"
CONTENT, STYLE, SECOND = EXAMPLES / "tubingen.jpg", EXAMPLES / "starry_night.jpg", EXAMPLES / "woman_with_hat_matisse.jpg"


def agreement() -> None:
    import numpy as np
    from PIL import Image

    import styleplug
    from styleplug.testing import tiled_gradient_agreement

    width, height = 512, 384
    left = np.zeros((height, width), np.uint8)
    left[:, : width // 2] = 255
    masks = [Image.fromarray(left), Image.fromarray(255 - left)]
    job = styleplug.Job(content=CONTENT, style=[STYLE, SECOND], masks=masks, size=width, init="noise", style_scale=0.5)
    for precision in ("float32", "auto"):
        engine = styleplug.Engine("vgg19", "auto", precision=precision)
        for tile in (256, 128):
            found = tiled_gradient_agreement(engine, job, tile)
            print(f"agreement {engine.precision:8s} tiles of {tile} px ({found['tiles']:2d} tiles): loss {found['total']:.6g} "
                  f"tiled {found['tiled_total']:.6g}, gradient error {found['gradient_error_max']:.2e} of the largest "
                  f"element, {found['gradient_error_norm']:.2e} of the norm", flush=True)


def overhead(max_memory: float) -> None:
    import styleplug

    engine = styleplug.Engine("vgg19", "auto")
    times = {}
    for tiling in ("off", "auto"):
        gaps = Gaps()

        def steps_only(progress: Any, gaps: Gaps = gaps) -> None:  # not the reports between tiles
            if progress.tile is None:
                gaps(progress)

        engine.stylize(CONTENT, STYLE, size=1024, scales="none", steps=8, tolerance=0, chunk_size=2, tiling=tiling,
                       max_memory=max_memory if tiling == "auto" else None, callback=steps_only)
        times[tiling], _ = gaps.per_step(2)
        print(f"overhead {engine.precision} 1024x768 {'untiled' if tiling == 'off' else 'tiled'}: "
              f"{1000 * times[tiling]:.0f} ms per step", flush=True)
    print(f"overhead tiled / untiled per step at 1024 px: {times['auto'] / times['off']:.2f}x", flush=True)


def job(size: int, steps: int, max_memory: float, out: Path) -> None:
    """One default job in this process; print a JSON line with its figures."""
    import styleplug

    plans = logged_lines()
    engine = styleplug.Engine("vgg19", "auto")
    started, tiles = time.perf_counter(), set()
    image = engine.stylize(CONTENT, STYLE, size=size, steps=steps, max_memory=max_memory,
                           callback=lambda progress: tiles.add((progress.size, progress.tile[1] // 2)) if progress.tile else None)
    seconds = time.perf_counter() - started
    path = out / f"tiling-{size}.png"
    image.save(path)
    print(json.dumps({"size": size, "seconds": round(seconds, 1), "peak_gib": peak_rss_gib(),
                      "precision": engine.precision, "plans": plans, "tiled_scales": sorted(tiles),
                      "steps_run": json.loads(image.info["styleplug"])["steps_run"], "path": str(path)}))


def apply(size: int, tile: int, out: Path) -> None:
    """Paint once with the shipped model in this process; print a JSON line with its figures."""
    from styleplug.fast.model import StyleModel

    model = StyleModel.load(EXAMPLES.parent / "models" / "styles.npz")
    model.stylize(CONTENT, size=256)  # the first call builds the network's kernels
    started = time.perf_counter()
    image = model.stylize(CONTENT, size=size, tile_size=tile)
    seconds = time.perf_counter() - started
    path = out / f"apply-{size}-tiles-{tile}.png"
    image.save(path)
    print(json.dumps({"seconds": round(seconds, 1), "peak_gib": peak_rss_gib(),
                      "path": str(path), "size": f"{image.width}x{image.height}"}))


def checkpoint_memory(size: int, out: Path) -> None:
    """Save and resume the state of a ``size`` px run, printing the RSS each adds to the run's own."""
    import threading

    import numpy as np
    import psutil

    from styleplug.core.compiled import Stepper
    from styleplug.run.checkpoint import Checkpoint, load_checkpoint, save_checkpoint

    process, path = psutil.Process(), out / f"checkpoint-{size}.npz"

    def peak_above_after(action: Any) -> tuple[float, float]:
        """``action()``'s seconds, and the most RSS (GiB) it held above what it left (sampled every 5 ms)."""
        highest, running = [0], True

        def sample() -> None:
            while running:
                highest[0] = max(highest[0], process.memory_info().rss)
                time.sleep(0.005)

        sampler = threading.Thread(target=sample)
        sampler.start()
        began = time.perf_counter()
        action()
        seconds, running = time.perf_counter() - began, False
        sampler.join()
        return round(seconds, 2), round(max(highest[0] - process.memory_info().rss, 0) / 2**30, 2)

    start = np.random.default_rng(0).uniform(0, 255, (1, size * 3 // 4, size, 3)).astype(np.float32)
    run = Stepper(None, [], start, "lbfgs", 1.0, 5, "float32")
    # A new run's history is zeros, which take no memory until written; a running job's is written.
    run.restore(start, [np.ones_like(value) for value in run.state()[1]])
    state_gib = sum(np.asarray(value).nbytes for value in run.state()[1]) / 2**30
    save = peak_above_after(lambda: save_checkpoint(str(path), "bench", Checkpoint(0, 1, 1, *run.state())))
    del run
    resumed, stored = Stepper(None, [], start, "lbfgs", 1.0, 5, "float32"), load_checkpoint(str(path), "bench")
    resume = peak_above_after(lambda: resumed.restore(stored.best, stored.state))
    print(json.dumps({"state_gib": round(state_gib, 2), "file_gib": round(path.stat().st_size / 2**30, 2),
                      "save": save, "resume": resume}))
    path.unlink()


def in_worker(*arguments: str) -> dict[str, Any]:
    """The JSON line a worker process of this script prints (peak RSS is per process)."""
    done = subprocess.run([sys.executable, __file__, *arguments], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def crops(paths: dict[int, Path], out: Path) -> None:
    """The same 512 px square of the largest output and of the smallest, upscaled, side by side."""
    from PIL import Image

    largest, smallest = Image.open(paths[max(paths)]), Image.open(paths[min(paths)])
    upscaled = smallest.resize(largest.size, Image.Resampling.LANCZOS)
    left, top = largest.width // 2 - 256, largest.height // 2 - 256
    box = (left, top, left + 512, top + 512)
    sheet = Image.new("RGB", (1024 + 8, 512), "white")
    sheet.paste(largest.crop(box), (0, 0))
    sheet.paste(upscaled.crop(box), (512 + 8, 0))
    path = out / f"tiling-crop-{max(paths)}-vs-{min(paths)}.png"
    sheet.save(path)
    print(f"crop: {path} (left: {max(paths)} px at 100%, right: {min(paths)} px upscaled)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=["agreement", "overhead", "jobs", "apply", "checkpoint"],
                        choices=["agreement", "overhead", "jobs", "apply", "checkpoint"])
    parser.add_argument("--job-sizes", nargs="+", type=int, default=[1024, 2048, 4096])
    parser.add_argument("--steps", type=int, default=300, help="most steps per scale (the default job's 300)")
    parser.add_argument("--max-memory", type=float, default=8.0, help="GiB a job may plan for")
    parser.add_argument("--apply-size", type=int, default=4096, help="long side of the fast model's photo")
    parser.add_argument("--checkpoint-size", type=int, default=4096, help="long side of the checkpointed run's photo")
    parser.add_argument("--out", type=Path, default=Path("benchmark-output"))
    parser.add_argument("--job", type=int, help=argparse.SUPPRESS)  # one job, in a worker process
    parser.add_argument("--apply-tiles", type=int, help=argparse.SUPPRESS)  # one fast-model painting, in a worker process
    parser.add_argument("--checkpoint-worker", action="store_true", help=argparse.SUPPRESS)  # in a worker process
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.job:
        job(args.job, args.steps, args.max_memory, args.out)
        return
    if args.apply_tiles is not None:
        apply(args.apply_size, args.apply_tiles, args.out)
        return
    if args.checkpoint_worker:
        checkpoint_memory(args.checkpoint_size, args.out)
        return
    if "agreement" in args.parts:
        agreement()
    if "overhead" in args.parts:
        overhead(args.max_memory)
    if "jobs" in args.parts:
        paths = {}
        for size in args.job_sizes:
            figures = in_worker("--job", str(size), "--steps", str(args.steps), "--max-memory", str(args.max_memory),
                                "--out", str(args.out))
            paths[size] = Path(figures["path"])
            print(f"job {size} px ({figures['precision']}, {figures['steps_run']} steps over all scales, at most {args.steps} "
                  f"per scale): {figures['seconds']} s, peak RSS {figures['peak_gib']} GiB; tiled scales (px, tiles): "
                  f"{figures['tiled_scales'] or 'none'}", flush=True)
            for plan in figures["plans"]:
                print(f"  planner: {plan}", flush=True)
        if len(paths) > 1:
            crops(paths, args.out)
    if "apply" in args.parts:
        paint_in_tiles(args.apply_size, args.out)
    if "checkpoint" in args.parts:
        figures = in_worker("--checkpoint-worker", "--checkpoint-size", str(args.checkpoint_size), "--out", str(args.out))
        print(f"checkpoint of a {args.checkpoint_size} px run (L-BFGS history 5; state {figures['state_gib']} GiB, file "
              f"{figures['file_gib']} GiB): saved in {figures['save'][0]} s holding at most {figures['save'][1]} GiB above the "
              f"run's own memory, resumed in {figures['resume'][0]} s holding at most {figures['resume'][1]} GiB above it", flush=True)


def paint_in_tiles(size: int, out: Path) -> None:
    import numpy as np
    from PIL import Image

    runs = {tile: in_worker("--apply-tiles", str(tile), "--apply-size", str(size), "--out", str(out)) for tile in (0, 1024, 2048)}
    whole = np.asarray(Image.open(runs[0]["path"]), np.float32)
    for tile, figures in runs.items():
        difference = np.abs(np.asarray(Image.open(figures["path"]), np.float32) - whole).mean()
        print(f"apply {figures['size']} {'in one pass' if tile == 0 else f'in tiles of {tile} px'}: {figures['seconds']} s, "
              f"peak RSS {figures['peak_gib']} GiB, {difference:.2f}/255 from the one-pass picture", flush=True)


if __name__ == "__main__":
    main()
