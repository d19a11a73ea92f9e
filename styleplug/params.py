"""``Param``: a plugin's declaration of one parameter, as plain data.

One declaration drives the Python keyword arguments, the CLI's ``-o loss.param value`` options, the
validation messages and the generated demo controls. Nothing here imports TensorFlow or a UI toolkit.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import UnknownNameError, UsageError

TYPES = (float, int, bool, str)
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class Param:
    """One declared parameter of a loss or a network.

    Example::

        Param("exponent", float, 2.0, help="power of the pixel differences", min=1.0, max=3.0)
    """

    name: str
    type: type
    default: Any
    help: str = ""
    min: float | None = None
    max: float | None = None
    choices: tuple[Any, ...] | None = None

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise TypeError(f"Param '{self.name}' has type {self.type!r}; use one of the types float, int, bool or str "
                            "(the type itself, not its name)")

    def coerce(self, value: Any, owner: str) -> Any:
        """Return ``value`` converted to this parameter's type, or raise a one-line ``UsageError``.

        ``owner`` names where the parameter belongs (e.g. ``"loss 'tv'"``) for the message.
        Strings are parsed, so CLI text and Python values go through the same checks.
        """
        where = f"option '{self.name}' of {owner}"
        value = self._convert(value, where)
        if self.choices is not None and value not in self.choices:
            options = ", ".join(repr(c) for c in self.choices)
            raise UsageError(f"invalid value {value!r} for {where}; expected one of {options}.")
        if isinstance(value, float) and not math.isfinite(value):
            raise UsageError(f"invalid value {value!r} for {where}; expected a finite number.")
        if self.min is not None and value < self.min or self.max is not None and value > self.max:
            raise UsageError(f"value {value!r} for {where} is out of range; expected {self.range_text()}.")
        return value

    def _convert(self, value: Any, where: str) -> Any:
        expected = self.type.__name__
        if isinstance(value, str) and self.type is not str:
            text = value.strip().lower()
            try:
                if self.type is bool:
                    if text in _TRUE | _FALSE:
                        return text in _TRUE
                    raise ValueError
                return self.type(text)
            except ValueError:
                raise UsageError(f"invalid value {value!r} for {where}; expected {expected}.") from None
        if isinstance(value, bool) or isinstance(value, np.bool_):
            if self.type is bool:
                return bool(value)
        elif self.type is float and isinstance(value, numbers.Real):
            return float(value)
        elif self.type is int and isinstance(value, numbers.Integral):
            return int(value)  # numpy integers too
        if isinstance(value, self.type) and not (self.type is int and isinstance(value, bool)):
            return value
        raise UsageError(f"invalid value {value!r} for {where}; expected {expected}.")

    def range_text(self) -> str:
        """Bounds as text, e.g. ``"1.0 <= x <= 3.0"``; empty when unbounded."""
        if self.min is not None and self.max is not None:
            return f"{self.min} <= x <= {self.max}"
        if self.min is not None:
            return f"x >= {self.min}"
        if self.max is not None:
            return f"x <= {self.max}"
        return ""

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description for listings and UIs."""
        return {
            "name": self.name,
            "type": self.type.__name__,
            "default": self.default,
            "range": self.range_text() or None,
            "choices": list(self.choices) if self.choices is not None else None,
            "help": self.help,
        }


def coerce_options(params: Sequence[Param], options: Mapping[str, Any], owner: str) -> dict[str, Any]:
    """Validate ``options`` against ``params``; return every declared parameter with its value.

    Unknown option names raise ``UnknownNameError`` with the nearest declared name.
    """
    declared = {p.name: p for p in params}
    for name in options:
        if name not in declared:
            accepted = ", ".join(declared) or "no options"
            raise UnknownNameError("option", name, declared, hint=f"{owner} accepts: {accepted}.", where=f" of {owner}")
    return {p.name: p.coerce(options.get(p.name, p.default), owner) for p in params}
