"""The Gradio web demo: live, cancellable style transfer, with controls generated from the registry.

Start it with ``styleplug demo`` or ``python demo/app.py``. It runs the same ``Engine`` API that
embedders use, on the GPU when the Keras backend sees one and on the CPU otherwise.
"""

from __future__ import annotations

import inspect
import logging
import os
import re
import secrets
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import gradio as gr  # noqa: E402
from PIL import Image  # noqa: E402
from starlette.middleware import Middleware  # noqa: E402

from ..core import backends  # noqa: E402
from ..run.colors import COLOR_MODES  # noqa: E402
from ..core.device import PRECISIONS, device_label, gpus  # noqa: E402
from ..core.engine import Engine  # noqa: E402
from ..errors import StyleplugError, UsageError, one_line  # noqa: E402
from ..fast.model import StyleModel  # noqa: E402
from ..run.image import image_size, save_image  # noqa: E402
from ..run.job import BUILT_IN_TERMS, OPTIMIZERS  # noqa: E402
from ..params import Param  # noqa: E402
from ..host.plugins import PluginHost, default_host  # noqa: E402
from .webform import (BOUNDS, IMAGE_CONTROLS, LABELS, bounded_number, control_name, defaults, demo_name, field_help,  # noqa: E402
                      job_from_form, offered_weights, weight_defaults)
from .webguard import Guard, GuardMiddleware  # noqa: E402
from .webjobs import Gate, JobQueue, Limits, WebJob, calibrate  # noqa: E402

log = logging.getLogger("styleplug")

EXAMPLES = Path(__file__).parent.parent / "examples"
# The style model the demo's Instant tab uses when the operator names none (shipped with the package).
SHIPPED_MODEL = Path(__file__).parent.parent / "models" / "styles.npz"
EXAMPLE_PAIRS = [("tubingen", "starry_night"), ("hoovertowernight", "shipwreck"), ("tubingen", "woman_with_hat_matisse")]
# A small result (64 px) is shown filling its frame, not as a thumbnail; the download keeps its size.
CSS = "#result img { width: 100%; height: 100%; object-fit: contain; }"


def _param_control(param: Param, label: str) -> Any:
    """The Gradio control for one declared parameter."""
    info = param.help or None
    if param.choices is not None:
        return gr.Dropdown(list(param.choices), value=param.default, label=label, info=info)
    if param.type is bool:
        return gr.Checkbox(value=param.default, label=label, info=info)
    if param.type in (int, float) and param.min is not None and param.max is not None:
        step = 1 if param.type is int else (param.max - param.min) / 100
        return gr.Slider(param.min, param.max, value=param.default, step=step, label=label, info=info)
    if param.type in (int, float):
        return gr.Number(value=param.default, label=label, info=info, precision=0 if param.type is int else None)
    return gr.Textbox(value=param.default, label=label, info=info)


class _Refused(Exception):
    """An input that did not come from this server's upload handling."""


def _upload_path(payload: Any, roots: list[Path]) -> Path | None:
    """The server-side file of an upload, or None for an empty input.

    Events run with preprocess=False (styleplug reads the images itself), so a client can send any
    payload. Only a regular file whose real path lies in Gradio's upload folder (or among the
    bundled examples) is accepted; everything else, whether it exists or not, is refused alike.
    """
    if payload is None or payload == "":
        return None
    path = payload.get("path") if isinstance(payload, dict) else payload
    if not isinstance(path, str) or not path or "://" in path or len(path) > 1024:
        raise _Refused
    try:
        real = Path(os.path.realpath(path))  # symbolic links resolved: a link in the upload folder may point out
        if not any(real.is_relative_to(root) for root in roots) or not real.is_file():
            raise _Refused
    except (OSError, ValueError):  # a NUL byte, a name too long for the file system...
        raise _Refused from None
    return real


_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~])/(?:[^\s'\"(),;:/]+/)*([^\s'\"(),;:/]+)")


def public(text: str) -> str:
    """``text`` with every absolute path shortened to its file name: visitors never see server paths."""
    return _ABSOLUTE_PATH.sub(lambda match: match.group(1), text)


def _image_size(path: Path) -> tuple[int, int] | None:
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def _session(request: gr.Request | None) -> str:
    """The visitor a request comes from (Gradio's session), which owns at most one job."""
    return getattr(request, "session_hash", None) or "anonymous"


def _client(request: gr.Request | None) -> str:
    """The visitor's network address, as the guard in front of Gradio decided it."""
    return getattr(getattr(request, "client", None), "host", None) or "unknown"


def _format_seconds(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


@dataclass
class _Page:
    """The page's components: the form (every /run input, by name, in API order) and the rest."""

    form: dict[str, Any]
    run: Any
    stop: Any
    estimate: Any
    status: Any
    output: Any
    download: Any
    loss_groups: dict[str, Any]
    network_groups: dict[str, Any]


def _header(host: PluginHost, limits: Limits, device: str) -> None:
    gr.Markdown(
        "# styleplug\nPaint a photo in the style of a painting (Gatys et al.). "
        f"Device: **{device}**. Limits: up to {limits.max_size} px, {limits.max_steps} steps, "
        f"{limits.max_upload_mb} MB uploads; results are deleted after {limits.result_minutes:g} min."
    )
    if host.failures:
        gr.Markdown("**Some plugins failed to load and were skipped:** "
                    + "; ".join(f"{r.provider} - {public(str(r.error))}" for r in host.failures), elem_id="plugin-failures")


@dataclass
class _Instant:
    """The Instant tab's components."""

    photo: Any
    style: Any
    second: Any
    share: Any
    strength: Any
    size: Any
    paint: Any
    refine: Any
    result: Any
    status: Any


NO_SECOND_STYLE = "(none)"


def _instant_layout(model: StyleModel, limits: Limits) -> _Instant:
    """A photo, painted in one pass by the server's fast style model: styles, a blend, a strength."""
    gr.Markdown("Paint a photo in about a second with a trained style model (Johnson et al. 2016); "
                "**Refine** hands it to the optimiser, which starts from this painting.")
    with gr.Row():
        with gr.Column():
            photo = gr.Image(type="filepath", label="Photo", elem_id="instant-photo", height=260)
            with gr.Row():
                style = gr.Dropdown(model.styles, value=model.styles[0], label="Style", elem_id="instant-style")
                second = gr.Dropdown([NO_SECOND_STYLE, *model.styles], value=NO_SECOND_STYLE, label="Blend with")
            share = gr.Slider(0, 1, value=0.5, step=0.05, label="Share of the first style", info="with a second style")
            strength = gr.Slider(0, 1, value=1, step=0.05, label="Strength", info="0 keeps the photo")
            size = gr.Slider(64, limits.max_size, value=min(512, limits.max_size or 512), step=32, label="Size (long side, px)")
            with gr.Row():
                paint = gr.Button("Paint", variant="primary", elem_id="instant-run")
                refine = gr.Button("Refine with the optimiser", elem_id="instant-refine")
        with gr.Column():
            status = gr.Markdown("", elem_id="instant-status")
            result = gr.Image(label="Painted", elem_id="instant-result", interactive=False, format="png", height=384)
    return _Instant(photo, style, second, share, strength, size, paint, refine, result, status)


def _layout(host: PluginHost, limits: Limits, device: str) -> _Page:
    """The components, laid out; the first column is what a visitor needs to run a job (on a
    phone it comes before the settings). Labels, defaults and help come from ``styleplug.frontends.webform``."""
    start = defaults(host, limits)
    form: dict[str, Any] = {}

    def image(name: str, height: int) -> Any:
        form[name] = gr.Image(type="filepath", label=LABELS[name], elem_id=name, height=height)
        return form[name]

    with gr.Row():
        with gr.Column():
            with gr.Row():
                image("content", 220)
                image("style", 220)
            with gr.Row():
                run = gr.Button("Run", variant="primary", elem_id="run")
                stop = gr.Button("Stop", variant="stop", elem_id="stop", interactive=False)
            estimate = gr.Markdown("", elem_id="estimate")
            status = gr.Markdown("Upload two images (or pick an example) and press Run.", elem_id="status")
            output = gr.Image(label="Result", elem_id="result", interactive=False, format="png", height=384)
            download = gr.DownloadButton("Download PNG with run settings", visible=False, elem_id="download")
            gr.Examples([[str(EXAMPLES / f"{c}.jpg"), str(EXAMPLES / f"{s}.jpg")] for c, s in EXAMPLE_PAIRS],
                        inputs=[form["content"], form["style"]], label="Examples")
        with gr.Column():
            with gr.Row():
                form["size"] = gr.Slider(64, limits.max_size, value=start["size"], step=32, label=LABELS["size"], elem_id="size")
                form["steps"] = gr.Slider(10, limits.max_steps, value=start["steps"], step=10, label=LABELS["steps"],
                                          elem_id="steps")
            with gr.Row():
                form["optimizer"] = gr.Radio(list(OPTIMIZERS), value=start["optimizer"], label=LABELS["optimizer"])
                form["network"] = gr.Dropdown(list(host.networks), value=start["network"], label=LABELS["network"],
                                              elem_id="network")
                form["weights"] = gr.Dropdown(list(offered_weights(host.networks[start["network"]].cls, limits)),
                                              value=start["weights"], label=LABELS["weights"], elem_id="weights",
                                              info="the sources present on this server")
                form["precision"] = gr.Radio(list(PRECISIONS), value=start["precision"], label=LABELS["precision"],
                                             info="auto: bfloat16 where this hardware runs it fast")
            with gr.Accordion("Several styles, masks, colours, scales", open=False, elem_id="more"):
                with gr.Row():
                    image("style2", 180)
                    image("mask1", 180)
                    image("mask2", 180)
                gr.Markdown("A mask is drawn over the content photo: white where its style applies. "
                            "With masks, give one per style; where no mask is white the photo stays unstyled.")
                with gr.Row():
                    form["style_share"] = gr.Slider(*BOUNDS["style_share"], value=start["style_share"], step=0.05,
                                                    label=LABELS["style_share"], elem_id="blend", info="with a second style and no masks")
                    form["style_scale"] = gr.Slider(*BOUNDS["style_scale"], value=start["style_scale"], step=0.05,
                                                    label=LABELS["style_scale"], info=field_help("style_scale"))
                with gr.Row():
                    form["colors"] = gr.Radio(list(COLOR_MODES), value=start["colors"], label=LABELS["colors"], elem_id="colors",
                                              info=field_help("colors"))
                    form["coarse_to_fine"] = gr.Checkbox(value=start["coarse_to_fine"], label=LABELS["coarse_to_fine"],
                                                         elem_id="multiscale", info="from 512 px up: start at half size or less, then refine")
            network_groups = {}
            for name, entry in host.networks.items():
                network: Any = entry.cls
                with gr.Group(visible=name == start["network"], elem_id=f"network-{name}") as network_groups[name]:
                    for param in network.params:
                        form[control_name(name, param.name)] = _param_control(param, f"{name}: {param.name}")
            with gr.Row():
                form["style_weight_log10"] = gr.Slider(*BOUNDS["style_weight_log10"], value=start["style_weight_log10"], step=0.25,
                                                       label=LABELS["style_weight_log10"])
                form["content_weight"] = gr.Number(value=start["content_weight"], minimum=BOUNDS["content_weight"][0],
                                                   maximum=BOUNDS["content_weight"][1], label=LABELS["content_weight"])
                form["tv_weight_log10"] = gr.Slider(*BOUNDS["tv_weight_log10"], value=start["tv_weight_log10"], step=0.25,
                                                    label=LABELS["tv_weight_log10"])
                form["seed"] = gr.Number(value=start["seed"], precision=0, minimum=BOUNDS["seed"][0], maximum=BOUNDS["seed"][1],
                                         label=LABELS["seed"])
            extra_losses = [name for name in host.losses if name not in BUILT_IN_TERMS]
            form["extra_losses"] = gr.CheckboxGroup(extra_losses, value=start["extra_losses"], label=LABELS["extra_losses"],
                                                    elem_id="extra-losses", visible=bool(extra_losses))
            form["refine_style"] = gr.Textbox(start["refine_style"], visible=False, elem_id="refine-style")
            groups = {}
            for name in extra_losses:
                cls: Any = host.losses[name].cls
                with gr.Group(visible=False, elem_id=f"loss-{name}") as groups[name]:
                    gr.Markdown(f"**{name}**: {(cls.__doc__ or '').strip().splitlines()[0]}")
                    form[control_name(name, "weight")] = gr.Number(value=cls.default_weight, minimum=BOUNDS["loss_weight"][0],
                                                                   maximum=BOUNDS["loss_weight"][1], label=f"{name} weight")
                    for param in cls.params:
                        form[control_name(name, param.name)] = _param_control(param, f"{name}.{param.name}")
    return _Page(form, run, stop, estimate, status, output, download, groups, network_groups)


def build_app(host: PluginHost | None = None, limits: Limits | None = None, workers: int | None = None,
              calibrate_step_time: bool = True, style_model: str | Path | None = None, guard: Guard | None = None,
              results: Path | None = None) -> gr.Blocks:
    """Build the Blocks app. Losses and networks come from ``host`` (default: installed plugins);
    ``limits`` bound what any request may ask; ``workers`` jobs run at once (default: one per GPU,
    else one). ``style_model`` (default: the shipped one, if any) adds the Instant tab. ``guard``
    (the middleware's state, see ``launch``) tells which visitors still listen; without one, jobs
    run to their end. Results go to ``results`` (default: a new temporary folder)."""
    host = host or default_host()
    device, found = device_label(), gpus()
    limits = limits or Limits()
    if limits.max_size is None:
        limits = replace(limits, max_size=2048 if found else 512)
    roots = [Path(gr.utils.get_upload_folder()).resolve(), EXAMPLES.resolve()]
    results = results or Path(tempfile.mkdtemp(prefix="styleplug-results-"))

    def make_engine(key: tuple[Any, ...]) -> Engine:
        network_name, weights, precision_name, network_options = key
        return Engine(network_name, weights, precision=precision_name, host=host, **dict(network_options))

    def on_device(worker: int) -> Any:
        return backends.current().device_scope(worker % len(found)) if found else nullcontext()

    jobs = JobQueue(make_engine, limits, workers or max(1, len(found)), on_device)
    if calibrate_step_time:
        threading.Thread(target=calibrate, args=(jobs, str(EXAMPLES / "tubingen.jpg"), str(EXAMPLES / "starry_night.jpg"),
                                                 _image_size(EXAMPLES / "tubingen.jpg"), ("vgg19", "auto", "auto", (("pooling", "max"),))),
                         daemon=True).start()

    model_path = Path(style_model) if style_model else (SHIPPED_MODEL if SHIPPED_MODEL.is_file() else None)
    model = StyleModel.load(model_path) if model_path else None

    with gr.Blocks(title="styleplug", delete_cache=(600, int(limits.result_minutes * 60))) as app:
        _header(host, limits, device)
        with gr.Tabs(selected="instant" if model else "optimise") as tabs:
            if model is not None:
                with gr.Tab("Instant", id="instant"):
                    instant = _instant_layout(model, limits)
            with gr.Tab("Optimise (any painting)", id="optimise"):
                page = _layout(host, limits, device)
        form = page.form
        if model is not None:
            _wire_instant(instant, model, form, tabs, roots, limits, device)
        _wire_estimate(app, page, jobs, roots, device)

        for name, group in page.loss_groups.items():
            form["extra_losses"].change(lambda chosen, name=name: gr.update(visible=name in chosen), form["extra_losses"], group)
        # A network brings its own weight sources, options and default loss weights.
        weight_controls = [form[name] for name in ("content_weight", "style_weight_log10", "tv_weight_log10")]
        groups = list(page.network_groups.values())

        def network_changed(network: str) -> list[Any]:
            sources = list(offered_weights(host.network(network).cls, limits))
            return [*weight_defaults(host, network).values(), gr.update(choices=sources, value=sources[0]),
                    *(gr.update(visible=name == network) for name in page.network_groups)]

        form["network"].change(network_changed, form["network"], [*weight_controls, form["weights"], *groups],
                               queue=False, api_visibility="private")

        def submit(values: dict[str, Any], request: gr.Request | None) -> WebJob:
            """Check a request as the server's own rules say, whatever the page allowed; queue it."""
            try:
                files = {name: _upload_path(values[name], roots) for name in IMAGE_CONTROLS}
            except _Refused:
                raise UsageError("images must be uploaded through this page (or picked from the examples).") from None
            for name, path in files.items():
                if path is not None and path.stat().st_size > limits.max_upload_mb * 2**20:
                    raise UsageError(f"the {name} image is over {limits.max_upload_mb} MB; upload a smaller file.")
            engine_key, job = job_from_form(values, {name: path and str(path) for name, path in files.items()}, host, limits,
                                            (str(model_path), model.styles) if model else None)
            assert files["content"] is not None  # job_from_form asks for one
            content_size = image_size(files["content"], f"the content photo '{files['content'].name}'", limits.max_pixels)
            seconds = jobs.times.estimate(content_size, job.size, job.steps, str(job.scales))
            web_job = WebJob(_session(request), engine_key, job, content_size, seconds, client=_client(request))
            jobs.submit(web_job)
            return web_job

        def listening(session: str) -> Callable[[], bool]:
            return (lambda: guard.listening(session)) if guard else (lambda: True)

        def run(*arguments: Any) -> Iterator[tuple[Any, str, Any]]:
            *values, request = arguments
            try:
                job = submit(dict(zip(form, values)), request)
            except StyleplugError as error:
                log.warning("demo request refused: %s", public(str(error)))
                raise gr.Error(public(error.phrase(demo_name)), print_exception=False) from None
            except Exception as error:  # a check this server lacks: one line for the visitor and the log
                log.warning("demo request failed: %s: %s", type(error).__name__, public(one_line(error)))
                log.debug("traceback", exc_info=True)
                raise gr.Error("the server could not read this request.", print_exception=False) from None
            step = 0
            try:
                yield None, "Queued...", gr.update(visible=False)
                for kind, payload in jobs.follow(job, listening=listening(job.session)):
                    if kind == "queued":
                        ahead, wait = payload
                        about = f", about {_format_seconds(wait)}" if wait is not None else ""
                        yield gr.skip(), f"Waiting: {ahead} job(s) ahead of you{about}.", gr.skip()
                    elif kind == "started":
                        yield gr.skip(), f"Starting on {device}...", gr.skip()
                    elif kind == "progress":
                        step = payload.step
                        left = (payload.elapsed / step) * (payload.total - step) if step else None
                        terms = ", ".join(f"{k} {v:.3g}" for k, v in payload.losses.items())
                        text = (f"Step {step}/{payload.total} at {payload.size} px, {payload.elapsed:.1f} s"
                                + (f", about {_format_seconds(left)} left" if left is not None else "") + f". Loss: {terms}")
                        yield payload.image(), text, gr.skip()
                    elif kind == "withdrawn":
                        yield gr.skip(), "Withdrawn from the queue before it started.", gr.skip()
                    elif kind == "error":
                        yield gr.skip(), f"Error: {public(payload.phrase(demo_name))}", gr.skip()
                    else:  # the time it ran, not the time it waited in the queue
                        yield finished(payload, job, step, time.perf_counter() - (job.started or time.perf_counter()))
            finally:
                jobs.cancel(job)  # a client that goes away (or cancels) stops its job; never waits

        def finished(image: Image.Image, job: WebJob, step: int, seconds: float) -> tuple[Any, str, Any]:
            # The download's record keeps file names and pixel digests, never server paths.
            image.info["styleplug"] = public(image.info.get("styleplug", ""))
            _delete_older_than(results, limits.result_minutes * 60)
            path = results / f"styleplug-{secrets.token_hex(8)}.png"  # nobody can guess another visitor's
            save_image(image, path)
            if job.cancel.is_set():
                text = f"Stopped after {step} steps ({seconds:.1f} s). The result is the best image reached."
            else:
                assert job.engine is not None
                compiling = ("The time includes compiling for this size (once per size and settings on this server)."
                             if job.compiled else "No compiling: this size ran here before.")
                text = public(f"Done: {step} steps in {seconds:.1f} s on {device}, {job.engine.precision}, "
                              f"weights: {job.engine.weights_source}. {compiling}")
            return image, text, gr.update(value=str(path), visible=True)

        # The /run API takes the form's controls by name; only the two images are required.
        run.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                               default=inspect.Parameter.empty if name in ("content", "style") else
                               (None if name in IMAGE_CONTROLS else control.value))
             for name, control in form.items()]
            + [inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=gr.Request)])
        run.__annotations__ = {"request": gr.Request}

        # Run and Stop change state in events of their own: a component that is an output of a
        # running event does not send its own clicks (Gradio's front end holds them while pending).
        def buttons(running: bool) -> tuple[Any, Any]:
            return gr.update(interactive=not running), gr.update(interactive=running)

        page.run.click(lambda: buttons(True), None, [page.run, page.stop], queue=False, api_visibility="private").then(
            run, list(form.values()), [page.output, page.status, page.download], api_name="run", preprocess=False,
            show_progress_on=[page.status], concurrency_limit=None).then(
            lambda: buttons(False), None, [page.run, page.stop], queue=False, api_visibility="private")

        def stop(request: gr.Request) -> None:
            """Stop the caller's own job: withdraw it from the queue or end it within a chunk."""
            jobs.stop(_session(request))

        page.stop.click(stop, None, None, api_name="stop", queue=False)
    return app


def _wire_instant(page: _Instant, model: StyleModel, form: dict[str, Any], tabs: Any, roots: list[Path], limits: Limits,
                  device: str) -> None:
    """Paint in one pass, outside every queue; Refine fills the optimiser's form."""
    # At most one painting per address and two at once, a few waiting: a flood is refused at once
    # and never reaches the optimiser's queue.
    gate = Gate(running=2, waiting=6)

    def instant(photo: Any, style: Any, second: Any, share: Any, strength: Any, size: Any,
                request: gr.Request) -> tuple[Any, str]:
        try:
            path = _upload_path(photo, roots)
            if path is None:
                raise UsageError("upload a photo first.")
            if style not in model.styles or second not in (NO_SECOND_STYLE, *model.styles):
                unknown = second if style in model.styles else style
                raise UsageError(f"there is no style '{str(unknown)[:40]}' here; choose one of {', '.join(model.styles)}.")
            size = bounded_number(size, "Size", None, integer=True)
            limits.check(size, 1)
            share, strength = (bounded_number(value, label, (0, 1)) for value, label in ((share, "Share of the first style"),
                                                                                        (strength, "Strength")))
            blend = {style: share, second: 1 - share} if second not in (NO_SECOND_STYLE, style) else style
            with gate.enter(_client(request)):
                started = time.perf_counter()
                image = model.stylize(str(path), style=blend, strength=strength, size=size, max_pixels=limits.max_pixels)
        except _Refused:
            raise gr.Error("images must be uploaded through this page.", print_exception=False) from None
        except StyleplugError as error:
            raise gr.Error(public(error.phrase(demo_name)), print_exception=False) from None
        return image, f"Painted in {time.perf_counter() - started:.2f} s on {device}."

    inputs = [page.photo, page.style, page.second, page.share, page.strength, page.size]
    page.paint.click(instant, inputs, [page.result, page.status], api_name="instant", preprocess=False, queue=False)

    def refine(photo: Any, style: Any) -> tuple[Any, ...]:
        # Only the visitor's own upload goes over, checked like every other input: this event is
        # hidden from the API description, yet anyone can call it by its index.
        try:
            path = _upload_path(photo, roots)
        except _Refused:
            raise gr.Error("images must be uploaded through this page.", print_exception=False) from None
        if style not in model.styles:
            raise gr.Error(f"there is no style '{str(style)[:40]}' here.", print_exception=False)
        # The painting the style was trained on, when it is one of the bundled examples.
        source = model.record.get("styles", {}).get(style, {}).get("source") or f"{style}.jpg"
        painting = EXAMPLES / Path(source).name
        return (gr.Tabs(selected="optimise"), str(path) if path else None, str(painting) if painting.is_file() else gr.skip(),
                style)

    page.refine.click(refine, [page.photo, page.style], [tabs, form["content"], form["style"], form["refine_style"]],
                      queue=False, preprocess=False, api_visibility="private")


def _wire_estimate(app: gr.Blocks, page: _Page, jobs: JobQueue, roots: list[Path], device: str) -> None:
    """Show the expected time of a job before it runs, as the content, size, steps or scales change."""
    inputs = [page.form[name] for name in ("content", "size", "steps", "coarse_to_fine")]

    def estimate_text(content_file: Any, size_px: float, step_count: float, coarse_to_fine: bool) -> str:
        try:
            path = _upload_path(content_file, roots)
        except _Refused:
            path = None
        content_size = (path and _image_size(path)) or (4, 3)
        seconds = jobs.times.estimate(content_size, int(size_px), int(step_count), "auto" if coarse_to_fine else "none")
        if seconds is None:
            return "Measuring this server's speed..."
        return (f"About {_format_seconds(seconds)} on this {device.split()[0]} for {int(step_count)} steps at "
                f"{int(size_px)} px (less if it converges early).")

    quiet: dict[str, Any] = {"preprocess": False, "queue": False, "show_progress": "hidden", "api_visibility": "private"}
    for control in inputs:
        control.change(estimate_text, inputs, page.estimate, **quiet)
    app.load(estimate_text, inputs, page.estimate, **quiet)
    # Until the start-up measurement is in, ask again every two seconds.
    timer = gr.Timer(2.0)
    timer.tick(lambda *values: (text := estimate_text(*values), gr.Timer(active=text.startswith("Measuring"))),
               inputs, [page.estimate, timer], **quiet)
def _delete_older_than(folder: Path, seconds: float) -> None:
    cutoff = time.time() - seconds
    for path in folder.glob("*.png"):
        if path.stat().st_mtime < cutoff:
            path.unlink(missing_ok=True)


def launch(host: str = "127.0.0.1", port: int | None = None, share: bool = False, limits: Limits | None = None,
           workers: int | None = None, auth: list[tuple[str, str]] | None = None, root_path: str | None = None,
           style_model: str | Path | None = None, trusted_proxies: Sequence[str] = ()) -> None:
    """Serve the demo until Ctrl-C or SIGTERM, then delete everything it wrote.

    The process is the demo's own: it gets a private folder (mode 0700) for Gradio's uploads and
    cache and for the results, since Gradio's default folder is shared by every Gradio app on the
    host. Jobs queue in styleplug's own queue (``styleplug.frontends.webjobs``); Gradio's queue only carries
    the page's events. ``trusted_proxies`` (addresses or networks) may tell the client's address
    and the public host name in forwarded headers; nobody else can (see ``styleplug.frontends.webguard``)."""
    limits = limits or Limits()
    private = Path(tempfile.mkdtemp(prefix="styleplug-demo-", dir=os.environ.get("GRADIO_TEMP_DIR") or None))
    os.environ["GRADIO_TEMP_DIR"] = str(private / "uploads")
    os.environ["FORWARDED_ALLOW_IPS"] = ""  # the server's own proxy-header handling: the guard decides instead
    (private / "results").mkdir()
    signal.signal(signal.SIGTERM, _interrupt)  # stop as on Ctrl-C, so that the private folder goes too
    guard = Guard(trusted_proxies)
    try:
        app = build_app(limits=limits, workers=workers, style_model=style_model, guard=guard, results=private / "results")
        app.queue(default_concurrency_limit=None, max_size=64)
        app.launch(server_name=host, server_port=port, share=share, max_file_size=f"{limits.max_upload_mb}mb", show_error=True,
                   allowed_paths=[str(EXAMPLES)], ssr_mode=False, quiet=False, auth=auth, root_path=root_path, css=CSS,
                   app_kwargs={"middleware": [Middleware(GuardMiddleware, guard=guard)]})
    finally:
        shutil.rmtree(private, ignore_errors=True)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
