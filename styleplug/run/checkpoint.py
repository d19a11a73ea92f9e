"""Checkpoints of a long run: the image and the optimiser's state, so that running the same job with
the same checkpoint file continues where it stopped (a cancelled run, a closed laptop, a crash).

One ``.npz`` file: the job's digest (a checkpoint of another job is not resumed), the scale and the
steps done, the best image and every tensor of the state, in the order the state flattens to. The
state is written and read one tensor at a time: at print sizes it is gigabytes (2.3 GB for a 4096 px
image with L-BFGS history 5), and a second whole copy of it would not fit the memory the run was
planned in.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UsageError

log = logging.getLogger("styleplug")


@dataclass
class Checkpoint:
    """Where a run stood: scale ``stage`` (an index), ``stage_steps`` done there, ``steps_run`` over
    all scales, the best image and the state's tensors (flattened), which are produced and taken one
    at a time, once."""

    stage: int
    stage_steps: int
    steps_run: int
    best: np.ndarray
    state: Iterable[np.ndarray]


def job_digest(job_description: dict[str, Any], image_digests: list[str]) -> str:
    """What identifies a job for resuming: its fields (but where its checkpoint goes) and its images' pixels."""
    fields = {name: value for name, value in job_description.items() if name != "checkpoint"}
    return hashlib.sha256(json.dumps([fields, image_digests], sort_keys=True, default=str).encode()).hexdigest()


def save_checkpoint(path: str, digest: str, checkpoint: Checkpoint) -> None:
    """Write ``checkpoint`` to ``path`` whole or not at all (through a temporary file beside it)."""
    partial = Path(f"{path}.partial")
    try:
        with open(partial, "wb") as file:
            # The layout np.savez writes, entry by entry, so that one state tensor at a time is in hand.
            with zipfile.ZipFile(file, "w", allowZip64=True) as archive:
                def put(name: str, array: np.ndarray) -> None:
                    with archive.open(f"{name}.npy", "w", force_zip64=True) as entry:
                        np.lib.format.write_array(entry, np.asanyarray(array), allow_pickle=False)

                put("best", checkpoint.best)
                count = 0
                for count, tensor in enumerate(checkpoint.state, 1):
                    put(f"state_{count - 1}", tensor)
                put("meta", np.array(json.dumps({"digest": digest, "stage": checkpoint.stage, "stage_steps": checkpoint.stage_steps,
                                                 "steps_run": checkpoint.steps_run, "tensors": count})))
            # On the disk before it replaces the last one: a power cut must leave one whole checkpoint.
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, path)
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise UsageError(f"cannot write the checkpoint '{path}' ({error.strerror}); give a {{checkpoint}} in a "
                         "writable folder.") from None


def load_checkpoint(path: str, digest: str) -> Checkpoint | None:
    """The checkpoint at ``path`` if it is one of this job; None (with a log line) otherwise. Its
    state is read from the file as it is taken."""
    if not os.path.exists(path):
        return None
    try:
        with np.load(path) as stored:
            meta = json.loads(str(stored["meta"]))
            if meta["digest"] != digest:
                log.warning("the checkpoint '%s' is of another job, other images, or another backend or version of styleplug; "
                            "starting over, and it will be replaced", path)
                return None
            names = [f"state_{index}" for index in range(meta["tensors"])]
            if not set(names) <= set(stored.files):
                raise KeyError("state")
            return Checkpoint(meta["stage"], meta["stage_steps"], meta["steps_run"], stored["best"], _stored(path, names))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
        raise _unreadable(path, error) from None


def _stored(path: str, names: list[str]) -> Iterator[np.ndarray]:
    """The arrays ``names`` of the checkpoint at ``path``, read one at a time."""
    try:
        with np.load(path) as stored:
            for name in names:
                yield stored[name]
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise _unreadable(path, error) from None


def _unreadable(path: str, error: Exception) -> UsageError:
    # numpy's own messages (about pickles, zip records) would mislead: the file is what is wrong.
    reason = error.strerror if isinstance(error, OSError) and error.strerror else "damaged, cut short, or another kind of file"
    return UsageError(f"'{path}' is not a styleplug checkpoint ({reason}); give another {{checkpoint}} file, "
                      "or remove this one.")
