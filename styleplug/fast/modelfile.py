"""A fast style model's file, read and checked without Keras: a wrong file or style name is refused
at once, before the backend loads (seconds on a CPU)."""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UsageError

FORMAT = "styleplug-style-model"
VERSION = 1


def read_model_file(path: str | os.PathLike[str] | bytes, weights: bool = True) -> tuple[dict[str, Any], list[np.ndarray]]:
    """The header and weight arrays of a model file (or its contents, as bytes: how batch workers on
    other machines get it), the arrays only if ``weights``; any file that is not a styleplug style
    model gets one ``UsageError`` line."""
    source = "the style model" if isinstance(path, bytes) else Path(path)
    if isinstance(source, Path) and not source.is_file():
        raise UsageError(f"style model '{source}' does not exist; check the path.")
    try:
        with np.load(io.BytesIO(path) if isinstance(path, bytes) else source, allow_pickle=False) as archive:
            header = json.loads(str(archive["header"]))
            arrays = [archive[f"weight_{index}"] for index in range(len(archive.files) - 1)] if weights else []
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError, EOFError):
        raise UsageError(f"'{source}' is not a styleplug style model (or it is damaged); "
                         "train one with: styleplug train") from None
    if header.get("format") != FORMAT or header.get("version") != VERSION:
        raise UsageError(f"'{source}' is not a styleplug style model of version {VERSION} "
                         f"(format {header.get('format')!r}, version {header.get('version')!r}).")
    return header, arrays


def blend_vector(styles: Sequence[str], style: str | Mapping[str, float] | None) -> np.ndarray:
    """The blend of a model's ``styles`` that ``style`` asks for, as a ``(1, styles)`` row: a name,
    ``{name: weight}`` (normalised), or None for the first style."""
    blend = {styles[0]: 1.0} if style is None else {style: 1.0} if isinstance(style, str) else dict(style)
    for name, weight in blend.items():
        if name not in styles:
            raise UsageError(f"this model has no style '{name}'; it has: {', '.join(styles)}.")
        if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not np.isfinite(weight) or weight < 0:
            raise UsageError(f"the blend weight of style '{name}' must be a number >= 0; got {weight!r}.")
    total = sum(blend.values())
    if not total > 0:
        raise UsageError("the blend weights are all zero; give at least one style a positive weight.")
    return np.array([[blend.get(name, 0.0) / total for name in styles]], np.float32)


def check_model_file(path: str | os.PathLike[str], style: str | Mapping[str, float] | None) -> None:
    """Refuse, in one ``UsageError`` line, a file that is not a style model or a style it lacks."""
    header, _ = read_model_file(path, weights=False)
    blend_vector(header["styles"], style)
