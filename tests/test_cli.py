"""The command line end to end, and every bad-input case: one line, the right exit status, nothing written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from styleplug.core import backends
from styleplug.frontends.cli import cli
from styleplug.run.job import Job

from support import gradient_image, stripes_image

FAST = ["--size", "40", "--steps", "4", "--weights", "none", "--quiet"]


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    content, style = tmp_path / "content.png", tmp_path / "style.jpg"
    gradient_image(60, 40).save(content)
    stripes_image(50, 50).save(style)
    return content, style


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.output


def test_mistakes_in_files_are_told_before_the_backend_loads(pair, tmp_path):
    """The backend takes seconds to load on a CPU: a mistyped path, a photo given as a style model or
    a style the model lacks is told at once, before Keras is imported, and nothing is written."""
    content, style = pair
    model = Path(__file__).parents[1] / "styleplug" / "models" / "styles.npz"
    out = tmp_path / "out.png"
    for arguments, message in (
        (["run", tmp_path / "nope.png", style, "-O", out], "content image"),
        (["run", content, style, "-O", out, "--mask", tmp_path / "nope.png"], "mask 1"),
        (["run", content, style, "-O", out, "--init", f"{model}:cubism"], "this model has no style 'cubism'"),
        (["apply", model, content, "--style", "cubism", "-O", out], "this model has no style 'cubism'"),
        (["batch", content, "-O", tmp_path / "batch", "--model", content], "is not a styleplug style model"),
        (["video", tmp_path / "clip.mp4", "-O", tmp_path / "clip.out.mp4", "--model", model, "--style", "cubism"], "no style"),
    ):
        code = (f"import sys; sys.argv = ['styleplug', *{[str(argument) for argument in arguments]!r}]\n"
                "from styleplug.frontends.cli import main\n"
                "try:\n    main()\nfinally:\n    print('keras imported:', 'keras' in sys.modules)")
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and message in lines[0], result.stderr
        assert result.stdout.strip() == "keras imported: False", arguments
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted([content.name, style.name])


def test_run_end_to_end_as_a_subprocess(pair, tmp_path):
    content, style = pair
    output = tmp_path / "out.webp"
    env = {**os.environ, "STYLEPLUG_LOAD_PLUGINS": ""}
    result = subprocess.run([sys.executable, "-m", "styleplug", "run", content, style, "-O", output, "--size", "48",
                             "--scales", "24", "--steps", "10", "--chunk-size", "2", "--weights", "none", "--precision", "float32"],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert "vgg19 in float32, weights: random" in result.stderr
    assert "20/20" in result.stderr  # the progress bar ran to the end
    # with the time left at the scale being worked on (see the next test)
    assert "size=24px" in result.stderr and "left at this size=00:0" in result.stderr and "left=00:0" in result.stderr
    assert f"wrote {output} (48x32)" in result.stderr
    with Image.open(output) as image:
        assert image.format == "WEBP" and image.size == (48, 32)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    umask = os.umask(0)
    os.umask(umask)
    assert output.stat().st_mode & 0o777 == 0o666 & ~umask  # a normal file, not a private temporary


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".jpeg"])
def test_output_format_follows_the_extension(pair, tmp_path, suffix):
    output = tmp_path / f"out{suffix}"
    code, text = invoke("run", *pair, "-O", output, *FAST)
    assert code == 0, text
    with Image.open(output) as image:
        assert image.format == {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}[suffix]


def test_losses_and_options_from_the_command_line(pair, tmp_path):
    output = tmp_path / "out.png"
    code, text = invoke("run", *pair, "-O", output, *FAST, "-o", "tv.exponent", "1.25", "-o", "gram.layers", "block1_conv1:2,block2_conv1",
                        "--content-layers", "block3_conv1", "--optimizer", "adam", "--init", "noise", "--seed", "7")
    assert code == 0, text
    assert output.exists()


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
@pytest.mark.parametrize(
    ("content_size", "style_size", "options", "message"),
    [
        ((60, 40), (50, 50), ["--size", "20"], "the content image at 20 px is 20x13, too small for layer 'block5_conv1' "
                                                "of network 'vgg19', which needs at least 16 px on each side; use --size 24 or more."),
        ((60, 40), (50, 50), ["--scales", "20"], "the content image at 20 px is 20x13, too small for layer 'block5_conv1'"),
        ((1200, 40), (50, 50), [], "the content image at 40 px is 40x1, too small for layer 'block5_conv1'"),
        ((4000, 20), (50, 50), ["--size", "256"], "the content image at 256 px is 256x1, too small for layer 'block5_conv1'"),
        ((60, 40), (1200, 40), [], "style image at 40 px × style_scale 1 is 40x1, too small for layer 'block5_conv1'"),
        ((60, 40), (50, 50), ["--style-scale", "0.1", "--style-layers", "block1_conv1,block5_conv1"], None),
    ],
)
def test_images_too_small_for_a_layer_are_refused_before_the_network_runs(tmp_path, precision, content_size, style_size,
                                                                          options, message):
    """oneDNN (on CPUs with AVX-512) fails on such inputs with raw errors, in both precisions; the
    check runs on shape inference first. The last case is small but large enough: it runs."""
    content, style, output = tmp_path / "content.png", tmp_path / "style.png", tmp_path / "out.png"
    gradient_image(*content_size).save(content)
    stripes_image(*style_size).save(style)
    code, text = invoke("run", content, style, "-O", output, "--size", "40", "--steps", "2", "--weights", "none",
                        "--precision", precision, "--quiet", *options)
    if message is None:
        assert code == 0 and output.exists(), text
        return
    assert code == 2, text
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], text
    assert not output.exists()


def _bad(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("hello")
    gradient_image(60, 40).save(tmp_path / "whole.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "whole.png").read_bytes()[:100])
    return {name: tmp_path / f"{name}.png" for name in ("empty", "text", "cut", "missing")}


@pytest.mark.parametrize(
    ("case", "code", "message"),
    [
        ("content=missing", 2, "content image '{content}' does not exist"),
        ("content=empty", 2, "is empty (0 bytes)"),
        ("content=text", 2, "is not an image Pillow can read"),
        ("style=cut", 2, "is truncated or corrupt"),
        ("--max-pixels=100", 2, "above the limit of 100 pixels"),
        ("--size=0", 2, "--size must be > 0"),
        ("--size=abc", 2, "Invalid value for '--size'"),
        ("--steps=-3", 2, "--steps must be > 0"),
        ("--style-weight=nan", 2, "--style-weight must be a finite number"),
        ("--tv-weight=-1", 2, "--tv-weight must be >= 0"),
        ("--network=vgg91", 2, "unknown network 'vgg91'. Did you mean 'vgg19'?"),
        ("--loss=grm", 2, "unknown loss 'grm'. Did you mean 'gram'?"),
        ("--style-layers=blok2_conv1", 2, "unknown layer 'blok2_conv1' in network 'vgg19'. Did you mean 'block2_conv1'?"),
        ("-o=tv.exponent=abc", 2, "invalid value 'abc' for option 'exponent' of loss 'tv'; expected float"),
        ("-o=tv.exponnent=2", 2, "unknown option 'exponnent' of loss 'tv'. Did you mean 'exponent'?"),
        ("-o=exponent=2", 2, "must be written LOSS.OPTION"),
        ("--optimizer=sgd", 2, "unknown optimizer 'sgd'"),
        ("--precision=fp16", 2, "unknown precision 'fp16'"),
        ("--scales=30,20", 2, "scales must be increasing sizes from 16 up to below the output size 40"),
        ("--scales=20", 2, "the content image at 20 px is 20x13, too small for layer 'block5_conv1'"),
        ("--scales=fine", 2, "--scales takes auto, none or comma-separated sizes"),
        ("--network-option=pooling=mean", 2, "invalid value 'mean' for option 'pooling' of network 'vgg19'"),
        ("--network-option=pooling", 2, "--network-option takes NAME=VALUE, e.g. pooling=avg; got 'pooling'"),
        ("--network-option=size=3", 2, "unknown option 'size' of network 'vgg19'"),
        ("--mask=/nowhere/mask.png", 2, "mask 1 '/nowhere/mask.png' does not exist"),
        ("--weights=/nowhere/vgg.h5", 1, "weights file '/nowhere/vgg.h5' does not exist"),
        ("--size=8192 --tiling=off", 1, "GiB is free; use --size"),
        ("--size=8192 --max-memory=4", 1, "GiB even in tiles but 4.0 GiB is allowed (--max-memory)"),
        ("--max-memory=1", 1, "GiB is allowed (--max-memory); that is too little for any job"),
        ("output=out.gif", 2, "has no supported extension"),
        ("output=nodir/out.png", 2, "output folder"),
        ("output=content", 2, "is one of the input images"),
    ],
)
def test_bad_input_gives_one_line_and_writes_nothing(pair, tmp_path, case, code, message):
    content, style = pair
    bad = _bad(tmp_path)
    output = tmp_path / "out.png"
    args = {"content": content, "style": style}
    extra: list[str] = []
    key, _, value = case.partition("=")
    if key in ("content", "style"):
        args[key] = bad[value]
    elif key == "output":
        output = content if value == "content" else tmp_path / value
    else:
        extra = [key, *value.split("=")] if key == "-o" else case.split()
    before = sorted(p.name for p in tmp_path.iterdir())
    original = content.read_bytes()
    exit_code, text = invoke("run", args["content"], args["style"], "-O", output, "--size", "40", "--steps", "3", "--weights", "none", *extra)
    assert exit_code == code, text
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("styleplug: error: "), text
    assert message.format(content=args["content"]) in lines[0]
    assert "Traceback" not in text
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written
    assert content.read_bytes() == original


def test_debug_shows_the_traceback(pair, tmp_path):
    result = CliRunner().invoke(cli, ["run", str(tmp_path / "no.png"), str(pair[1]), "-O", str(tmp_path / "o.png"), "--debug"])
    assert result.exit_code != 0
    assert result.exception is not None and "does not exist" in str(result.exception)


def test_listing_commands():
    code, text = invoke("losses", "--options")
    assert code == 0
    assert "gram (alias: style)  [style, built-in]" in text
    assert "-o tv.exponent FLOAT  power of the neighbour differences" in text and "1.0 <= x <= 3.0" in text
    code, text = invoke("networks")
    assert code == 0
    assert "vgg19  [built-in]" in text and "default content layers: block4_conv2" in text


def test_the_result_depends_on_the_style(pair, tmp_path):
    content, style = pair
    other = tmp_path / "other.png"
    Image.fromarray(np.full((50, 50, 3), 128, np.uint8)).save(other)
    invoke("run", content, style, "-O", tmp_path / "a.png", *FAST)
    invoke("run", content, other, "-O", tmp_path / "b.png", *FAST)
    a, b = (np.asarray(Image.open(tmp_path / name), float) for name in ("a.png", "b.png"))
    assert np.abs(a - b).mean() > 1


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_outputs_carry_their_run_and_replay_reproduces_them(pair, tmp_path, suffix):
    content, style = pair
    output = tmp_path / f"out{suffix}"
    code, text = invoke("run", content, style, "-O", output, *FAST, "--init", "noise", "--seed", "3", "-o", "tv.exponent", "1.5")
    assert code == 0, text
    from styleplug.run.record import read_record

    record = read_record(output)
    assert (output.with_name(output.name + ".json").exists()) == (suffix == ".jpg")  # sidecar where no text chunks
    job = record["job"]
    assert record["engine"]["network"] == "vgg19" and record["engine"]["weights"] == "none" and len(record["weights_sha256"]) == 64
    assert job["tv_weight"] == 1e5 and job["losses"]["tv"] == {"exponent": 1.5} and job["seed"] == 3
    assert job["content"] == str(content.resolve()) and len(record["inputs"]["content"]) == 64
    assert record["backend"] == backends.name() and record["backend_version"]
    replayed = tmp_path / f"again{suffix}"
    code, text = invoke("replay", output, "-O", replayed)
    assert code == 0, text
    assert "identical to the original" in text
    assert np.array_equal(np.asarray(Image.open(replayed)), np.asarray(Image.open(output)))


def test_replay_refuses_changed_inputs_and_foreign_images(pair, tmp_path):
    content, style = pair
    output = tmp_path / "out.png"
    assert invoke("run", content, style, "-O", output, *FAST)[0] == 0
    gradient_image(60, 40, seed=9).save(content)
    code, text = invoke("replay", output)
    assert code == 2 and "has changed since the run; replay needs the original" in text
    code, text = invoke("replay", style)
    assert code == 2 and "has no styleplug run record" in text


def test_several_styles_with_blend_weights_and_scale(pair, tmp_path):
    content, style = pair
    second = tmp_path / "second.png"
    gradient_image(50, 50, seed=4).save(second)
    output = tmp_path / "blend.png"
    code, text = invoke("run", content, style, second, "-O", output, *FAST, "--style-weights", "0.7,0.3", "--style-scale", "0.5")
    assert code == 0, text
    from styleplug.run.record import read_record

    record = read_record(output)
    assert record["job"]["style_blend"] == [0.7, 0.3] and record["job"]["style_scale"] == 0.5 and len(record["job"]["style"]) == 2
    code, text = invoke("replay", output, "-O", tmp_path / "again.png")
    assert code == 0 and "identical to the original" in text, text
    code, text = invoke("run", content, style, second, "-O", tmp_path / "x.png", *FAST, "--style-weights", "0.7,abc")
    assert code == 2 and "--style-weights takes comma-separated numbers" in text


def test_colour_mode_from_the_command_line_is_recorded_and_replayed(pair, tmp_path):
    content, style = pair
    output = tmp_path / "lum.png"
    code, text = invoke("run", content, style, "-O", output, *FAST, "--colors", "luminance")
    assert code == 0, text
    from styleplug.run.record import read_record

    assert read_record(output)["job"]["colors"] == "luminance"
    code, text = invoke("replay", output, "-O", tmp_path / "again.png")
    assert code == 0 and "identical to the original" in text, text
    code, text = invoke("run", content, style, "-O", tmp_path / "x.png", *FAST, "--colors", "grey")
    assert code == 2 and "unknown colour mode 'grey'" in text


def test_mask_pooling_and_scales_are_recorded_and_replayed(pair, tmp_path):
    content, style = pair
    mask = tmp_path / "mask.png"
    half = np.zeros((40, 60), np.uint8)
    half[:, 30:] = 255
    Image.fromarray(half).save(mask)
    output = tmp_path / "masked.png"
    code, text = invoke("run", content, style, "-O", output, *FAST, "--mask", mask, "-N", "pooling=avg", "--scales", "24")
    assert code == 0, text
    from styleplug.run.record import read_record

    record = read_record(output)
    assert record["job"]["masks"] == [str(mask.resolve())] and record["scales"] == [24, 40] and record["job"]["scales"] == [24]
    assert record["engine"]["network_options"] == {"pooling": "avg"}
    code, text = invoke("replay", output, "-O", tmp_path / "again.png")
    assert code == 0 and "identical to the original" in text, text
    code, text = invoke("run", content, style, "-O", mask, *FAST, "--mask", mask)
    assert code == 2 and "is one of the input images" in text


def test_demo_options_and_a_bad_login_spec():
    code, text = invoke("demo", "--help")
    assert code == 0
    for option in ("--max-size", "--max-steps", "--max-pixels", "--max-upload-mb", "--max-queue", "--max-per-client",
                   "--max-engines", "--allow-downloads", "--result-minutes", "--workers", "--auth", "--auth-file",
                   "--trusted-proxy", "--root-path", "--debug"):
        assert option in text, option
    # A bad entry is named by where it came from; the line never repeats what was given (a password).
    code, text = invoke("demo", "--auth", "alice")
    assert code == 2 and text.strip() == "styleplug: error: --auth takes USER:PASSWORD; got an entry without a password.", text
    code, text = invoke("demo", "--auth-file", "/nonexistent/logins")
    assert code == 2 and "--auth-file '/nonexistent/logins' cannot be read" in text, text
    code, text = invoke("demo", "--trusted-proxy", "proxy.example")
    assert code == 2 and "--trusted-proxy takes an IP address or network" in text, text


def test_the_progress_bar_gives_the_time_left_at_the_size_being_worked_on():
    from types import SimpleNamespace

    from styleplug.frontends.cli import _ScaleTimer

    # A step's cost grows with the scale: the time left is paced by the reports at the current one.
    timer = _ScaleTimer(Job(content="c.png", style="s.png", size=512, steps=300))  # scales 256, 512
    at = lambda size, step, total, tile=None: SimpleNamespace(size=size, step=step, total=total, tile=tile)  # noqa: E731
    assert timer.left(at(256, 10, 600), 0.0) is None  # the first report times nothing (it may include compiling)
    assert timer.left(at(256, 20, 600), 1.0) == pytest.approx(280 * 0.1)
    assert timer.left(at(512, 250, 550), 30.0) is None  # the 256 px scale stopped early at step 250
    # 1.25 steps in 5 s, tile passes counted: 298.75 steps left at 4 s each.
    assert timer.left(at(512, 251, 550, tile=(1, 4)), 35.0) == pytest.approx(298.75 * 4)


def test_the_progress_bar_times_a_tiled_step_from_its_start_not_from_its_last_tile(monkeypatch, capsys):
    from types import SimpleNamespace

    import tqdm.std

    from styleplug.frontends.cli import _progress_bar

    clock = [0.0]  # tqdm's clock, moved by hand: each tile pass takes 2 s, so a step of 4 passes 8 s
    monkeypatch.setattr(tqdm.std, "time", lambda: clock[0])
    engine = SimpleNamespace(network=SimpleNamespace(name="vgg19"), precision="float32", weights_source="none")
    report = _progress_bar(engine, Job(content="c.png", style="s.png", size=512, scales="none", steps=300), quiet=False)
    for step in range(10, 13):  # a run continued from a checkpoint at step 10
        for tile in range(4):
            report(SimpleNamespace(size=512, step=step, total=300, tile=(tile, 4), losses={"total": 1.0}, converged=False,
                                   step_losses=()))
            clock[0] += 2.0
    rates = re.findall(r"([\d.]+)s/step", capsys.readouterr().err)
    assert rates and all(float(rate) == pytest.approx(8.0) for rate in rates), rates  # it showed 2.00s/step


def test_a_run_with_a_checkpoint_stopped_by_sigterm_saves_and_the_same_command_continues(pair, tmp_path, caplog):
    import signal

    content, style = pair
    output, checkpoint = tmp_path / "out.png", tmp_path / "run.ckpt.npz"
    arguments = ["run", content, style, "-O", output, "--size", "64", "--steps", "40", "--tolerance", "0", "--chunk-size", "1",
                 "--weights", "none", "--checkpoint", checkpoint]
    running = subprocess.Popen([sys.executable, "-m", "styleplug", *arguments], stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "STYLEPLUG_LOAD_PLUGINS": ""})
    assert "vgg19 in" in running.stderr.readline()  # printed at the first report: the run is under way
    running.send_signal(signal.SIGTERM)  # what kill, a stopping container or a scheduler's time limit sends
    stderr = running.stderr.read()
    assert running.wait() == 143, stderr
    assert f"stopped by SIGTERM; the run's state is in {checkpoint}: run the same command to continue." in stderr
    assert checkpoint.exists() and not output.exists()
    with caplog.at_level("WARNING", logger="styleplug"):
        code, text = invoke(*arguments)  # the same command
    assert code == 0, text
    assert "continuing from the checkpoint" in caplog.text and output.exists() and not checkpoint.exists()
