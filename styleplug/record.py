"""Run records: every output carries the settings that made it, and ``replay`` re-runs them.

The engine puts a JSON record in ``image.info["styleplug"]``; ``save_image`` stores it in a PNG
text chunk, or in a ``.json`` sidecar for JPEG and WebP. On the same machine a replay reproduces
the image exactly.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from PIL import Image

from .errors import ImageError, UsageError
from .image import load_image, pixel_digest


def read_record(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The run record of an output image (PNG text chunk or JSON sidecar)."""
    output = Path(path)
    sidecar = output.with_name(output.name + ".json")
    if sidecar.is_file():
        text = sidecar.read_text()
    else:
        load_image(output, "image to replay")  # one-line errors for missing or broken files
        with Image.open(output) as image:
            text = getattr(image, "text", {}).get("styleplug") or image.info.get("styleplug")
    if not text:
        raise UsageError(f"'{output}' has no styleplug run record; only images written by styleplug can be replayed.")
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise UsageError(f"the run record of '{output}' is damaged ({error}); it cannot be replayed.") from None


def _input(source: dict[str, Any], what: str) -> str:
    if not source.get("path"):
        raise UsageError(f"the {what} of this run was not a file, so it cannot be replayed.")
    image = load_image(source["path"], what)
    if pixel_digest(image) != source["sha256"]:
        raise ImageError(f"{what} '{source['path']}' has changed since the run; replay needs the original.")
    return source["path"]


def _losses(recorded: dict[str, Any]) -> dict[str, Any]:
    """The recorded losses; a record from before the Gram loss had ``normalize`` used its "mean"."""
    if "gram" in recorded and "normalize" not in recorded["gram"]:
        return {**recorded, "gram": {**recorded["gram"], "normalize": "mean"}}
    return recorded


def replay_options(record: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Engine arguments and ``stylize`` arguments that repeat the recorded run."""
    engine = {"network": record["network"], "weights": record["weights"], "precision": record["precision"],
              **record["network_options"]}
    init = record["init"] if isinstance(record["init"], str) else _input(record["init"], "init image")
    run = {
        "content": _input(record["content"], "content image"), "init": init,
        "style": [_input(source, "style image") for source in record["style"]],
        "masks": None if record["masks"] is None else [_input(source, "mask") for source in record["masks"]],
        # Every term is in `losses` with its weight, so the defaults of the built-in weights are off.
        "content_weight": 0.0, "style_weight": 0.0, "tv_weight": 0.0, "losses": _losses(record["losses"]),
        **{key: record[key] for key in ("size", "steps", "optimizer", "learning_rate", "history", "seed", "chunk_size",
                                        "tolerance", "window", "style_blend", "style_scale", "colors", "scales")},
    }
    return engine, run
