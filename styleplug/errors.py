"""Errors that styleplug raises. Each message is one line: what is wrong and how to fix it."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable
from typing import Any

# An option named in a message: ``{size}`` or ``{size=300}`` (see ``StyleplugError.phrase``).
_OPTION = re.compile(r"\{([a-z][a-z0-9_]*)(?:=([^{}\s]+))?\}")

#: How a front end names an option (and a value for it) to its users: ``(option, value or None) -> text``.
OptionNamer = Callable[[str, "str | None"], str]


def python_name(option: str, value: str | None) -> str:
    """Options as a Python caller writes them: ``size=300``."""
    return option if value is None else f"{option}={value}"


class StyleplugError(Exception):
    """Base class. ``exit_code`` is what the CLI exits with: 2 for bad input, 1 for runtime failures.

    A message names the options that fix it as ``{option}`` or ``{option=value}``; ``str(error)``
    writes them as Python arguments (``size=300``) and ``phrase`` as another front end does
    (``--size 300`` on the command line). ``data`` carries the figures behind the message, such as
    the largest size that fits, for hosts that act on them.
    """

    exit_code = 1

    def __init__(self, message: str = "", **data: Any) -> None:
        self.template, self.data = message, data
        super().__init__(self.phrase(python_name))

    def phrase(self, name: OptionNamer) -> str:
        """The message with its options named by ``name``."""
        return _OPTION.sub(lambda match: name(match.group(1), match.group(2)), self.template)


class UsageError(StyleplugError):
    """An option, a name or an input file is wrong; the user can fix it and run again."""

    exit_code = 2


class ImageError(UsageError):
    """An input image cannot be read or is not acceptable (too large, bad values)."""


class UnknownNameError(UsageError):
    """A loss, network, layer or option name that is not registered."""

    def __init__(self, kind: str, name: str, known: Iterable[str], hint: str = "", where: str = "") -> None:
        known = list(known)
        same = [item for item in known if item.lower() == name.lower()]  # "SWD" for "swd"
        close = same or difflib.get_close_matches(name, known, n=1, cutoff=0.5)
        suggestion = f"Did you mean '{close[0]}'? " if close else ""
        listing = ", ".join(known) if len(known) <= 25 else ", ".join(known[:25]) + ", ..."
        hint = hint or f"Choose one of: {listing}."
        super().__init__(f"unknown {kind} '{name}'{where}. {suggestion}{hint}")
        self.kind, self.name, self.suggestion = kind, name, (close[0] if close else None)


class WeightsError(StyleplugError):
    """No usable network weights could be found or loaded."""


class ResourceError(StyleplugError):
    """The job does not fit in the memory of this machine."""


class PluginError(StyleplugError):
    """A plugin failed while loading, registering or running; names the plugin and its package."""

    def __init__(self, plugin: str, package: str | None, version: str | None, stage: str, message: str) -> None:
        where = f"plugin '{plugin}'" + (f" ({package} {version})" if package else "")
        super().__init__(f"{where} failed at {stage}: {message}")
        self.plugin, self.package, self.version, self.stage = plugin, package, version, stage


def one_line(error: BaseException) -> str:
    """The informative sentence of an error message, on one line: its first paragraph (a message
    wrapped over several lines, as Keras writes them, joined up), with terminal escape codes,
    TensorFlow op dumps and Keras's "Exception encountered when calling" wrapper removed."""
    text = re.sub(r"\x1b\[[0-9;]*m|\{\{[^}]*\}\}", "", str(error))
    lines = [line.strip(" •") for line in text.splitlines()]
    wrapper = ("Exception encountered", "Arguments received", "inputs=")
    lines = [line for line in lines if not line.startswith(wrapper)]
    start = next((index for index, line in enumerate(lines) if line), None)
    if start is None:
        return type(error).__name__
    paragraph = []
    for line in lines[start:]:
        if not line:
            break
        paragraph.append(line)
    return " ".join(paragraph)[:300]
