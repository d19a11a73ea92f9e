"""Run records: every output carries the job that made it, and ``replay`` re-runs it.

The engine puts a JSON record in ``image.info["styleplug"]``; ``save_image`` stores it in a PNG
text chunk, or in a ``.json`` sidecar for JPEG and WebP. A record holds:

- ``schema``: the version of this layout (``SCHEMA``);
- ``engine``: the engine settings (network and its options, weights, precision, XLA);
- ``job``: the job as it ran, every default made explicit (``Job.to_dict``), with absolute paths
  of its image files;
- ``inputs``: a pixel digest of each input image, so that replay can tell a changed file;
- provenance: versions, where the weights came from and their digest, the plugins that provided
  the losses, the scales, the output size and the steps run.

On the same machine a replay reproduces the image exactly.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from PIL import Image

from ..errors import ImageError, UsageError
from .image import load_image, pixel_digest, record_sidecar
from .job import Job

SCHEMA = 2
IMAGE_FIELDS = ("content", "style", "masks", "init")


def write_record(job: Job, images: dict[str, Any], engine: dict[str, Any], provenance: dict[str, Any]) -> str:
    """The record of ``job`` (as it ran) as JSON. ``images`` holds the loaded image of each image
    field (a list for ``style`` and ``masks``, None where the field is not an image)."""
    paths = {name: _each(getattr(job, name), images[name], _path) for name in IMAGE_FIELDS}
    recorded = dataclasses.replace(job, **{name: value for name, value in paths.items() if value is not None})
    digests = {name: _each(images[name], images[name], lambda image, _: pixel_digest(image)) for name in IMAGE_FIELDS}
    return json.dumps({"schema": SCHEMA, "engine": engine, "job": recorded.to_dict(), "inputs": digests, **provenance},
                      default=str)


def read_record(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The run record of an output image (PNG text chunk or JSON sidecar)."""
    output = Path(path)
    if not record_sidecar(output).is_file():
        load_image(output, "image to replay")  # one-line errors for missing or broken files
    text = stored_record(output)
    if not text:
        raise UsageError(f"'{output}' has no styleplug run record; only images written by styleplug can be replayed.")
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise UsageError(f"the run record of '{output}' is damaged ({error}); it cannot be replayed.") from None


def stored_record(path: str | os.PathLike[str]) -> str | None:
    """The run record (JSON text) kept with an output, in its sidecar or its PNG text chunk; None
    if it has none. Pillow's errors for an unreadable file are left to the caller."""
    sidecar = record_sidecar(path)
    if sidecar.is_file():
        return sidecar.read_text()
    with Image.open(path) as image:
        return getattr(image, "text", {}).get("styleplug") or image.info.get("styleplug")


def replay_job(record: dict[str, Any]) -> tuple[dict[str, Any], Job]:
    """The engine settings and the job that repeat the recorded run, once every input image is
    found unchanged."""
    schema = record.get("schema", 1)
    if "fast" in record:
        raise UsageError("this image was painted by a fast style model, not the optimiser; paint it again with "
                         "`styleplug apply` or `styleplug batch --model`.")
    if schema == 1:
        record = _from_schema_1(record)
    elif schema != SCHEMA:
        raise UsageError(f"this run record has schema {schema}, from a newer styleplug than this one (schema {SCHEMA}); "
                         "upgrade styleplug to replay it.")
    job, digests = dict(record["job"]), record["inputs"]
    for name in IMAGE_FIELDS:
        if digests[name] is not None:
            job[name] = _each(job[name], digests[name], lambda path, digest, name=name: _unchanged(path, digest, name))
    return record["engine"], Job.from_dict(job)


def _each(value: Any, other: Any, function: Any) -> Any:
    """``function`` over a field's value and its counterpart, pairwise for lists; None stays None."""
    if other is None:
        return None
    if isinstance(other, (list, tuple)):
        return [function(item, counterpart) for item, counterpart in zip(value, other)]
    return function(value, other)


def _path(source: Any, image: Image.Image) -> str | None:
    return str(Path(source).resolve()) if isinstance(source, (str, os.PathLike)) else None


def _unchanged(path: str | None, digest: str, what: str) -> str:
    what = {"content": "content image", "style": "style image", "masks": "mask", "init": "init image"}[what]
    if not path:
        raise UsageError(f"the {what} of this run was not a file, so it cannot be replayed.")
    if pixel_digest(load_image(path, what)) != digest:
        raise ImageError(f"{what} '{path}' has changed since the run; replay needs the original.")
    return path


def _from_schema_1(old: dict[str, Any]) -> dict[str, Any]:
    """A record from before jobs (no ``schema``) in today's layout. Its ``losses`` held every term
    with its weight, so the built-in weights are off; its Gram loss had no ``normalize`` and used
    what is now "mean"."""
    losses = dict(old["losses"])
    if "gram" in losses and "normalize" not in losses["gram"]:
        losses["gram"] = {**losses["gram"], "normalize": "mean"}
    sources = {"content": old["content"], "style": old["style"], "masks": old["masks"],
               "init": None if isinstance(old["init"], str) else old["init"]}
    job = {key: old[key] for key in ("size", "steps", "optimizer", "learning_rate", "history", "seed", "chunk_size",
                                     "tolerance", "window", "style_blend", "style_scale", "colors", "scales")}
    job.update({name: _each(source, source, lambda item, _: item["path"]) for name, source in sources.items()},
               content_weight=0.0, style_weight=0.0, tv_weight=0.0, losses=losses)
    if isinstance(old["init"], str):
        job["init"] = old["init"]
    engine = {"network": old["network"], "network_options": old["network_options"], "weights": old["weights"],
              "precision": old["precision"], "jit_compile": False}
    return {"engine": engine, "job": job, "inputs": {name: _each(source, source, lambda item, _: item["sha256"])
                                                      for name, source in sources.items()}}
