"""Videos: every frame painted by a fast style model, the audio kept, steadied along the optical flow.

A feed-forward model paints each frame on its own, so small changes between frames (sensor noise,
compression) become large changes of brush strokes: the video flickers. ``FlowSmoother`` warps the
previous frame onto the current one along the optical flow between the input frames (OpenCV's
DIS) and mixes it in twice: into the input before it is painted (a steadier picture, painted as
sharply as ever), and, after Ruder et al. (2016), into the painted frame (steadier strokes, a
little softer). Where the forward and backward flows disagree (occlusions, things entering the
frame) the new frame stands alone. The mixes are recursive, so each frame leans on a short
history, not on the first frame: the video still moves.

Frames are decoded and encoded with PyAV (FFmpeg inside its wheels). The output is H.264 in an MP4
at the input's frame rate and frame count; audio packets are copied unchanged. On Ray the frames go
out in chunks, each led by a few frames of the previous chunk that are painted only to warm up the
smoothing, so that no seam shows where one chunk meets the next.
"""

from __future__ import annotations

import dataclasses
import importlib
import itertools
import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import UsageError
from ..run.image import long_side_size, record_sidecar, to_uint8, write_atomically

VIDEO_INSTALL = "pip install 'styleplug[video]'"
# Frames per Ray task, and frames of the previous chunk painted first to warm up the smoothing.
# The denoising mix keeps 0.8 of the past, so 20 frames leave about 1% of a chunk's cold start.
CHUNK_FRAMES = 48
WARM_UP_FRAMES = 20


def _video_module(name: str) -> Any:
    """PyAV (``av``) or OpenCV (``cv2``): optional, so a missing one is a line saying how to install both."""
    try:
        return importlib.import_module(name)
    except ImportError:
        raise UsageError(f"videos need PyAV and OpenCV, which are not installed; install them with: {VIDEO_INSTALL}") from None


def _av() -> Any:
    return _video_module("av")


def _cv2() -> Any:
    return _video_module("cv2")


@dataclass(frozen=True)
class VideoInfo:
    frames: int
    rate: Fraction
    width: int
    height: int
    audio: bool


def probe(path: str | os.PathLike[str]) -> VideoInfo:
    """Frame count (as the file's header or duration says), frame rate, size and whether there is
    audio; one clear line for a file that is not a video, a still image among them."""
    av = _av()
    try:
        with av.open(str(path)) as source:
            if not source.streams.video:
                raise UsageError(f"'{path}' has no video stream.")
            if source.format.name == "image2" or source.format.name.endswith("_pipe"):
                raise UsageError(f"'{path}' is a still image ({source.format.name.removesuffix('_pipe')}), not a video; "
                                 "give it to styleplug apply or batch as a photo, with its real extension.")
            stream = source.streams.video[0]
            rate = Fraction(stream.average_rate or 25)
            duration = (float(stream.duration * stream.time_base) if stream.duration else
                        source.duration / 1e6 if source.duration else None)
            frames = stream.frames or (round(duration * rate) if duration else sum(1 for _ in source.decode(stream)))
            return VideoInfo(frames, rate, stream.width, stream.height, bool(source.streams.audio))
    except (av.error.FFmpegError, OSError) as error:
        raise UsageError(f"'{path}' is not a video FFmpeg can read ({error}); check the file.") from None


def read_frames(path: str | os.PathLike[str], size: int | None = None) -> Iterator[np.ndarray]:
    """The video's frames as RGB arrays, scaled so the long side is ``size`` (sides kept even, as
    H.264 needs). A file that breaks off part way is one ``UsageError`` line."""
    av = _av()
    with av.open(str(path)) as source:
        stream = source.streams.video[0]
        stream.thread_type = "AUTO"
        width, height = long_side_size((stream.width, stream.height), size) if size else (stream.width, stream.height)
        width, height = width - width % 2, height - height % 2
        try:
            for frame in source.decode(stream):
                yield frame.to_ndarray(width=width, height=height, format="rgb24")
        except (av.error.FFmpegError, OSError) as error:
            raise UsageError(f"'{path}' is damaged part way ({error}); nothing was written. Re-export or re-download it.") from None


@dataclass(frozen=True)
class Smoothing:
    """How a video is steadied along the optical flow (0 turns a stage off).

    ``denoise``: the previous *input* frame's share in each input frame before it is painted: the
    model sees a steady picture where the camera holds still, and paints as sharply as ever.
    ``blend``: the previous *output* frame's share in each painted frame: steadier strokes where
    things move, at the price of softer ones.
    """

    denoise: float = 0.8
    blend: float = 0.15

    def __post_init__(self) -> None:
        for name in ("denoise", "blend"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise UsageError(f"the temporal {name} must be at least 0 and below 1; got {value!r}.")


class FlowSmoother:
    """Paints frames in order, mixing in the previous frame warped along the optical flow (DIS)
    wherever the forward and backward flows agree, as ``Smoothing`` says."""

    def __init__(self, smoothing: Smoothing) -> None:
        self.smoothing = smoothing
        self.flow = _cv2().DISOpticalFlow_create(_cv2().DISOPTICAL_FLOW_PRESET_MEDIUM)
        self.previous: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # grey input, steadied input, output

    def __call__(self, frame: np.ndarray, paint: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        grey = _cv2().cvtColor(frame, _cv2().COLOR_RGB2GRAY)
        # The mixes are kept unrounded: rounding each time would let two runs from different starts
        # (Ray's chunks) stay apart by up to 0.5 / (1 - share) grey levels for ever.
        if self.previous is None:
            steady = frame.astype(np.float32)
            output = paint(frame).astype(np.float32)
        else:
            previous_grey, previous_steady, previous_output = self.previous
            warp, consistent = self._warp(grey, previous_grey)
            steady = _mix(frame, warp(previous_steady), self.smoothing.denoise * consistent)
            output = _mix(paint(to_uint8(steady)), warp(previous_output), self.smoothing.blend * consistent)
        self.previous = (grey, steady, output)
        return to_uint8(output)

    def _warp(self, grey: np.ndarray, previous: np.ndarray) -> tuple[Callable[[np.ndarray], np.ndarray], np.ndarray]:
        """A function moving an image of the previous frame onto this one, and where the flow is
        consistent (0..1, softened at the edges)."""
        cv2 = _cv2()
        backward = self.flow.calc(grey, previous, None)  # where each pixel was in the previous frame
        forward = self.flow.calc(previous, grey, None)
        height, width = grey.shape
        columns, rows = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
        map_x, map_y = columns + backward[..., 0], rows + backward[..., 1]
        forward_back = cv2.remap(forward, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        # Ruder et al.'s test: following the flow there and back must land near the start.
        error = np.sum((backward + forward_back) ** 2, axis=-1)
        limit = 0.01 * (np.sum(backward ** 2, axis=-1) + np.sum(forward_back ** 2, axis=-1)) + 0.5
        inside = (map_x >= 0) & (map_x <= width - 1) & (map_y >= 0) & (map_y <= height - 1)
        consistent = cv2.GaussianBlur(((error <= limit) & inside).astype(np.float32), (5, 5), 0)[..., None]
        # Cubic: each image is warped again every frame, and linear interpolation would blur it more each time.
        return (lambda image: cv2.remap(image, map_x, map_y, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)), consistent


def _mix(current: np.ndarray, previous: np.ndarray, share: np.ndarray) -> np.ndarray:
    return share * previous + (1 - share) * current


def paint_frames(paint: Callable[[Image.Image, str], Image.Image], frames: Iterator[np.ndarray] | list[np.ndarray],
                 smoothing: Smoothing = Smoothing(), skip: int = 0) -> Iterator[np.ndarray]:
    """Paint ``frames`` in order, steadied by ``smoothing``; the first ``skip`` only warm it up."""
    smoother = FlowSmoother(smoothing)

    def painted(frame: np.ndarray) -> np.ndarray:
        return np.asarray(paint(Image.fromarray(frame), "frame"))  # the same size: a model pads and crops back

    for index, frame in enumerate(frames):
        output = smoother(frame, painted)
        if index >= skip:
            yield output


class RayVideoActor:
    """A Ray Data actor painting chunks of frames (with their warm-up frames) with one model."""

    def __init__(self, painter: Any, threads: int, smoothing: Smoothing) -> None:
        from ..core.device import set_threads

        set_threads(threads)
        self.paint = painter.open()
        self.smoothing = smoothing

    def __call__(self, chunk: dict[str, Any]) -> dict[str, Any]:
        frames = list(chunk["frames"])
        return {"index": chunk["index"], "frames": np.stack(list(paint_frames(self.paint, frames, self.smoothing, chunk["skip"])))}


def chunks(frames: list[np.ndarray], length: int = CHUNK_FRAMES, warm_up: int = WARM_UP_FRAMES) -> list[dict[str, Any]]:
    """Overlapping chunks: each holds ``length`` frames, led by up to ``warm_up`` earlier ones."""
    pieces = []
    for index, start in enumerate(range(0, len(frames), length)):
        lead = min(warm_up, start)
        pieces.append({"index": index, "frames": np.stack(frames[start - lead:start + length]), "skip": lead})
    return pieces


def _painted_on_ray(painter: Any, frames: list[np.ndarray], smoothing: Smoothing, address: str | None, actors: int | None,
                    threads: int | None) -> Iterator[np.ndarray]:
    from .batch import actor_pool, pool_size, ray_session

    with ray_session(address, preserve_order=True) as ray:
        threads, actors = pool_size(ray, actors, threads)
        pieces = chunks(frames)
        dataset = ray.data.from_items(pieces, override_num_blocks=len(pieces)).map(
            RayVideoActor, fn_constructor_kwargs={"painter": painter, "threads": threads, "smoothing": smoothing},
            compute=actor_pool(ray, actors), num_cpus=threads)
        for piece in dataset.iter_rows():
            yield from piece["frames"]


def stylize_video(source: str | os.PathLike[str], output: str | os.PathLike[str], painter: Any, *,
                  smoothing: Smoothing = Smoothing(), ray: str | None = None, actors: int | None = None,
                  threads: int | None = None, record: Mapping[str, Any] | None = None,
                  progress: Callable[[int, int], None] | None = None) -> str:
    """Paint every frame of ``source`` with ``painter`` (a ``batch.FastPainter``; its ``size`` scales
    the frames) into an MP4 at ``output``: same frame rate and count, audio copied. Written
    atomically, with a JSON sidecar holding ``record``. Returns the output's size as ``WIDTHxHEIGHT``."""
    target = Path(output)
    if target.suffix.lower() != ".mp4":
        raise UsageError(f"video output '{target}' must end in .mp4.")
    if target.exists() and target.samefile(source):
        raise UsageError(f"output '{target}' is the input video; choose another output path.")
    if not target.parent.is_dir():
        raise UsageError(f"output folder '{target.parent}' does not exist; create it or choose another path.")
    info = probe(source)
    frames = read_frames(source, painter.size)
    painter = dataclasses.replace(painter, size=None)  # the frames are read at its size already
    if ray:
        painted = _painted_on_ray(painter, list(frames), smoothing, ray, actors, threads)
    else:
        from .batch import open_here

        painted = paint_frames(open_here(painter, threads), frames, smoothing)
    temporary = target.with_name(f".{target.stem}.partial.mp4")
    try:
        width, height, count = _encode(painted, source, temporary, info, progress)
        if count < info.frames - 1:  # a frame's rounding of the duration aside
            raise UsageError(f"'{source}' ends after {count} of the {info.frames} frames its header announces (truncated?); "
                             "nothing was written. Re-export or re-download it.")
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    sidecar = {"schema": 2, **(record or {}), "input": str(Path(source).resolve()), "smoothing": asdict(smoothing)}
    write_atomically(record_sidecar(target), lambda stream: stream.write(json.dumps(sidecar).encode()))
    return f"{width}x{height}"


def _encode(frames: Iterator[np.ndarray], source: str | os.PathLike[str], output: Path, info: VideoInfo,
            progress: Callable[[int, int], None] | None) -> tuple[int, int, int]:
    """H.264 frames at the input's rate, with the input's audio packets muxed in time order; the
    frames' width and height, and how many there were."""
    av = _av()
    first = next(frames, None)
    if first is None:
        raise UsageError(f"'{source}' has no frames to paint.")
    height, width = first.shape[:2]
    with av.open(str(source)) as audio_source, av.open(str(output), "w", format="mp4") as sink:
        video = sink.add_stream("libx264", rate=info.rate, options={"crf": "18"})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio_in = audio_source.streams.audio[0] if audio_source.streams.audio else None
        audio_out = sink.add_stream_from_template(audio_in) if audio_in is not None else None
        audio_packets = (packet for packet in audio_source.demux(audio_in) if packet.dts is not None) if audio_in else iter(())
        pending = [next(audio_packets, None)]

        def mux_audio(until: float) -> None:
            """Copy the audio packets that start before ``until`` seconds (interleaved with the video)."""
            while pending[0] is not None and pending[0].pts * pending[0].time_base <= until:
                pending[0].stream = audio_out
                sink.mux(pending[0])
                pending[0] = next(audio_packets, None)

        for index, pixels in enumerate(itertools.chain([first], frames)):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")
            frame.pts, frame.time_base = index, 1 / info.rate
            mux_audio(index / info.rate)
            sink.mux(video.encode(frame))
            if progress:
                progress(index + 1, info.frames)
        sink.mux(video.encode(None))
        mux_audio(float("inf"))
    return width, height, index + 1
