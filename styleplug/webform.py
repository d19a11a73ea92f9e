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

from .errors import StyleplugError, UsageError
from .job import BUILT_IN_TERMS, Job, job_fields
from .plugins import PluginHost
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
                  "max_memory")
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
# The first web request a visitor makes should answer in seconds, not minutes, so the demo starts
# smaller than the job's defaults (512 px, 300 steps), within the server's limits.
DEMO_SIZE, DEMO_STEPS = 256, 150


def control_name(owner: str, option: str) -> str:
    """The /run API name of a loss's or a network's option: ``{owner}_{option}``, with '-' as '_'
    (a plugin's name may have a '-', an API parameter may not)."""
    return f"{owner}_{option}".replace("-", "_")


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
        "extra_losses": [], "refine_style": "", "network": "vgg19", "weights": "auto", "precision": "auto", **weight_defaults(host, "vgg19"),
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
    ``values`` (by control name; extra-loss options as ``{loss}_{option}``, network options as
    ``{network}_{option}``) and the uploaded ``files`` (by image control) ask for, checked against
    the server's ``limits``. ``style_model`` is the server's fast style model (path, style names):
    ``refine_style`` may name one of its styles, to start from its painting."""
    if files["content"] is None or files["style"] is None:
        raise UsageError("upload a content photo and a style painting first.")
    try:
        size, steps = int(values["size"]), int(values["steps"])
    except (TypeError, ValueError):
        raise UsageError("size and steps must be whole numbers.") from None
    limits.check(size, steps)
    styles = [path for path in (files["style"], files["style2"]) if path]
    masks = [path for path in (files["mask1"], files["mask2"]) if path]
    losses: dict[str, dict[str, Any]] = {}
    for name in values.get("extra_losses") or []:
        if name in BUILT_IN_TERMS or name not in host.losses:
            raise UsageError(f"'{name}' is not one of this page's extra losses.")
        cls: Any = host.losses[name].cls
        losses[name] = {option: values[control_name(name, option)] for option in ("weight", *(p.name for p in cls.params))
                        if control_name(name, option) in values}
    try:
        network: Any = host.network(values["network"]).cls
    except StyleplugError as error:
        raise UsageError(str(error)) from None
    # Only the network's named sources: a visitor never names a file on the server.
    if values["weights"] not in network.weight_sources:
        raise UsageError(f"weights must be one of {', '.join(network.weight_sources)} for network '{network.name}'.")
    network_options = tuple((param.name, values[control_name(network.name, param.name)]) for param in network.params
                            if control_name(network.name, param.name) in values)
    refine = values.get("refine_style") or ""
    if refine and (style_model is None or refine not in style_model[1]):
        raise UsageError(f"there is no instant style '{refine}' on this server to start from.")
    share = float(values["style_share"])
    job = Job(
        content=files["content"], style=styles, masks=masks or None,
        style_blend=[share, 1 - share] if len(styles) == 2 else None, style_scale=float(values["style_scale"]),
        colors=values["colors"], scales="auto" if values["coarse_to_fine"] else "none", size=size, steps=steps,
        optimizer=values["optimizer"], content_weight=float(values["content_weight"] or 0),
        style_weight=10.0 ** float(values["style_weight_log10"]), tv_weight=10.0 ** float(values["tv_weight_log10"]),
        losses=losses, seed=int(values["seed"] or 0), init=f"{style_model[0]}:{refine}" if refine and style_model else "content",
        max_pixels=limits.max_pixels, fit_memory=True, chunk_seconds=limits.chunk_seconds,
    )
    return (network.name, values["weights"], values["precision"], network_options), job
