"""The web demo's form as data: which ``Job`` field each control sets, the controls' labels and
defaults (from the ``Job`` fields and the plugins), and the pure function from control values to
an engine and a job. No Gradio here, so all of it is tested without a browser.

Every ``Job`` field is decided here in one of three ways: a visitor sets it (``VISITOR_FIELDS``),
the server's ``Limits`` set it (``SERVER_FIELDS``), or it keeps the job's default (``DEFAULT_FIELDS``).
A new ``Job`` field fails the tests until it is placed in one of them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..run.colors import COLOR_MODES
from ..core.device import PRECISIONS
from ..errors import StyleplugError, UsageError
from ..run.job import BUILT_IN_TERMS, OPTIMIZERS, Job, job_fields
from ..host.plugins import PluginHost
from .webjobs import Limits

# The images a visitor may upload, in the order of the /run API.
IMAGE_CONTROLS = ("content", "style", "style2", "mask1", "mask2")
# Job field -> the controls (/run API parameters) that set it.
VISITOR_FIELDS: dict[str, tuple[str, ...]] = {
    "content": ("content",), "style": ("style", "style2"), "style_blend": ("style_share",), "masks": ("mask1", "mask2"),
    "style_scale": ("style_scale",), "colors": ("colors",), "scales": ("coarse_to_fine",), "size": ("size",),
    "steps": ("steps",), "optimizer": ("optimizer",), "content_weight": ("content_weight",),
    "style_weight": ("style_weight_log10",), "tv_weight": ("tv_weight_log10",), "losses": ("extra_losses",), "seed": ("seed",),
    "init": ("refine_style",),  # "Refine" on the Instant tab: start from the server's style model's painting
}
# Set from the server's limits, whatever a client sends: the operator decides them.
SERVER_FIELDS = ("max_pixels", "fit_memory", "chunk_seconds")
# Kept at the job's defaults: expert settings the command line and the API offer.
DEFAULT_FIELDS = ("learning_rate", "history", "content_layers", "style_layers", "chunk_size", "tolerance", "window",
                  "max_memory", "tiling", "tile_size", "checkpoint")  # checkpoint: no client names a server file
# Engine settings: a job runs on the engine they name, with the network's options from controls
# named "{network}_{option}", generated from the network's declared parameters.
ENGINE_CONTROLS = ("network", "weights", "precision")

LABELS = {
    "content": "Content photo", "style": "Style painting", "style2": "Second style (optional)",
    "mask1": "Mask of the first style (optional)", "mask2": "Mask of the second style", "style_share": "Share of the first style",
    "style_scale": "Style scale", "colors": "Colours", "coarse_to_fine": "Coarse to fine", "size": "Output size (long side, px)",
    "steps": "Steps", "optimizer": "Optimiser", "content_weight": "Content weight", "style_weight_log10": "Style weight (log10)",
    "tv_weight_log10": "Smoothness (TV weight, log10)", "seed": "Seed", "extra_losses": "Extra losses (from plugins)",
    "network": "Network", "weights": "Weights", "precision": "Precision", "refine_style": "Start from the instant painting in",
}
# The range of every numeric control, enforced on the server whatever a client sends (size and
# steps come from the server's Limits). The page's sliders and number fields use the same bounds.
BOUNDS: dict[str, tuple[float, float]] = {
    "style_share": (0, 1), "style_scale": (0.25, 2), "content_weight": (0, 1e4), "style_weight_log10": (5, 9),
    "tv_weight_log10": (0, 7), "seed": (0, 2**31 - 1), "loss_weight": (0, 1e12),
}
# The first web request a visitor makes should answer in seconds, not minutes, so the demo starts
# smaller than the job's defaults (512 px, 300 steps), within the server's limits.
DEMO_SIZE, DEMO_STEPS = 256, 150


def control_name(owner: str, option: str) -> str:
    """The /run API name of a loss's or a network's option: ``{owner}__{option}``, with '-' as '_'
    (a plugin's name may have a '-', an API parameter may not). No built-in control has a double
    underscore and option names cannot contain one, so these names never collide."""
    return f"{owner}__{option}".replace("-", "_")


def offered_weights(network: Any, limits: Limits) -> tuple[str, ...]:
    """The weight sources a visitor may pick for ``network``: those present on this server, or
    every named source when the operator allows downloads."""
    return tuple(network.weight_sources) if limits.allow_downloads else network.offline_weight_sources()


def bounded_number(value: Any, label: str, bounds: tuple[float, float] | None, integer: bool = False) -> Any:
    """``value`` (a number or its text) as a number within ``bounds``, or a one-line error naming the control."""
    try:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError
        number = float(value)
        if integer and number != int(number):
            raise ValueError
    except (ValueError, OverflowError):  # text, infinity as a whole number, a list...
        raise UsageError(f"'{label}' must be a {'whole ' if integer else ''}number; got {str(value)[:40]!r}.") from None
    if bounds is not None and not bounds[0] <= number <= bounds[1]:  # NaN fails this too
        raise UsageError(f"'{label}' must be between {bounds[0]:g} and {bounds[1]:g}; got {str(value)[:40]}.")
    return int(number) if integer else number


def _field(values: Mapping[str, Any], name: str, integer: bool = False) -> Any:
    """The numeric control ``name``, within its ``BOUNDS`` (size and steps: within the server's ``Limits``)."""
    return bounded_number(values.get(name), LABELS[name], BOUNDS.get(name), integer)


def _choice(values: Mapping[str, Any], name: str, choices: Sequence[Any]) -> Any:
    value = values.get(name)
    if not isinstance(value, (str, bool)) or value not in choices:
        raise UsageError(f"'{LABELS.get(name, name)}' must be one of {', '.join(map(str, choices))}; got {str(value)[:40]!r}.")
    return value


def _option(values: Mapping[str, Any], owner: str, param: Any, what: str) -> Any:
    """A plugin's declared option from its control, checked against its declaration (type, bounds, choices)."""
    value = values[control_name(owner, param.name)]
    if not isinstance(value, (str, int, float, bool)) or (isinstance(value, str) and len(value) > 200):
        raise UsageError(f"invalid value for option '{param.name}' of {what}; expected {param.type.__name__}.")
    return param.coerce(value, what)


def field_help(name: str) -> str:
    """The help text of a ``Job`` field, as the page shows it under its control."""
    return next(item.metadata["help"] for item in job_fields() if item.name == name)


def _job_default(name: str) -> Any:
    return next(item.default for item in job_fields() if item.name == name)


def loss_weight(host: PluginHost, network: str, loss: str) -> float:
    """The weight a job gives ``loss`` on ``network`` when it names none."""
    return host.network(network).cls.loss_weights.get(loss, host.loss(loss).cls.default_weight)


def weight_defaults(host: PluginHost, network: str) -> dict[str, float]:
    """The weight controls' values for ``network``'s defaults (the network may declare its own)."""
    return {"content_weight": loss_weight(host, network, "content"),
            "style_weight_log10": math.log10(loss_weight(host, network, "gram")),
            "tv_weight_log10": math.log10(loss_weight(host, network, "tv"))}


def defaults(host: PluginHost, limits: Limits) -> dict[str, Any]:
    """Every control's starting value, from the ``Job`` defaults and the default network."""
    return {
        "style_share": 0.5, "style_scale": _job_default("style_scale"), "colors": _job_default("colors"),
        "coarse_to_fine": _job_default("scales") == "auto", "size": min(DEMO_SIZE, limits.max_size or DEMO_SIZE),
        "steps": min(DEMO_STEPS, limits.max_steps), "optimizer": _job_default("optimizer"), "seed": _job_default("seed"),
        "extra_losses": [], "refine_style": "", "network": "vgg19",
        "weights": offered_weights(host.network("vgg19").cls, limits)[0], "precision": "auto", **weight_defaults(host, "vgg19"),
    }


def demo_name(option: str, value: str | None) -> str:
    """Options in error messages as the page names them: the control's label, or the server
    operator's setting for what a visitor cannot change."""
    if option in SERVER_FIELDS:
        return f"the server's --{option.replace('_', '-')}"
    controls = VISITOR_FIELDS.get(option, (option,))
    label = f"'{LABELS[controls[0]]}'" if controls[0] in LABELS else option
    return label if value is None else f"{label} {value}"


def job_from_form(values: Mapping[str, Any], files: Mapping[str, str | None], host: PluginHost, limits: Limits,
                  style_model: tuple[str, Sequence[str]] | None = None) -> tuple[tuple[Any, ...], Job]:
    """The engine key (network, weights, precision, network options) and the job that the form's
    ``values`` (by control name; extra-loss options as ``{loss}__{option}``, network options as
    ``{network}__{option}``) and the uploaded ``files`` (by image control) ask for, checked against
    the server's ``limits``. ``style_model`` is the server's fast style model (path, style names):
    ``refine_style`` may name one of its styles, to start from its painting."""
    if files["content"] is None or files["style"] is None:
        raise UsageError("upload a content photo and a style painting first.")
    size, steps = _field(values, "size", integer=True), _field(values, "steps", integer=True)
    limits.check(size, steps)
    styles = [path for path in (files["style"], files["style2"]) if path]
    masks = [path for path in (files["mask1"], files["mask2"]) if path]
    chosen = values.get("extra_losses") or []
    if not isinstance(chosen, list) or not all(isinstance(name, str) for name in chosen):
        raise UsageError(f"'{LABELS['extra_losses']}' must be a list of loss names.")
    losses: dict[str, dict[str, Any]] = {}
    for name in chosen:
        if name in BUILT_IN_TERMS or name not in host.losses:
            raise UsageError(f"'{name[:40]}' is not one of this page's extra losses.")
        cls: Any = host.losses[name].cls
        losses[name] = {param.name: _option(values, name, param, f"loss '{name}'") for param in cls.params
                        if control_name(name, param.name) in values}
        if control_name(name, "weight") in values:
            losses[name]["weight"] = bounded_number(values[control_name(name, "weight")], f"{name} weight", BOUNDS["loss_weight"])
    network_name = _choice(values, "network", list(host.networks))
    network: Any = host.network(network_name).cls
    # Only sources present on the server: a visitor never names a file, nor makes the server download.
    offered = offered_weights(network, limits)
    if values.get("weights") not in offered:
        raise UsageError(f"weights must be one of {', '.join(offered)} for network '{network.name}' on this server.")
    network_options = tuple((param.name, _option(values, network.name, param, f"network '{network.name}'"))
                            for param in network.params if control_name(network.name, param.name) in values)
    refine = values.get("refine_style") or ""
    if refine and (style_model is None or refine not in style_model[1]):
        raise UsageError(f"there is no instant style '{str(refine)[:40]}' on this server to start from.")
    share = _field(values, "style_share")
    job = Job(
        content=files["content"], style=styles, masks=masks or None,
        style_blend=[share, 1 - share] if len(styles) == 2 else None, style_scale=_field(values, "style_scale"),
        colors=_choice(values, "colors", COLOR_MODES), scales="auto" if _choice(values, "coarse_to_fine", (True, False)) else "none",
        size=size, steps=steps, optimizer=_choice(values, "optimizer", OPTIMIZERS),
        content_weight=_field(values, "content_weight"), style_weight=10.0 ** _field(values, "style_weight_log10"),
        tv_weight=10.0 ** _field(values, "tv_weight_log10"), losses=losses, seed=_field(values, "seed", integer=True),
        init=f"{style_model[0]}:{refine}" if refine and style_model else "content",
        max_pixels=limits.max_pixels, fit_memory=True, chunk_seconds=limits.chunk_seconds,
    )
    return (network.name, values["weights"], _choice(values, "precision", PRECISIONS), network_options), job

