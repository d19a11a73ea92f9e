"""Batches and videos: throughput in this process and on Ray, flicker with and without the smoothing.

Run: .venv/bin/python benchmarks/batch.py [--photos 32] [--size 512] [--frames 48] [--seam-size 256]
                                          [--seam-chunks 4] [--flicker-size 384] [--flicker-frames 24]
                                          [--out benchmark-output]

- photos: images per second for --photos generated photos (--size px square) painted by the shipped
  style model, in this process (one engine, all cores) and on a local Ray cluster with 1 and 2
  actors (the cluster started beforehand, so its start-up is reported on its own line);
- cluster: the same batch on a simulated two-node cluster (two Ray nodes on this machine): what it
  adds is overhead, not scaling, since both nodes share the same cores; bytes sent per photo;
- video: frames per second at --size px, in this process and on Ray;
- seams: where Ray's chunks of frames meet, on a clip of --seam-chunks chunks;
- flicker: the mean change between consecutive output frames (grey levels, 0..255) and their
  sharpness on a static-camera clip of --flicker-frames frames with sensor noise and on a panning
  clip, with each stage of the smoothing on and off, and the judged style and content distance of
  every fourth frame of the panning clip (benchmarks/quality.py); frames 10 and 11 of each (the
  last two on a shorter clip) are saved in --out to look at.
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

from styleplug.frontends.batch import FastPainter, run_batch  # noqa: E402
from styleplug.frontends.video import Smoothing, paint_frames, read_frames  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(Path(__file__).parent))
from quality import EXAMPLES, Judge, measure  # noqa: E402
from support import gradient_image, pan_frames, write_clip  # noqa: E402

MODEL = REPO / "styleplug" / "models" / "styles.npz"
STYLE = "starry_night"


def photos_per_second(folder: Path, photos: int, painter: FastPainter, **where: object) -> tuple[float, dict]:
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        report = run_batch([folder], out, painter, **where)  # type: ignore[arg-type]
        seconds = time.perf_counter() - started
        sizes = [(Path(item["input"]).stat().st_size, Path(item["output"]).stat().st_size) for item in report.done]
    assert len(report.done) == photos, report.failed
    # The painting alone: each photo's time in its worker, the actors working side by side.
    busy = sum(item["seconds"] for item in report.done) / int(where.get("actors", 1))  # type: ignore[call-overload]
    return photos / seconds, {"steady": photos / busy, "sent": statistics.mean(a for a, _ in sizes),
                              "returned": statistics.mean(b for _, b in sizes),
                              "memory": max(item["memory"] for item in report.done)}


def throughput(photos: int, size: int) -> None:
    import ray
    from ray.cluster_utils import Cluster

    painter = FastPainter.from_file(MODEL, style=STYLE)
    with tempfile.TemporaryDirectory() as folder:
        for seed in range(photos):
            gradient_image(size, size, seed=seed).save(Path(folder) / f"photo{seed:03}.jpg", quality=92)
        here, steady = photos_per_second(Path(folder), photos, painter)
        print(f"in-process (all cores):        {here:6.2f} photos/s  (1.00x); painting alone {steady['steady']:.2f}/s")
        started = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        print(f"local Ray cluster start:       {time.perf_counter() - started:6.1f} s")
        for actors in (1, 2):
            rate, steady = photos_per_second(Path(folder), photos, painter, ray="local", actors=actors, threads=2 // actors)
            print(f"Ray, {actors} actor(s) x {2 // actors} thread(s):    {rate:6.2f} photos/s  ({rate / here:.2f}x), "
                  f"actor start-up included; painting alone {steady['steady']:.2f}/s; "
                  f"peak memory per actor {steady['memory'] / 2**30:.2f} GiB")
        optimiser_memory(Path(folder), size)
        ray.shutdown()
        started = time.perf_counter()
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
        cluster.add_node(num_cpus=1)
        print(f"two-node simulated cluster start: {time.perf_counter() - started:6.1f} s")
        rate, traffic = photos_per_second(Path(folder), photos, painter, ray=cluster.address, actors=2, threads=1)
        print(f"two nodes x 1 actor x 1 thread: {rate:6.2f} photos/s  ({rate / here:.2f}x); per photo: "
              f"{traffic['sent'] / 1e3:.0f} kB sent to a worker, {traffic['returned'] / 1e3:.0f} kB returned; "
              f"the model ({MODEL.stat().st_size / 1e6:.1f} MB) once per actor")
        ray.shutdown()
        cluster.shutdown()


def optimiser_memory(folder: Path, size: int) -> None:
    """Peak memory of an actor holding a VGG19 engine (5 steps per photo: the memory, not the time)."""
    import styleplug
    from styleplug.frontends.batch import OptimiserPainter

    job = styleplug.Job(content=np.zeros((64, 64, 3), np.uint8), style=[str(EXAMPLES / "starry_night.jpg")], size=size,
                        steps=5)
    painter = OptimiserPainter.from_job(job, {"network": "vgg19", "weights": "auto", "precision": "auto"})
    with tempfile.TemporaryDirectory() as out:
        report = run_batch(sorted(folder.glob("*"))[:2], out, painter, ray="local", actors=2, threads=1)
    print(f"Ray, optimiser (VGG19, {size}px): peak memory per actor {max(item['memory'] for item in report.done) / 2**30:.2f} GiB")


def video_rates(frames: int, size: int) -> None:
    painter = FastPainter.from_file(MODEL, style=STYLE)
    photo = Image.open(EXAMPLES / "tubingen.jpg").resize((size + frames * 2, size * 3 // 4 + 8))
    with tempfile.TemporaryDirectory() as folder:
        clip = Path(folder) / "clip.mp4"
        write_clip(clip, pan_frames(photo, frames, (size, size * 3 // 4), step=2, noise=2), rate=24)
        for where in ({}, {"ray": "local"}):
            started = time.perf_counter()
            report = run_batch([clip], Path(folder) / "out", painter, **where)  # type: ignore[arg-type]
            seconds = time.perf_counter() - started
            assert report.done, report.failed
            print(f"video {size}px, {'Ray (local, 2 actors)' if where else 'in-process':<22}: "
                  f"{frames / seconds:5.2f} frames/s (start-up included)")
            (Path(folder) / "out" / "clip.mp4").unlink()


def flicker(out: Path, size: int, frames: int) -> None:
    paint = FastPainter.from_file(MODEL, style=STYLE).open()
    photo = Image.open(EXAMPLES / "tubingen.jpg").resize((size + 96, size * 3 // 4))
    painting = Image.open(EXAMPLES / "starry_night.jpg")
    static = pan_frames(photo, frames, (size, size * 3 // 4), step=0, noise=4)
    moving = pan_frames(photo, frames, (size, size * 3 // 4), step=4, noise=4)
    shown = slice(min(10, frames - 2), min(12, frames))
    judge = Judge()

    def change(frames: list[np.ndarray]) -> float:
        return float(np.mean([np.abs(a.astype(np.float64) - b).mean() for a, b in zip(frames, frames[1:])]))

    def sharpness(frames: list[np.ndarray]) -> float:
        """Mean horizontal gradient of the grey frames: what softening strokes lowers."""
        return float(np.mean([np.abs(np.diff(frame.astype(np.float64).mean(axis=-1), axis=1)).mean() for frame in frames]))

    print(f"input change per frame: static {change(static):.2f}, panning {change(moving):.2f}")
    for name, smoothing in (("none", Smoothing(0, 0)), ("output blend 0.6 only", Smoothing(0, 0.6)),
                            ("input denoise 0.8 only", Smoothing(0.8, 0)), ("denoise 0.8, blend 0.3", Smoothing(0.8, 0.3)),
                            ("default (0.8, 0.15)", Smoothing())):
        still = list(paint_frames(paint, static, smoothing))
        panned = list(paint_frames(paint, moving, smoothing))
        judged = [measure(judge, Image.fromarray(frame), painting, Image.fromarray(result))[:2]
                  for frame, result in zip(moving[::4], panned[::4])]
        style, content = np.mean(judged, axis=0)
        print(f"{name:<23}: static clip change {change(still):5.2f}, sharpness {sharpness(still):5.2f}; panning clip change "
              f"{change(panned):5.2f}, sharpness {sharpness(panned):5.2f}, style {style:.3f}, content {content:.3f}")
        Image.fromarray(np.concatenate([np.concatenate(still[shown], 1), np.concatenate(panned[shown], 1)], 0)).save(
            out / f"video_{smoothing.denoise:.1f}_{smoothing.blend:.2f}.png")


def chunk_seam(size: int, count: int) -> None:
    """Where Ray's chunks meet: each chunk painted as an actor paints it (here, before encoding),
    on a static clip with noise, next to one pass over the whole clip."""
    from styleplug.frontends.video import CHUNK_FRAMES, chunks

    paint = FastPainter.from_file(MODEL, style=STYLE).open()
    photo = Image.open(EXAMPLES / "tubingen.jpg").resize((size, size * 3 // 4))
    frames = pan_frames(photo, count * CHUNK_FRAMES, photo.size, step=0, noise=4)
    joined = [frame.astype(np.float64) for piece in chunks(frames)
              for frame in paint_frames(paint, list(piece["frames"]), Smoothing(), piece["skip"])]
    whole = [frame.astype(np.float64) for frame in paint_frames(paint, frames, Smoothing())]
    changes = [np.abs(a - b).mean() for a, b in zip(joined, joined[1:])]
    seams = [changes[start - 1] for start in range(CHUNK_FRAMES, len(frames), CHUNK_FRAMES)]
    print(f"Ray chunks of {CHUNK_FRAMES} frames at {size}px: change at the seams {', '.join(f'{seam:.2f}' for seam in seams)}; "
          f"median change {np.median(changes):.2f} (range {min(changes):.2f}-{max(changes):.2f}); largest difference from "
          f"one pass {max(np.abs(a - b).mean() for a, b in zip(joined, whole)):.3f} grey levels")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=32)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--seam-size", type=int, default=256)
    parser.add_argument("--seam-chunks", type=int, default=4)
    parser.add_argument("--flicker-size", type=int, default=384)
    parser.add_argument("--flicker-frames", type=int, default=24)
    parser.add_argument("--out", type=Path, default=Path("benchmark-output"))
    options = parser.parse_args()
    if options.seam_chunks < 2 or options.flicker_frames < 2:
        parser.error("--seam-chunks and --flicker-frames need at least 2 (a seam, a change between frames)")
    options.out.mkdir(exist_ok=True)
    throughput(options.photos, options.size)
    video_rates(options.frames, options.size)
    chunk_seam(options.seam_size, options.seam_chunks)
    flicker(options.out, options.flicker_size, options.flicker_frames)


if __name__ == "__main__":
    main()
