"""Helpers shared by the test modules (import them from here, not from conftest)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "styleplug" / "examples"  # the bundled pairs; tests read nothing outside the repository
TEST_PLUGINS = Path(__file__).parent / "plugin_packages" / "styleplug-testplugins"


def gradient_image(width: int, height: int, seed: int = 0) -> Image.Image:
    """A small colourful test picture: smooth gradients plus a little noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    pixels = np.stack([x, y, 1 - x * y], axis=-1) * 200 + rng.uniform(0, 55, (height, width, 3))
    return Image.fromarray(pixels.astype(np.uint8), "RGB")


def stripes_image(width: int, height: int) -> Image.Image:
    """A high-contrast 'painting': diagonal stripes in two colours."""
    y, x = np.mgrid[0:height, 0:width]
    mask = ((x + y) // 4) % 2 == 0
    pixels = np.where(mask[..., None], [230, 40, 30], [20, 60, 200]).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


def pan_frames(photo: Image.Image, count: int, size: tuple[int, int], step: int = 3, noise: float = 0.0,
               seed: int = 0) -> list[np.ndarray]:
    """Frames of a camera over ``photo``: panning ``step`` px per frame (0: a static camera), with
    sensor noise of ``noise`` grey levels (what makes a fast model's output flicker)."""
    rng = np.random.default_rng(seed)
    pixels = np.asarray(photo.convert("RGB"), np.float32)
    width, height = size
    frames = []
    for index in range(count):
        crop = pixels[:height, index * step:index * step + width]
        frames.append(np.clip(crop + rng.normal(0, noise, crop.shape), 0, 255).round().astype(np.uint8))
    return frames


def write_clip(path: Path, frames: list[np.ndarray], rate: int = 12, audio: bool = True) -> None:
    """An MP4 of ``frames`` at ``rate`` frames per second, with a 440 Hz AAC tone as long as the video."""
    import av

    with av.open(str(path), "w") as sink:
        video = sink.add_stream("libx264", rate=rate, options={"crf": "20"})
        video.height, video.width = frames[0].shape[:2]
        video.pix_fmt = "yuv420p"
        sound = sink.add_stream("aac", rate=44100) if audio else None
        samples = 0
        for index, pixels in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = index
            sink.mux(video.encode(frame))
            while sound is not None and samples < (index + 1) * 44100 // rate:
                time = (samples + np.arange(1024)) / 44100
                chunk = av.AudioFrame.from_ndarray((0.2 * np.sin(2 * np.pi * 440 * time)).astype(np.float32)[None],
                                                   format="fltp", layout="mono")
                chunk.sample_rate, chunk.pts = 44100, samples
                sink.mux(sound.encode(chunk))
                samples += 1024
        sink.mux(video.encode(None))
        if sound is not None:
            sink.mux(sound.encode(None))
