"""The Gradio web demo: live, cancellable style transfer, with controls generated from the registry.

Start it with ``styleplug demo`` or ``python demo/app.py``. It runs the same ``Engine`` API that
embedders use, on the GPU when TensorFlow sees one and on the CPU otherwise.
"""

from __future__ import annotations

import os
import queue
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import gradio as gr  # noqa: E402

from .colors import COLOR_MODES  # noqa: E402
from .engine import PRECISIONS, Engine  # noqa: E402
from .errors import StyleplugError  # noqa: E402
from .image import save_image  # noqa: E402
from .lazy import tf  # noqa: E402
from .networks.vgg import POOLINGS  # noqa: E402
from .params import Param  # noqa: E402
from .plugins import PluginHost, default_host  # noqa: E402

EXAMPLES = Path(__file__).parent / "examples"
EXAMPLE_PAIRS = [("tubingen", "starry_night"), ("hoovertowernight", "shipwreck"), ("tubingen", "woman_with_hat_matisse")]
BUILT_IN_TERMS = ("content", "gram", "tv")
MAX_UPLOAD = "20mb"
MAX_PIXELS = 40_000_000  # per uploaded image, checked from the header before decoding


def device_label() -> str:
    gpus = tf.config.list_physical_devices("GPU")
    return f"GPU ({gpus[0].name})" if gpus else "CPU"


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


def _upload_path(payload: Any, what: str, optional: bool = False) -> str | None:
    """The server-side path of an upload (events run with preprocess=False, so styleplug reads it)."""
    path = payload.get("path") if isinstance(payload, dict) else payload
    if not path and not optional:
        raise gr.Error(f"Upload a {what} first.")
    return str(path) if path else None


def build_app(host: PluginHost | None = None, max_size: int | None = None) -> gr.Blocks:
    """Build the Blocks app. Losses and networks come from ``host`` (default: installed plugins)."""
    host = host or default_host()
    device = device_label()
    max_size = max_size or (2048 if device.startswith("GPU") else 1024)
    engines: dict[tuple[str, ...], Engine] = {}  # one per (network, precision, pooling), built on first use, owned by this app
    active: dict[str, Any] = {}  # the running job's cancel event and worker thread

    def stop_active() -> None:
        """Cancel the running job and wait for it (at most one chunk of steps)."""
        if active:
            active["cancel"].set()
            active["worker"].join()
            active.clear()
    results = Path(tempfile.mkdtemp(prefix="styleplug-demo-"))
    extra_losses = [name for name in host.losses if name not in BUILT_IN_TERMS]

    with gr.Blocks(title="styleplug") as app:
        gr.Markdown(
            "# styleplug\nPaint a photo in the style of a painting (Gatys et al.). "
            f"Device: **{device}**."
        )
        if host.failures:
            gr.Markdown(
                "**Some plugins failed to load and were skipped:** "
                + "; ".join(f"{r.provider} - {r.error}" for r in host.failures),
                elem_id="plugin-failures",
            )
        with gr.Row():
            with gr.Column():
                with gr.Row():
                    content = gr.Image(type="filepath", label="Content photo", elem_id="content", height=260)
                    style = gr.Image(type="filepath", label="Style painting", elem_id="style", height=260)
                gr.Examples(
                    [[str(EXAMPLES / f"{c}.jpg"), str(EXAMPLES / f"{s}.jpg")] for c, s in EXAMPLE_PAIRS],
                    inputs=[content, style], label="Examples",
                )
                with gr.Row():
                    size = gr.Slider(64, max_size, value=min(384, max_size), step=32, label="Output size (long side, px)", elem_id="size")
                    steps = gr.Slider(10, 1000, value=150, step=10, label="Steps", elem_id="steps")
                with gr.Row():
                    optimizer = gr.Radio(["lbfgs", "adam"], value="lbfgs", label="Optimiser")
                    network = gr.Dropdown(list(host.networks), value="vgg19", label="Network", elem_id="network")
                    precision = gr.Radio(list(PRECISIONS), value="auto", label="Precision",
                                         info="auto: bfloat16 where this hardware runs it fast")
                with gr.Accordion("Several styles, masks, colours, scales", open=False, elem_id="more"):
                    with gr.Row():
                        style2 = gr.Image(type="filepath", label="Second style (optional)", elem_id="style2", height=180)
                        mask1 = gr.Image(type="filepath", label="Mask of the first style (optional)", elem_id="mask1", height=180)
                        mask2 = gr.Image(type="filepath", label="Mask of the second style", elem_id="mask2", height=180)
                    gr.Markdown("A mask is drawn over the content photo: white where its style applies. "
                                "With masks, give one per style; where no mask is white the photo stays unstyled.")
                    with gr.Row():
                        blend = gr.Slider(0, 1, value=0.5, step=0.05, label="Share of the first style", elem_id="blend",
                                          info="with a second style and no masks")
                        style_scale = gr.Slider(0.25, 2, value=1, step=0.05, label="Style scale",
                                                info="smaller: finer brush strokes")
                    with gr.Row():
                        colors = gr.Radio(list(COLOR_MODES), value="style", label="Colours", elem_id="colors",
                                          info="luminance: keep the photo's colours; match: recolour the styles first")
                        multiscale = gr.Checkbox(value=True, label="Coarse to fine", elem_id="multiscale",
                                                 info="from 512 px up: start at half size or less, then refine")
                        pooling = gr.Radio(list(POOLINGS), value="max", label="Pooling (VGG networks)", elem_id="pooling")
                with gr.Row():
                    style_weight = gr.Slider(-6, 0, value=-3, step=0.25, label="Style weight (log10)")
                    content_weight = gr.Number(value=1.0, minimum=0, label="Content weight")
                    tv_weight = gr.Slider(0, 7, value=5, step=0.25, label="Smoothness (TV weight, log10)")
                    seed = gr.Number(value=0, precision=0, label="Seed")
                selected = gr.CheckboxGroup(extra_losses, label="Extra losses (from plugins)", elem_id="extra-losses",
                                            visible=bool(extra_losses))
                groups, controls = [], []
                for name in extra_losses:
                    cls: Any = host.losses[name].cls
                    with gr.Group(visible=False, elem_id=f"loss-{name}") as group:
                        gr.Markdown(f"**{name}**: {(cls.__doc__ or '').strip().splitlines()[0]}")
                        controls.append((name, "weight", gr.Number(value=cls.default_weight, minimum=0, label=f"{name} weight")))
                        for param in cls.params:
                            controls.append((name, param.name, _param_control(param, f"{name}.{param.name}")))
                    groups.append(group)
            with gr.Column():
                with gr.Row():
                    run_button = gr.Button("Run", variant="primary", elem_id="run")
                    stop_button = gr.Button("Stop", variant="stop", elem_id="stop")
                status = gr.Markdown("Upload two images (or pick an example) and press Run.", elem_id="status")
                output = gr.Image(label="Result", elem_id="result", interactive=False, format="png")
                download = gr.DownloadButton("Download PNG with run settings", visible=False, elem_id="download")

        for name, group in zip(extra_losses, groups):
            selected.change(lambda chosen, name=name: gr.update(visible=name in chosen), selected, group)

        def run(content_file: Any, style_file: Any, style2_file: Any, mask1_file: Any, mask2_file: Any, share: float,
                scale: float, colour_mode: str, coarse_to_fine: bool, pooling_name: str, size_px: float, step_count: float,
                optimizer_name: str, network_name: str, precision_name: str, style_log10: float, content_w: float,
                tv_log10: float, seed_value: float, chosen: list[str], *values: Any,
                progress: gr.Progress = gr.Progress()) -> Iterator[tuple[Any, str, Any]]:
            content_path = _upload_path(content_file, "content photo")
            styles = [_upload_path(style_file, "style painting"), _upload_path(style2_file, "second style", optional=True)]
            masks = [_upload_path(mask1_file, "mask", optional=True), _upload_path(mask2_file, "mask", optional=True)]
            styles = [path for path in styles if path]
            masks = [path for path in masks if path]
            losses: dict[str, dict[str, Any]] = {name: {} for name in chosen or []}
            for (name, option, _), value in zip(controls, values):
                if name in losses:
                    losses[name][option] = value
            options = {
                "size": int(size_px), "steps": int(step_count), "optimizer": optimizer_name, "seed": int(seed_value or 0),
                "style_weight": 10.0 ** style_log10, "content_weight": float(content_w or 0), "tv_weight": 10.0 ** tv_log10,
                "losses": losses, "max_pixels": MAX_PIXELS, "fit_memory": True, "style_scale": float(scale), "colors": colour_mode,
                "scales": "auto" if coarse_to_fine else "none", "masks": masks or None,
                "style_blend": [float(share), 1 - float(share)] if len(styles) == 2 else None,
            }
            try:
                # Only networks that declare a pooling option (the VGGs) get one.
                network_options = {"pooling": pooling_name} if "pooling" in [p.name for p in host.network(network_name).cls.params] else {}
                key = (network_name, precision_name, *network_options.values())
                engine = engines.get(key) or engines.setdefault(key, Engine(network_name, precision=precision_name, host=host,
                                                                            **network_options))
            except StyleplugError as error:
                raise gr.Error(str(error)) from None
            events: queue.Queue[tuple[str, Any]] = queue.Queue()
            cancel = threading.Event()

            def report(p: Any) -> None:
                events.put(("progress", (p.step, p.total, p.losses, p.elapsed, p.image(), p.size)))

            def work() -> None:
                try:
                    events.put(("done", engine.stylize(content_path, styles, callback=report, cancel=cancel, **options)))
                except StyleplugError as error:
                    events.put(("error", str(error)))
                except Exception as error:  # keep serving; say what happened in one line
                    events.put(("error", f"unexpected {type(error).__name__}: {error}"))

            stop_active()  # a cancelled job may still be finishing its chunk; never run two at once
            worker = threading.Thread(target=work, daemon=True)
            active.update(cancel=cancel, worker=worker)
            worker.start()
            started, step = time.perf_counter(), 0
            try:
                yield None, f"Preparing {network_name} on {device} in {engine.precision}...", gr.update(visible=False)
                while True:
                    kind, payload = events.get()
                    if kind == "error":
                        raise gr.Error(payload)
                    if kind == "done":
                        path = results / f"styleplug-{int(time.time() * 1000)}.png"
                        save_image(payload, path)  # with the engine's run record in a PNG text chunk
                        seconds = time.perf_counter() - started
                        if cancel.is_set():
                            text = f"Stopped after {step} steps ({seconds:.1f} s). The result is the best image reached."
                        else:
                            text = (f"Done: {step} steps in {seconds:.1f} s on {device}, {engine.precision}, "
                                    f"weights: {engine.weights_source}.")
                        yield payload, text, gr.update(value=str(path), visible=True)
                        return
                    step, total, terms, elapsed, preview, scale_px = payload
                    text = ", ".join(f"{k} {v:.3g}" for k, v in terms.items())
                    yield preview, f"Step {step}/{total} at {scale_px} px, {elapsed:.1f} s. Loss: {text}", gr.update(visible=False)
                    progress(step / total, desc=f"step {step}/{total}")
            finally:
                cancel.set()  # also reached when Stop cancels this generator at a yield
                worker.join()

        inputs = [content, style, style2, mask1, mask2, blend, style_scale, colors, multiscale, pooling, size, steps, optimizer,
                  network, precision, style_weight, content_weight, tv_weight, seed, selected]
        run_button.click(run, inputs + [c for _, _, c in controls], [output, status, download],
                         preprocess=False, show_progress_on=[status], concurrency_limit=1)

        def stop() -> None:
            # Only signal: the job ends within a chunk and writes the final status itself, so no two
            # events race to update the page.
            cancel = active.get("cancel")
            if cancel is not None:
                cancel.set()

        stop_button.click(stop, None, None, queue=False)
    return app


def launch(host: str = "127.0.0.1", port: int | None = None, share: bool = False, prevent_thread_lock: bool = False) -> gr.Blocks:
    """Serve the demo: one job at a time, a bounded queue, upload and pixel caps."""
    app = build_app()
    app.queue(default_concurrency_limit=1, max_size=8)
    app.launch(server_name=host, server_port=port, share=share, max_file_size=MAX_UPLOAD, show_error=True,
               allowed_paths=[str(EXAMPLES)], ssr_mode=False, prevent_thread_lock=prevent_thread_lock, quiet=False)
    return app
