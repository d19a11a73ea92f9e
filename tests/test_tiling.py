"""Exact tiled optimisation: the tiled gradient is the untiled one, runs agree, the planner tiles
what would not fit, tiles report progress and cancel between them."""

from __future__ import annotations

import dataclasses
import json
import re
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import styleplug
from styleplug.core import backends, device
from styleplug.core.tiling import Geometry, network_geometry, plan_tiles, window_shapes
from styleplug.errors import ResourceError, UsageError
from styleplug.fast.model import StyleModel
from styleplug.host.plugins import PluginHost
from styleplug.lazy import ops
from styleplug.losses.functional import gram_from_sums, gram_sums, mean_squared_error
from styleplug.testing import check_loss, tiled_gradient_agreement

EXAMPLES = Path(styleplug.__file__).parent / "examples"
CONTENT, STYLES = EXAMPLES / "tubingen.jpg", [EXAMPLES / "starry_night.jpg", EXAMPLES / "woman_with_hat_matisse.jpg"]
SHIPPED_MODEL = Path(styleplug.__file__).parent / "models" / "styles.npz"
WIDTH, HEIGHT = 192, 144


def _masks() -> list[Image.Image]:
    left = np.zeros((HEIGHT, WIDTH), np.uint8)
    left[:, :100] = 255
    left[40:90, 60:140] = 128  # a soft patch across the tiles' borders
    return [Image.fromarray(left), Image.fromarray(255 - left)]


@pytest.fixture(scope="module")
def engine() -> styleplug.Engine:
    # Real weights in float32: the comparison is about rounding, which bfloat16 would swamp.
    return styleplug.Engine("vgg19", "auto", precision="float32", host=PluginHost(entrypoints=False))


def _agreement(engine: styleplug.Engine, halo: int | None = None, gather_size: int | None = None) -> dict[str, float]:
    job = styleplug.Job(content=CONTENT, style=STYLES, masks=_masks(), size=WIDTH, style_scale=0.66, init="noise")
    return tiled_gradient_agreement(engine, job, tile_size=64, halo=halo, gather_size=gather_size)


@pytest.mark.parametrize("gather_size", [None, 128])
def test_the_tiled_loss_and_gradient_are_the_untiled_ones_with_masks_and_two_styles(engine, gather_size):
    # gather_size 128: the gathering pass in 2 x 2 tiles, the pass back in 3 x 3; any cut gives the same sums.
    agreement = _agreement(engine, gather_size=gather_size)
    assert agreement["tiles"] == 9  # 3 x 3 tiles of 64 px, so one has a halo on every side
    assert agreement["gather_tiles"] == (4 if gather_size else 9)
    assert agreement["tiled_total"] == pytest.approx(agreement["total"], rel=1e-5)
    assert agreement["gradient_error_max"] <= 1e-3
    assert agreement["gradient_error_norm"] <= 1e-4


def test_windows_of_one_shape_as_on_a_gpu_give_the_untiled_gradient_with_fewer_programs(engine):
    # 448x336 in tiles of 128 px: windows of 320x304 px fit inside the image, so those at its edges
    # reach further in; each core's place in its window is an argument of the one program.
    job = styleplug.Job(content=CONTENT, style=STYLES, masks=_masks(), size=448, style_scale=0.5, init="noise")
    agreement = tiled_gradient_agreement(engine, job, tile_size=128, uniform=True)
    assert agreement["tiles"] == 12 and agreement["window_shapes"] == 1
    geometry = Geometry({"block5_conv1": 16}, 16, 96)
    assert window_shapes(plan_tiles(336, 448, 128, geometry)) == 4  # the windows clipped at the edges
    assert agreement["tiled_total"] == pytest.approx(agreement["total"], rel=1e-5)
    assert agreement["gradient_error_max"] <= 1e-3
    assert agreement["gradient_error_norm"] <= 1e-4


def test_a_halo_short_of_the_networks_reach_gives_a_different_gradient(engine):
    # The check above can fail: without the halo, features at the tiles' borders are wrong.
    assert _agreement(engine, halo=16)["gradient_error_norm"] > 1e-2


def test_fifty_tiled_steps_paint_what_fifty_untiled_steps_paint(engine):
    # Adam at a moderate rate: L-BFGS amplifies float32 rounding (different in any other order of
    # summation too) until two runs part visibly after about ten steps; see benchmarks/tiling.py.
    job = dict(content=CONTENT, style=STYLES, masks=_masks(), size=128, scales="none", steps=50, tolerance=0,
               optimizer="adam", learning_rate=2.0)
    untiled = np.asarray(engine.stylize(tiling="off", **job), np.float32)
    # Two tiles, each with the whole image as its context at this size: the exactness of every
    # border is the gradient tests' business; here the 50 steps' rounding is.
    tiled = np.asarray(engine.stylize(tiling="on", tile_size=96, **job), np.float32)
    assert np.abs(tiled - untiled).mean() <= 1.0  # at most 1/255 on average
    assert np.abs(untiled - np.asarray(Image.open(CONTENT).convert("RGB").resize(untiled.shape[1::-1]), np.float32)).mean() > 10


def test_vgg_geometry_and_tile_plan():
    engine = styleplug.Engine("vgg16", "none", precision="float32", host=PluginHost(entrypoints=False))
    layers = ("block1_conv1", "block4_conv2", "block5_conv1")
    geometry = network_geometry(engine.feature_model(layers), layers, "vgg16")
    assert geometry.strides == {"block1_conv1": 1, "block4_conv2": 8, "block5_conv1": 16}
    # VGG16 reaches 2+1+4+2+12+4+24+8+16 = 73 px from block5_conv1: rounded up to its 16 px grid.
    assert (geometry.align, geometry.halo) == (16, 80)
    tiles = plan_tiles(1000, 700, 400, geometry)
    cores = np.zeros((1000, 700), int)
    for tile in tiles:
        top, bottom, left, right = tile.core
        cores[top:bottom, left:right] += 1
        assert top % 16 == 0 and left % 16 == 0 and tile.window[0] % 16 == 0 and tile.window[2] % 16 == 0
        assert tile.window[0] == max(0, top - 80) and tile.window[1] == min(1000, bottom + 80)
    assert (cores == 1).all()  # every pixel belongs to exactly one tile
    assert window_shapes(tiles) <= 9
    # Windows of one shape (as on a GPU): the same cores, each window as large as the middle ones,
    # on the grid, inside the image, with at least the halo wherever the image goes on.
    uniform = plan_tiles(1024, 704, 208, geometry, uniform=True)
    assert [tile.core for tile in uniform] == [tile.core for tile in plan_tiles(1024, 704, 208, geometry)]
    assert {tile.window_size for tile in uniform} == {(208 + 160, 176 + 160)}
    for tile in uniform:
        top, bottom, left, right = tile.window
        assert top % 16 == 0 and left % 16 == 0 and 0 <= top and bottom <= 1024 and 0 <= left and right <= 704
        assert top <= max(0, tile.core[0] - 80) and bottom >= min(1024, tile.core[1] + 80)
        assert left <= max(0, tile.core[2] - 80) and right >= min(704, tile.core[3] + 80)
    with pytest.raises(UsageError, match="tile side of 8 px"):
        plan_tiles(100, 100, 8, Geometry({"a": 16}, 16, 80))


@pytest.fixture(scope="module")
def small_engine() -> styleplug.Engine:
    return styleplug.Engine("vgg19", "none", precision="float32", host=PluginHost(entrypoints=False))


def test_the_planner_tiles_what_would_not_fit_and_records_it(small_engine, caplog):
    job = styleplug.Job(content=CONTENT, style=STYLES[:1], size=1024, scales="none", steps=1, max_memory=2.5)
    with pytest.raises(ResourceError, match="or tiling=auto to run it in tiles"):
        small_engine.run(dataclasses.replace(job, tiling="off"))
    with caplog.at_level("WARNING", logger="styleplug"):
        image = small_engine.run(job)
    assert image.size == (1024, 768)
    assert "runs in" in caplog.text and "tiles of" in caplog.text
    record = json.loads(image.info["styleplug"])
    assert record["job"]["tile_size"] is not None and record["job"]["history"] < 20


def test_a_job_too_large_even_in_tiles_is_refused_with_a_size_that_fits_in_tiles(small_engine, caplog):
    # 2.1 GiB: the runtime's 1 GiB, one tile's activations (tiles of 256 px), and the whole image's
    # optimiser state, which grows with the pixels: about 1230 px in tiles on TensorFlow (850 on
    # JAX, whose activations count more), about 550 in one pass.
    job = styleplug.Job(content=CONTENT, style=STYLES[:1], size=4096, scales="none", steps=1, max_memory=2.1, tile_size=256,
                        style_scale=0.5)
    with pytest.raises(ResourceError, match=r"GiB even in tiles but 2\.1 GiB is allowed \(max_memory\); use size=\d+ or less\.$") \
            as refused:
        small_engine.run(job)
    largest = refused.value.data["largest_size"]
    with pytest.raises(ResourceError) as untiled:
        small_engine.run(dataclasses.replace(job, tiling="off"))
    assert 1.5 * untiled.value.data["largest_size"] < largest < 4096
    assert refused.value.data["needed"] < untiled.value.data["needed"]
    # The size named is planned (in tiles) rather than refused; cancelled before its first step.
    cancel = threading.Event()
    cancel.set()
    with caplog.at_level("WARNING", logger="styleplug"):
        assert small_engine.run(dataclasses.replace(job, size=largest), cancel=cancel).width == largest
    assert f"a {largest}x" in caplog.text and "tiles of" in caplog.text


def test_on_a_gpu_the_planner_and_the_fast_model_plan_for_its_free_memory(small_engine, monkeypatch, caplog):
    # A GPU faked on this CPU: the backend says it has one, with 1.6 GiB free (no max_memory given).
    # The fast model needs about 1.1 KB per pixel on top of 1 GiB: a 1100x825 photo goes in 2 tiles.
    backend = backends.current()
    monkeypatch.setattr(backend, "gpus", lambda: ["cuda:0"])
    monkeypatch.setattr(backend, "gpu_free_memory", lambda: int(1.6 * 2**30))
    job = styleplug.Job(content=CONTENT, style=STYLES[:1], size=512, scales="none", steps=1)  # about 1.9 GiB untiled
    with pytest.raises(ResourceError, match=r"but 1\.6 GiB is free; use size=\d+ or less"):
        small_engine.run(dataclasses.replace(job, tiling="off"))
    passes: list[int] = []
    with caplog.at_level("WARNING", logger="styleplug"):
        assert small_engine.run(job).size == (512, 384)
        assert "runs in" in caplog.text and "tiles of" in caplog.text
        painted = StyleModel.load(SHIPPED_MODEL).stylize(CONTENT, size=1100, progress=lambda done, of: passes.append(of))
    assert painted.size == (1100, 825) and "painting it in tiles of 1024 px" in caplog.text and passes


def test_on_a_gpu_an_image_too_large_to_compile_in_one_pass_runs_in_tiles_whatever_the_memory(small_engine, monkeypatch,
                                                                                                   caplog):
    # On an H200 an 8192 px pass did not compile within five minutes: above device.GPU_PASS_PIXELS a
    # GPU job runs in tiles even with memory to spare. Here the limit is scaled down with the image.
    backend = backends.current()
    monkeypatch.setattr(backend, "gpus", lambda: ["cuda:0"])
    monkeypatch.setattr(backend, "gpu_free_memory", lambda: 64 * 2**30)
    monkeypatch.setattr(device, "GPU_PASS_PIXELS", 320 * 320)
    job = styleplug.Job(content=CONTENT, style=STYLES[:1], size=512, scales="none", steps=1, tiling="off")
    with pytest.raises(ResourceError, match=r"a 512x384 job is too large for one pass on a GPU .*; use size=369 or less, "
                                            r"or tiling=auto to run it in tiles\.$"):
        small_engine.run(job)
    cancel = threading.Event()
    cancel.set()  # planned, then stopped before its first step
    with caplog.at_level("WARNING", logger="styleplug"):
        small_engine.run(dataclasses.replace(job, tiling="auto"), cancel=cancel)
        model = StyleModel.load(SHIPPED_MODEL)
        assert model.stylize(CONTENT, size=512).size == (512, 384)
    planned = re.search(r"a 512x384 job runs in (\d+) tiles of up to (\d+)x(\d+) px", caplog.text)
    assert planned and int(planned[1]) > 1 and int(planned[2]) * int(planned[3]) <= 320 * 320, caplog.text
    assert "(96 px; 1 window shape)" in caplog.text  # one gather and one scatter program to compile
    assert "photo is too large for one pass on a GPU (compiling it would take many minutes): painting it in tiles" in caplog.text


def test_a_lower_scale_that_does_not_fit_gets_tiles_of_its_own(small_engine, caplog):
    # Tiles are planned for the output; a lower scale needs less memory for the optimiser's state,
    # so it runs in fewer, larger tiles (fewer pixels through the network) than the output's.
    from styleplug.run.record import replay_job

    def first_tiles(job: styleplug.Job) -> tuple[list[tuple[int, int]], dict]:
        """The size and tile passes of the first tiled report; the run is stopped there."""
        cancel, passes = threading.Event(), []

        def watch(progress):
            if progress.tile:
                passes.append((progress.size, progress.tile[1]))
                cancel.set()

        return passes, json.loads(small_engine.run(job, callback=watch, cancel=cancel).info["styleplug"])

    job = styleplug.Job(content=CONTENT, style=STYLES[:1], size=1024, scales=[512], steps=1, max_memory=1.8)
    with caplog.at_level("WARNING", logger="styleplug"):
        passes, record = first_tiles(job)
    lower = re.search(r"a 512x384 scale runs in (\d+) tiles.*its statistics gathered in (\d+) tiles?", caplog.text)
    assert "a 1024x768 job runs in" in caplog.text and lower, caplog.text
    # The gathering pass goes forward only: the whole 512x384 scale in one tile, then the pass back in two.
    assert passes == [(512, int(lower[1]) + int(lower[2]))] and int(lower[2]) < int(lower[1])
    model = small_engine.feature_model(small_engine._layers(small_engine.terms(job)))
    in_the_outputs_tiles = plan_tiles(384, 512, record["job"]["tile_size"], network_geometry(model, ["block5_conv1"], "vgg19"))
    assert int(lower[1]) < len(in_the_outputs_tiles)
    # The record names the output's tiles and the memory planned in; its replay tiles every scale alike.
    assert record["job"]["max_memory"] == 1.8
    assert first_tiles(replay_job(record)[1])[0] == passes


def test_a_style_image_too_large_for_one_pass_has_its_target_gathered_in_tiles(small_engine, monkeypatch, caplog):
    # style_scale 2 beside a 256 px output that runs in one pass: a 512 px style image. Its Gram
    # targets are sums over the image, so gathered in tiles they are the one-pass ones.
    from styleplug.core.device import estimate_memory

    job = styleplug.Job(content=CONTENT, style=STYLES[:1], size=256, scales="none", steps=1, chunk_size=1, style_scale=2)
    network = small_engine.network
    model = small_engine.feature_model([*network.default_content_layers, *network.default_style_layers])

    def first_losses(**changes) -> dict[str, float]:
        reports: list[styleplug.Progress] = []
        with caplog.at_level("WARNING", logger="styleplug"):
            small_engine.run(dataclasses.replace(job, **changes), callback=reports.append)
        return reports[0].losses

    one_pass = first_losses()
    assert "tiles" not in caplog.text
    # Memory for the 256x192 output's one pass, not for the style image's.
    just_the_output = 1.001 * estimate_memory(model, 192, 256, "lbfgs", 20) / 2**30
    in_tiles = first_losses(max_memory=just_the_output)
    assert re.search(r"style images larger than (\d+) px go through the network in tiles .* one pass of a 512x320 "
                     r"style image would not fit in", caplog.text), caplog.text
    # On a GPU: a style image above the one-pass limit (scaled down here with the image).
    monkeypatch.setattr(backends.current(), "gpus", lambda: ["cuda:0"])
    monkeypatch.setattr(backends.current(), "gpu_free_memory", lambda: 64 * 2**30)
    monkeypatch.setattr(device, "GPU_PASS_PIXELS", 320 * 320)
    caplog.clear()
    on_a_gpu = first_losses()
    assert "tiles of 128 px" in caplog.text and "is too large for one pass on a GPU" in caplog.text, caplog.text
    for losses in (in_tiles, on_a_gpu):
        assert losses["total"] == pytest.approx(one_pass["total"], rel=1e-4)


def test_a_loss_that_cannot_run_tiled_is_refused_in_one_line(small_engine):
    class MeanLoss(styleplug.Loss):
        """Mean activation."""
        name, role = "meanonly", "style"

        def call(self, features, image, target, mask=None):
            return ops.mean(features[next(iter(self.layers))])

    plugin = type("Plugin", (), {"register_losses": staticmethod(styleplug.hookimpl(lambda register: register(MeanLoss)))})
    engine = styleplug.Engine("vgg19", "none", precision="float32", host=PluginHost([plugin()], entrypoints=False))
    with pytest.raises(UsageError, match="loss 'meanonly' .* does not declare how to run tiled") as raised:
        engine.stylize(CONTENT, STYLES[0], size=96, scales="none", steps=1, tiling="on", tile_size=48,
                       losses={"meanonly": {"weight": 1.0}})
    assert "\n" not in str(raised.value)


def test_the_kit_catches_a_tileable_loss_whose_sums_do_not_add_up_over_tiles():
    class MeanGram(styleplug.Loss):
        """Declares statistics but returns each grid's Gram matrix (a mean): right in one pass, wrong in tiles."""

        name, role, tiling = "meangram", "style", "statistics"

        def sums(self, features, target, masks=None):
            return {layer: gram_from_sums(gram_sums(features[layer], None if masks is None else masks[layer]))
                    for layer in self.layers}

        def from_sums(self, sums, target):
            return self.weighted_mean({layer: mean_squared_error(sums[layer], target[layer]) for layer in self.layers})

    with pytest.raises(AssertionError, match="a tiled run adds the tiles' sums, so return sums over positions"):
        check_loss(MeanGram)


def test_tiles_report_progress_and_cancel_between_them(small_engine):
    cancel, reports = threading.Event(), []

    def watch(progress):
        reports.append(progress)
        if progress.tile == (3, 5):
            cancel.set()

    image = small_engine.run(styleplug.Job(content=CONTENT, style=STYLES[0], size=192, scales="none", steps=5,
                                           tiling="on", tile_size=96), watch, cancel)
    # The gathering pass goes forward only, over the whole 192x144 image at once; the pass back in 4 tiles.
    assert [report.tile for report in reports] == [(1, 5), (2, 5), (3, 5)]
    assert image.size == (192, 144)
    assert json.loads(image.info["styleplug"])["steps_run"] == 0


def test_a_cancelled_run_continues_from_its_checkpoint(small_engine, tmp_path):
    checkpoint = tmp_path / "run.npz"
    job = styleplug.Job(content=CONTENT, style=STYLES[0], size=96, scales=(48,), steps=6, chunk_size=2, tolerance=0,
                        checkpoint=str(checkpoint))
    cancel, steps = threading.Event(), []

    def stop_at_eight(progress):
        steps.append(progress.step)
        if progress.step == 8:
            cancel.set()

    first = small_engine.run(job, stop_at_eight, cancel)
    assert checkpoint.is_file() and json.loads(first.info["styleplug"])["steps_run"] == 8
    steps.clear()
    finished = small_engine.run(job, lambda progress: steps.append(progress.step))
    # The second scale's last four steps, not the whole run again (a first chunk of one step: its time is unknown).
    assert steps == [9, 11, 12]
    assert json.loads(finished.info["styleplug"])["steps_run"] == 12
    assert not checkpoint.exists()  # a finished run leaves none
    # The state came back whole and in its place: the same picture as a run never stopped.
    whole = small_engine.run(dataclasses.replace(job, checkpoint=None))
    difference = np.abs(np.asarray(finished, np.float32) - np.asarray(whole, np.float32))
    print(f"resumed against never stopped: mean {difference.mean():.4f}/255, max {difference.max():.0f}/255")
    assert difference.mean() < 0.05
    other = dataclasses.replace(job, steps=4)
    small_engine.run(other)  # another job ignores a checkpoint that is not its own


def test_a_damaged_checkpoint_is_refused_in_one_line(small_engine, tmp_path):
    checkpoint = tmp_path / "run.npz"
    job = styleplug.Job(content=CONTENT, style=STYLES[0], size=64, scales="none", steps=4, chunk_size=2, tolerance=0,
                        checkpoint=str(checkpoint))
    cancel = threading.Event()
    small_engine.run(job, lambda progress: cancel.set(), cancel)
    whole = checkpoint.read_bytes()
    checkpoint.write_bytes(whole[: len(whole) // 2])  # cut off, as by a full disk copying it
    with pytest.raises(UsageError, match=r"^'.*run\.npz' is not a styleplug checkpoint \(.*\); give another checkpoint file, "
                                         r"or remove this one\.$"):
        small_engine.run(job)


def test_a_checkpoint_falling_due_within_a_chunk_ends_the_chunk(small_engine, tmp_path, monkeypatch):
    # A tiled 4096 px step takes a minute on a CPU: ten-step chunks would space checkpoints ten minutes apart.
    monkeypatch.setattr(small_engine, "checkpoint_seconds", 0.0)  # always due
    checkpoint = tmp_path / "run.npz"
    saved = []

    def look(progress):
        if checkpoint.exists():
            with np.load(checkpoint) as stored:
                saved.append(json.loads(str(stored["meta"]))["steps_run"])

    small_engine.run(styleplug.Job(content=CONTENT, style=STYLES[0], size=64, scales="none", steps=4, chunk_size=10,
                                   tolerance=0, checkpoint=str(checkpoint)), look)
    assert saved == [1, 2, 3]  # saved after each step, read at the next step's report
