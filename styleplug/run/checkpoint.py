"""Checkpoints of a long run: the image and the optimiser's state, so that running the same job with
the same checkpoint file continues where it stopped (a cancelled run, a closed laptop, a crash).

One ``.npz`` file: the job's digest (a checkpoint of another job is not resumed), the scale and the
steps done, the best image and every tensor of the state, in the order the state flattens to.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UsageError

log = logging.getLogger("styleplug")


@dataclass
class Checkpoint:
    """Where a run stood: scale ``stage`` (an index), ``stage_steps`` done there, ``steps_run`` over
    all scales, the best image and the state's tensors (flattened)."""

    stage: int
    stage_steps: int
    steps_run: int
    best: np.ndarray
    state: list[np.ndarray]


def job_digest(job_description: dict[str, Any], image_digests: list[str]) -> str:
    """What identifies a job for resuming: its fields (but where its checkpoint goes) and its images' pixels."""
    fields = {name: value for name, value in job_description.items() if name != "checkpoint"}
    return hashlib.sha256(json.dumps([fields, image_digests], sort_keys=True, default=str).encode()).hexdigest()


def save_checkpoint(path: str, digest: str, checkpoint: Checkpoint) -> None:
    """Write ``checkpoint`` to ``path`` whole or not at all (through a temporary file beside it)."""
    meta = json.dumps({"digest": digest, "stage": checkpoint.stage, "stage_steps": checkpoint.stage_steps,
                       "steps_run": checkpoint.steps_run, "tensors": len(checkpoint.state)})
    partial = Path(f"{path}.partial")
    try:
        with open(partial, "wb") as file:
            np.savez(file, meta=np.array(meta), best=checkpoint.best,
                     **{f"state_{index}": value for index, value in enumerate(checkpoint.state)})
            # On the disk before it replaces the last one: a power cut must leave one whole checkpoint.
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, path)
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise UsageError(f"cannot write the checkpoint '{path}' ({error.strerror}); give a {{checkpoint}} in a "
                         "writable folder.") from None


def load_checkpoint(path: str, digest: str) -> Checkpoint | None:
    """The checkpoint at ``path`` if it is one of this job; None (with a log line) otherwise."""
    if not os.path.exists(path):
        return None
    try:
        with np.load(path) as stored:
            meta = json.loads(str(stored["meta"]))
            if meta["digest"] != digest:
                log.warning("the checkpoint '%s' is of another job (or other images); starting over, and it will be replaced", path)
                return None
            state = [stored[f"state_{index}"] for index in range(meta["tensors"])]
            return Checkpoint(meta["stage"], meta["stage_steps"], meta["steps_run"], stored["best"], state)
    except (OSError, ValueError, KeyError) as error:
        raise UsageError(f"'{path}' is not a styleplug checkpoint ({error}); give another {{checkpoint}} file, "
                         "or remove this one.") from None
