"""Batches: many photos (and videos) painted into a folder, in this process or on Ray Data.

A batch never loses or repeats work. Each output is written atomically and carries a run record
with a *batch key*: a digest of the input file's bytes and of everything that decides the painting
(the model file's digest and style, or the optimiser's job and engine). A rerun skips every output
whose key matches, so an interrupted batch resumes where it stopped. An input that cannot be
painted (unreadable, too large, too small) is reported and skipped; the rest go on.

The same worker code runs in both places. In this process, one ``Painter`` is opened and fed the
inputs in turn. On Ray, ``map_batches`` runs a pool of actors, each holding one opened painter
(one loaded model or engine) and pinned to its share of the CPU threads. The driver reads each
input file and sends its bytes, and writes the PNG bytes that come back, so worker machines need
no shared disk (optimiser style images travel inside the painter, once per actor).
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import io
import json
import os
import resource
import threading
import time
import warnings
from contextlib import contextmanager
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from ..errors import OptionNamer as Namer
from ..errors import StyleplugError, UsageError, one_line
from ..run.image import load_image, png_record, write_atomically
from ..run.record import stored_record
from .video import Smoothing

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".gif")
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")
RAY_INSTALL = "pip install 'styleplug[ray]'"


class Painter(Protocol):
    """What a batch paints with; picklable, so that Ray can send it to each actor."""

    # Inputs handed to an actor at a time: enough to keep it busy, few enough to spread the work.
    batch_size: int

    def fingerprint(self) -> dict[str, Any]:
        """Everything that decides the painting, as JSON; part of each output's batch key."""

    def open(self) -> Callable[[Image.Image, str], Image.Image]:
        """Load the model or engine once; the function paints one photo (named by its path) and
        returns the image with its run record in ``info["styleplug"]``."""


@dataclasses.dataclass(frozen=True)
class FastPainter:
    """Paint with a fast style model. The model file travels as bytes (about 1.4 MB)."""

    model: bytes
    model_path: str
    style: str | Mapping[str, float] | None = None
    strength: float = 1.0
    size: int | None = None
    precision: str = "auto"
    max_pixels: int | None = None
    tile_size: int | None = None  # None: tiles only for a photo that would not fit in memory
    batch_size: int = 4

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], **options: Any) -> FastPainter:
        """Read the model file, check it and the style now (one clear line before any work)."""
        from ..fast.modelfile import check_model_file

        check_model_file(path, options.get("style"))
        return cls(Path(path).read_bytes(), str(Path(path).resolve()), **options)

    def fingerprint(self) -> dict[str, Any]:
        # Without the tile size: tiles paint the same picture (up to rounding), so a batch resumed
        # with other tiles skips what is done.
        return {"model": hashlib.sha256(self.model).hexdigest(), "style": self.style, "strength": self.strength,
                "size": self.size, "precision": self.precision, "max_pixels": self.max_pixels}

    def open(self) -> Callable[[Image.Image, str], Image.Image]:
        from ..fast.model import StyleModel

        model = StyleModel.load(self.model, self.precision)
        record = {"schema": 2, "fast": {**self.fingerprint(), "model_path": self.model_path, "styles": model.styles}}

        def paint(photo: Image.Image, path: str) -> Image.Image:
            image = model.stylize(photo, style=self.style, strength=self.strength, size=self.size, max_pixels=self.max_pixels,
                                  tile_size=self.tile_size)
            image.info["styleplug"] = json.dumps({**record, "input": path})
            return image
        return paint


@dataclasses.dataclass(frozen=True)
class OptimiserPainter:
    """Paint with the optimiser: ``job`` gives every option but the content (its own style
    images loaded, so they travel with it); ``engine`` is ``Engine.settings`` plus threads."""

    job: Any  # a Job whose content is a placeholder, replaced per photo
    engine: dict[str, Any]
    style_paths: tuple[str, ...]
    batch_size: int = 1  # a photo takes minutes

    @classmethod
    def from_job(cls, job: Any, engine: Mapping[str, Any]) -> OptimiserPainter:
        from ..run.job import Job

        assert isinstance(job, Job)
        styles = tuple(np.asarray(load_image(path, "style image")) for path in job.style)
        return cls(dataclasses.replace(job, style=styles), dict(engine), tuple(str(Path(path).resolve()) for path in job.style))

    def fingerprint(self) -> dict[str, Any]:
        job = self.job.to_dict()
        job.pop("content")
        job["style"] = [hashlib.sha256(np.ascontiguousarray(style).tobytes()).hexdigest() for style in self.job.style]
        return {"job": job, "engine": self.engine}

    def open(self) -> Callable[[Image.Image, str], Image.Image]:
        from ..core.engine import Engine

        engine = Engine.from_settings({"jit_compile": False, "network_options": {}, **self.engine})

        def paint(photo: Image.Image, path: str) -> Image.Image:
            image = engine.run(dataclasses.replace(self.job, content=photo))
            # The record names the files, as ``styleplug run`` would, so that ``replay`` works here.
            record = json.loads(image.info["styleplug"])
            record["job"].update(content=path, style=list(self.style_paths))
            image.info["styleplug"] = json.dumps(record)
            return image
        return paint


@dataclasses.dataclass
class BatchReport:
    """What a batch did: one entry per input in ``done``, ``skipped`` (its output already matched)
    or ``failed`` (with the reason); ``interrupted`` when it stopped early."""

    done: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    skipped: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    failed: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False
    where: str = "in-process"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def summary(self) -> str:
        line = f"{len(self.done)} done, {len(self.skipped)} skipped (already done), {len(self.failed)} failed"
        return line + (" before it was interrupted; run the same command again to finish" if self.interrupted else "")


# -- inputs -----------------------------------------------------------------------------------------

def collect_inputs(patterns: Iterable[str]) -> list[Path]:
    """Files, folders (their images and videos, not recursive) and glob patterns, in order, once each."""
    found: list[Path] = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            matches = sorted(item for item in path.iterdir() if item.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES)
            if not matches:
                raise UsageError(f"folder '{path}' holds no images or videos ({', '.join(IMAGE_SUFFIXES)}, ...).")
        elif path.exists() or not glob.has_magic(pattern):
            matches = [path]  # a missing file is reported with the others, not fatal
        else:
            matches = sorted(Path(item) for item in glob.glob(pattern) if Path(item).is_file())
            if not matches:
                raise UsageError(f"no file matches '{pattern}'; check the pattern (quote it so the shell leaves it to styleplug).")
        found.extend(matches)
    if not found:
        raise UsageError("no inputs; give image files, folders or glob patterns.")
    return list(dict.fromkeys(found))  # once each, in order


def output_paths(inputs: Sequence[Path], folder: Path) -> list[Path]:
    """``folder/NAME.png`` for each photo and ``folder/NAME.mp4`` for each video; two inputs with one
    name would overwrite each other, so that is refused."""
    outputs = [folder / (item.stem + (".mp4" if is_video(item) else ".png")) for item in inputs]
    sources: dict[Path, list[Path]] = {}
    for item, output in zip(inputs, outputs):
        sources.setdefault(output, []).append(item)
    clashes = sorted(str(item) for items in sources.values() if len(items) > 1 for item in items)
    if clashes:
        raise UsageError(f"inputs {', '.join(clashes)} have the same name, so their outputs would collide; rename one.")
    for output in outputs:
        if output.exists() and any(item.exists() and output.samefile(item) for item in inputs):
            raise UsageError(f"output '{output}' is one of the inputs; choose another --output folder.")
    return outputs


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def file_digest(path: Path) -> str:
    """SHA-256 of a file, read in pieces (a video may not fit in memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for piece in iter(lambda: file.read(1 << 20), b""):
            digest.update(piece)
    return digest.hexdigest()


def batch_key(painter: str, digest: str) -> str:
    """The digest that says an output was made from an input (its file's digest) by this painter
    (its fingerprint as JSON)."""
    return hashlib.sha256(f"{painter}\n{digest}".encode()).hexdigest()


def recorded_key(output: Path) -> str | None:
    """The batch key in an existing output's run record (PNG text chunk, or a video's sidecar)."""
    if not output.is_file():
        return None
    try:
        return json.loads(stored_record(output) or "{}").get("batch")
    except (OSError, ValueError, AttributeError):
        return None


# -- painting -------------------------------------------------------------------------------------

def with_bytes(item: dict[str, Any]) -> dict[str, Any]:
    """The input with its file's bytes, which the worker decodes (it may have no access to the file)."""
    try:
        return {**item, "data": Path(item["input"]).read_bytes()}
    except OSError:
        return {**item, "data": b""}  # reported by the worker as an empty file


def paint_one(paint: Callable[[Image.Image, str], Image.Image], item: Mapping[str, Any], namer: Namer | None) -> dict[str, Any]:
    """Paint one input (its bytes) into PNG bytes carrying the run record and batch key."""
    def work() -> dict[str, Any]:
        photo = load_image(bytes(item["data"]), f"'{item['input']}'")
        image = paint(photo, item["input"])
        record = {**json.loads(image.info.get("styleplug", "{}")), "batch": item["key"]}
        stream = io.BytesIO()
        image.save(stream, format="PNG", pnginfo=png_record(json.dumps(record)))
        return {"png": stream.getvalue(), "size": f"{image.width}x{image.height}"}

    return _attempt(work, item, namer)


def _attempt(work: Callable[[], dict[str, Any]], item: Mapping[str, Any], namer: Namer | None) -> dict[str, Any]:
    """The result of painting one input, with its time and the worker's peak memory; a failure
    becomes a one-line reason instead (options in it named by ``namer``, as in
    ``StyleplugError.phrase``), so that the batch goes on."""
    started = time.perf_counter()
    try:
        result = {**work(), "error": ""}
    except StyleplugError as error:
        result = {"error": error.phrase(namer) if namer else str(error)}
    except Exception as error:  # the worker survives anything one input does to it
        result = {"error": f"unexpected {type(error).__name__}: {one_line(error)}"}
    # Peak memory of the process that painted (an actor's, on Ray): what a worker needs.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"input": item["input"], "output": item["output"], "seconds": time.perf_counter() - started,
            "worker": item.get("worker", ""), "memory": peak, "png": b"", "size": "", **result}


class RayPainterActor:
    """A Ray Data actor: opens the painter once, with TensorFlow pinned to this actor's CPUs."""

    def __init__(self, painter: Painter, threads: int, namer: Namer | None) -> None:
        import ray

        from ..core.device import set_threads

        set_threads(threads)
        self.paint = painter.open()
        self.worker = ray.get_runtime_context().get_node_id()[:8]
        self.namer = namer

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        rows = [dict(zip(batch, values), worker=self.worker) for values in zip(*batch.values())]
        results = [paint_one(self.paint, row, self.namer) for row in rows]
        return {key: [result[key] for result in results] for key in results[0]}


def open_here(painter: Painter, threads: int | None) -> Callable[[Image.Image, str], Image.Image]:
    """Open ``painter`` in this process, TensorFlow limited to ``threads`` CPU threads if given."""
    if threads is not None:
        from ..core.device import set_threads

        set_threads(threads)
    return painter.open()


def _in_process(painter: Painter, items: Iterable[dict[str, Any]], threads: int | None,
                namer: Namer | None) -> Iterator[dict[str, Any]]:
    paint = open_here(painter, threads)
    for item in items:  # read one at a time: a batch may be larger than memory
        yield paint_one(paint, with_bytes(item), namer)


def import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise UsageError(f"--ray needs Ray, which is not installed; install it with: {RAY_INSTALL}") from None
    return ray


@contextmanager
def ray_session(address: str | None, preserve_order: bool = False) -> Iterator[Any]:
    """Ray, connected to the cluster at ``address`` (None or "local": a local one on this machine's
    cores), with Ray Data set up for a batch (and keeping the order of its rows with
    ``preserve_order``) while the block runs. Everything it sets is the host's again afterwards:
    Ray Data's settings, its logger's level, the warning filters; a cluster it started is shut down."""
    import logging

    ray = import_ray()
    context, data_log = ray.data.DataContext.get_current(), logging.getLogger("ray.data")
    saved = (context.enable_progress_bars, context.print_on_execution_start, context.wait_for_min_actors_s,
             context.execution_options.preserve_order, data_log.level)
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    # Start every actor before the first input goes out, so that the work spreads over all of them.
    context.wait_for_min_actors_s = 600
    context.execution_options.preserve_order = preserve_order
    data_log.setLevel(logging.ERROR)
    started = False
    try:
        with warnings.catch_warnings():
            # Ray Data's advice on concurrency is for pipelines of its own; a batch sizes its pool itself.
            warnings.filterwarnings("ignore", category=UserWarning, module=r"ray\.data\..*")
            if not ray.is_initialized():
                try:
                    ray.init(address=None if address in (None, "local") else address, include_dashboard=False,
                             log_to_driver=False, logging_level=logging.ERROR, configure_logging=True)
                except (ConnectionError, ValueError, RuntimeError) as error:
                    raise UsageError(f"cannot reach a Ray cluster at '{address}' ({one_line(error)}); check the address, "
                                     "or leave it out for a local cluster.") from None
                started = True
            yield ray
    finally:
        if started:
            ray.shutdown()
        (context.enable_progress_bars, context.print_on_execution_start, context.wait_for_min_actors_s,
         context.execution_options.preserve_order, level) = saved
        data_log.setLevel(level)


def pool_size(ray: Any, actors: int | None, threads: int | None) -> tuple[int, int]:
    """Threads per actor and actors: by default the cluster's CPUs shared evenly; never more than it has."""
    cpus = int(ray.cluster_resources().get("CPU", 1))
    threads = threads or max(1, cpus // (actors or cpus))
    actors = actors or max(1, cpus // threads)
    if actors * threads > cpus:
        raise UsageError(f"{actors} actors of {threads} threads need {actors * threads} CPUs, but the Ray cluster has "
                         f"{cpus}; ask for fewer {{actors}} or {{threads}}.")
    return threads, actors


def actor_pool(ray: Any, actors: int) -> Any:
    """A fixed pool of ``actors``, each given one task at a time: an actor that queued several would
    hold work another could be doing (a painting takes long, the queue saves little)."""
    return ray.data.ActorPoolStrategy(size=actors, max_tasks_in_flight_per_actor=1)


def _on_ray(painter: Painter, items: list[dict[str, Any]], address: str | None, actors: int | None,
            threads: int | None, namer: Namer | None) -> Iterator[dict[str, Any]]:
    with ray_session(address) as ray:
        threads, actors = pool_size(ray, actors, threads)
        # One block per input, and batches no larger than an even share, so that every actor gets work.
        size = max(1, min(painter.batch_size, -(-len(items) // actors)))
        # The inputs go into Ray's object store up front (it spills to disk when full).
        dataset = ray.data.from_items([with_bytes(item) for item in items], override_num_blocks=len(items))
        painted = dataset.map_batches(RayPainterActor, fn_constructor_kwargs={"painter": painter, "threads": threads, "namer": namer},
                                      batch_size=size, compute=actor_pool(ray, actors), num_cpus=threads)
        yield from painted.iter_rows()


def run_batch(inputs: Sequence[str | os.PathLike[str]], folder: str | os.PathLike[str], painter: Painter, *,
              ray: str | None = None, actors: int | None = None, threads: int | None = None,
              progress: Callable[[BatchReport, int], None] | None = None,
              cancel: threading.Event | None = None, smoothing: Smoothing = Smoothing(),
              namer: Namer | None = None) -> BatchReport:
    """Paint each of ``inputs`` (see ``collect_inputs``) into ``folder``; ``ray`` runs it on Ray Data
    ("local" for a local cluster, or a cluster's address) with ``actors`` actors of ``threads`` CPU
    threads each. ``progress(report, total)`` is called after each input; setting ``cancel`` stops
    after the current one (as Ctrl-C does). Videos need a ``FastPainter``; ``smoothing`` steadies
    them. ``namer`` phrases the options named in failures, as a front end spells them (see
    ``StyleplugError.phrase``)."""
    started = time.perf_counter()
    paths = collect_inputs(str(item) for item in inputs)
    target = Path(folder)
    if target.exists() and not target.is_dir():
        raise UsageError(f"'{target}' is a file; --output names a folder for a batch.")
    outputs = output_paths(paths, target)
    created = not target.exists()
    target.mkdir(parents=True, exist_ok=True)
    report = BatchReport(where=f"ray ({ray})" if ray else "in-process")
    fingerprint = json.dumps(painter.fingerprint(), sort_keys=True, default=str)
    photos, videos = [], []
    for path, output in zip(paths, outputs):
        entry = {"input": str(path), "output": str(output)}
        try:
            # A video's key also holds how it is steadied.
            key = batch_key(fingerprint + (json.dumps(dataclasses.asdict(smoothing)) if is_video(path) else ""),
                            file_digest(path))
        except OSError as error:
            report.failed.append({**entry, "error": f"cannot read '{path}' ({error.strerror or error})."})
            continue
        if recorded_key(output) == key:
            report.skipped.append(entry)
        else:
            (videos if is_video(path) else photos).append({**entry, "key": key})
    total = len(photos) + len(videos)

    def finish(result: Mapping[str, Any]) -> None:
        entry = {key: result[key] for key in ("input", "output", "seconds", "worker", "memory")}
        if result["error"]:
            report.failed.append({**entry, "error": result["error"]})
        else:
            _write_bytes(Path(result["output"]), result["png"])
            report.done.append({**entry, "size": result["size"]})
        if progress:
            progress(report, total)

    try:
        if photos:
            results = (_on_ray(painter, photos, ray, actors, threads, namer) if ray
                       else _in_process(painter, photos, threads, namer))
            for result in results:
                finish(result)
                if cancel is not None and cancel.is_set():
                    report.interrupted = True
                    break
        for item in videos:
            if cancel is not None and cancel.is_set():
                report.interrupted = True
                break
            finish(_paint_video(painter, item, ray, actors, threads, smoothing, namer))
    except KeyboardInterrupt:
        report.interrupted = True
    except BaseException:  # the batch could not run (a Ray cluster too small, ...): leave no empty folder behind
        if created and not any(target.iterdir()):
            target.rmdir()
        raise
    report.seconds = time.perf_counter() - started
    return report


def _paint_video(painter: Painter, item: Mapping[str, Any], ray: str | None, actors: int | None, threads: int | None,
                 smoothing: Smoothing, namer: Namer | None) -> dict[str, Any]:
    """Paint one video into its output file (a ``png`` of b"": the file is already written)."""
    from .video import stylize_video

    def work() -> dict[str, Any]:
        if not isinstance(painter, FastPainter):
            raise UsageError("a video needs a fast style model (--model MODEL); the optimiser takes minutes per frame.")
        return {"size": stylize_video(item["input"], item["output"], painter, smoothing=smoothing, ray=ray, actors=actors,
                                      threads=threads, record={"fast": painter.fingerprint(), "batch": item["key"]})}

    return _attempt(work, item, namer)


def _write_bytes(output: Path, data: bytes) -> None:
    if data:  # a video has written its own file
        write_atomically(output, lambda stream: stream.write(data))
