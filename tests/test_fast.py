"""Fast style models: training lowers the loss, files round-trip safely, apply paints many photos, bad input is one line."""

from __future__ import annotations

import subprocess
import sys
import threading
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import styleplug
from styleplug.errors import UsageError
from styleplug.fast.model import Architecture, StyleModel
from styleplug.host.plugins import PluginHost
from styleplug.testing import TinyNetwork
from styleplug.fast.training import Crops, train

from support import gradient_image, stripes_image

TINY = Architecture((8, 8, 8), 1)


def tiny_host() -> PluginHost:
    plugin = types.SimpleNamespace(__name__="tiny", register_networks=styleplug.hookimpl(lambda register: register(TinyNetwork)))
    return PluginHost([plugin], entrypoints=False)


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for seed in range(4):
        gradient_image(80, 64, seed=seed).save(folder / f"photo{seed}.png")
    return folder


@pytest.fixture
def styles(tmp_path: Path) -> list[str]:
    stripes_image(64, 64).save(tmp_path / "stripes.png")
    Image.fromarray((np.random.default_rng(3).uniform(0, 1, (64, 64, 3)) ** 3 * 255).astype(np.uint8)).save(tmp_path / "dots.png")
    return [str(tmp_path / "stripes.png"), str(tmp_path / "dots.png")]


def quick_train(styles, photos, output, **options):
    reports = []
    settings = {"size": 48, "batch": 2, "style_size": 64, "architecture": TINY, "network": "tiny", "weights": "none",
                "precision": "float32", "host": tiny_host(), "checkpoint_every": 10, "learning_rate": 2e-3,
                "callback": reports.append, **options}
    return train(styles, photos, output, **settings), reports


def test_training_lowers_the_loss_and_reports_held_out_photos(styles, photos, tmp_path):
    # The same seeded run, stopped after 2 steps and after 40; then two styles take turns.
    _, early = quick_train(styles[:1], photos, tmp_path / "early.npz", steps=2)
    _, reports = quick_train(styles[:1], photos, tmp_path / "trained.npz", steps=40, checkpoint_every=20)
    checkpoints = [report for report in reports if report.held_out]
    assert [report.step for report in checkpoints] == [20, 40]
    print(f"held-out total after 2 steps {early[-1].held_out['total']:.3g}, after 40 {checkpoints[-1].held_out['total']:.3g}")
    assert checkpoints[-1].held_out["total"] < 0.6 * early[-1].held_out["total"]
    _, reports = quick_train(styles, photos, tmp_path / "model.npz", steps=4)
    assert [report.style for report in reports] == ["stripes", "dots", "stripes", "dots"]
    record = StyleModel.load(tmp_path / "model.npz").record
    assert record["steps"] == 4 and record["held_out"][0].endswith("photo3.png") and len(record["photos"]) == 3
    assert record["losses"]["gram"]["weight"] == 1e7 and set(record["styles"]) == {"stripes", "dots"}


def test_training_resumes_and_adds_a_style_without_changing_the_others(styles, photos, tmp_path):
    output = tmp_path / "model.npz"
    quick_train(styles[:1], photos, output, steps=4, checkpoint_every=2)
    model, reports = quick_train(styles[:1], photos, output, steps=8, checkpoint_every=2)
    assert [report.step for report in reports] == [5, 6, 7, 8] and model.record["steps"] == 8
    photo = gradient_image(64, 48, seed=9)
    before = np.asarray(StyleModel.load(output, "float32").stylize(photo, style="stripes"))
    grown, reports = quick_train(styles, photos, output, steps=14, checkpoint_every=2)
    assert grown.styles == ["stripes", "dots"] and {report.style for report in reports} == {"dots"}
    after = StyleModel.load(output, "float32")
    assert np.array_equal(np.asarray(after.stylize(photo, style="stripes")), before)
    assert not np.array_equal(np.asarray(after.stylize(photo, style="dots")), before)


def test_a_style_is_added_or_resumed_naming_only_some_styles_and_a_failure_keeps_the_file(styles, photos, tmp_path):
    output = tmp_path / "model.npz"
    quick_train(styles[:1], photos, output, steps=4)
    photo = gradient_image(64, 48, seed=9)
    stripes = np.asarray(StyleModel.load(output, "float32").stylize(photo, style="stripes"))
    # Adding 'dots' to the one-style model, naming only the new style.
    grown, reports = quick_train(styles[1:], photos, output, steps=8)
    assert grown.styles == ["stripes", "dots"] and {report.style for report in reports} == {"dots"}
    after = StyleModel.load(output, "float32")
    assert np.array_equal(np.asarray(after.stylize(photo, style="stripes")), stripes)
    dots = np.asarray(after.stylize(photo, style="dots"))
    # Resuming the two-style model, naming only 'stripes': 'dots' stays as it is.
    _, reports = quick_train(styles[:1], photos, output, steps=10)
    assert {report.style for report in reports} == {"stripes"}
    assert np.array_equal(np.asarray(StyleModel.load(output, "float32").stylize(photo, style="dots")), dots)
    # A run that fails part way leaves the file exactly as it was.
    before = output.read_bytes()
    third = tmp_path / "third.png"
    gradient_image(64, 64, seed=7).save(third)

    def fail(progress):
        raise RuntimeError("the machine ran out of something")

    with pytest.raises(RuntimeError):
        quick_train([third], photos, output, steps=12, callback=fail)
    assert output.read_bytes() == before and StyleModel.load(output).styles == ["stripes", "dots"]


def test_crops_depend_on_the_step_alone_and_a_failure_cutting_them_ends_training(styles, photos, tmp_path, monkeypatch):
    # Threads cut the crops ahead, in any order: step n's crops must be the same whoever cuts them
    # and whether the run was resumed, and a thread's failure must reach the caller, not hang.
    pictures = [Image.open(path).convert("RGB") for path in sorted(photos.iterdir())]
    first, again = Crops(pictures, 32, seed=5), Crops(pictures, 32, seed=5)
    assert np.array_equal(first.batch(3, step=7), again.batch(3, step=7))
    assert first.batch(3, step=7).shape == (3, 32, 32, 3) and not np.array_equal(first.batch(3, step=7), first.batch(3, step=8))
    cut = Crops.batch
    calls = []

    def failing(self, count, step):
        calls.append(step)
        if step == 2:
            raise OSError("photo3.png: truncated file")
        return cut(self, count, step)

    monkeypatch.setattr(Crops, "batch", failing)
    with pytest.raises(OSError, match="truncated"):
        quick_train(styles[:1], photos, tmp_path / "model.npz", steps=10)
    assert not (tmp_path / "model.npz").exists()


def test_a_saved_model_loads_to_identical_outputs_and_blends(styles, photos, tmp_path):
    model, _ = quick_train(styles, photos, tmp_path / "model.npz", steps=6)
    again = StyleModel.load(tmp_path / "model.npz", "float32")
    photo = gradient_image(70, 50, seed=5)  # not a multiple of 4: padded, then cropped back
    for style in ("stripes", "dots", {"stripes": 1, "dots": 3}):
        first = np.asarray(model.stylize(photo, style=style))
        assert np.array_equal(first, np.asarray(again.stylize(photo, style=style))) and first.shape == (50, 70, 3)
    assert np.array_equal(np.asarray(again.stylize(photo, strength=0)), np.asarray(photo))
    with pytest.raises(UsageError, match="this model has no style 'cubism'; it has: stripes, dots"):
        again.stylize(photo, style="cubism")
    with pytest.raises(UsageError, match="a style model needs at least 32 px on each side"):
        again.stylize(gradient_image(40, 20))


def test_a_file_that_is_not_a_model_gets_one_line(tmp_path):
    for name, content in (("empty.npz", b""), ("text.npz", b"not a model"), ("other.npz", None)):
        path = tmp_path / name
        if content is None:
            np.savez(path, values=np.zeros(3))
        else:
            path.write_bytes(content)
        with pytest.raises(UsageError, match="is not a styleplug style model"):
            StyleModel.load(path)


def styleplug_cli(*arguments: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "styleplug", *map(str, arguments)], capture_output=True, text=True)


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_apply_paints_several_photos_and_refuses_bad_input_writing_nothing(styles, photos, tmp_path, precision):
    quick_train(styles, photos, tmp_path / "model.npz", steps=2)
    out = tmp_path / "out"
    done = styleplug_cli("apply", tmp_path / "model.npz", photos / "photo0.png", photos / "photo1.png", "-O", out,
                         "--blend", "stripes=0.7,dots=0.3", "--strength", "0.8", "--precision", precision)
    assert done.returncode == 0, done.stderr
    assert sorted(path.name for path in out.iterdir()) == ["photo0.png", "photo1.png"]
    assert Image.open(out / "photo0.png").size == (80, 64)
    done = styleplug_cli("apply", tmp_path / "model.npz", photos / "photo0.png", "-O", tmp_path / "tiled.png", "--blend",
                         "stripes=0.7,dots=0.3", "--strength", "0.8", "--precision", precision, "--tile-size", "32")
    assert done.returncode == 0, done.stderr
    difference = np.abs(np.asarray(Image.open(tmp_path / "tiled.png"), np.float32) - np.asarray(Image.open(out / "photo0.png")))
    assert difference.mean() < (0.05 if precision == "float32" else 1), difference.mean()  # bfloat16 rounds differently per tile
    tiny = tmp_path / "tiny.png"
    gradient_image(20, 20).save(tiny)
    for arguments, message in (
        ((tmp_path / "model.npz", photos / "photo0.png", "--style", "cubism"), "this model has no style 'cubism'"),
        ((photos / "photo1.png", photos / "photo0.png"), "is not a styleplug style model"),
        ((tmp_path / "model.npz", tiny), "a style model needs at least 32 px on each side"),
    ):
        refused = styleplug_cli("apply", *arguments, "-O", tmp_path / "refused.png")
        lines = refused.stderr.strip().splitlines()
        assert refused.returncode == 2 and len(lines) == 1 and message in lines[0], refused.stderr
        assert not (tmp_path / "refused.png").exists()


def test_the_optimiser_refines_a_fast_result_and_the_record_replays(styles, photos, tmp_path, monkeypatch):
    from styleplug.run.record import replay_job

    quick_train(styles, photos, tmp_path / "model.npz", steps=4)
    monkeypatch.chdir(tmp_path)
    engine = styleplug.Engine("vgg19", "none", precision="float32", host=PluginHost(entrypoints=False))
    content, reports = str(photos / "photo0.png"), []
    refined = engine.stylize(content, styles[1], size=48, steps=2, init="model.npz:dots", callback=reports.append)
    plain = []
    engine.stylize(content, styles[1], size=48, steps=2, callback=plain.append)
    assert reports[0].losses["content"] > plain[0].losses["content"]  # it starts from the painting, not the photo
    import json

    settings, job = replay_job(json.loads(refined.info["styleplug"]))
    assert job.init == f"{tmp_path / 'model.npz'}:dots"
    assert np.array_equal(np.asarray(styleplug.Engine.from_settings(settings, engine.host).run(job)), np.asarray(refined))


def test_tiles_paint_the_one_pass_picture_and_threads_sharing_a_model_keep_their_own(tmp_path):
    # The shipped model: its instance normalisations need the whole photo's statistics, its
    # convolutions a 48 px halo; 64 px tiles cut a 172x132 photo into 9 windows of differing shapes.
    model = StyleModel.load(Path(styleplug.__file__).parent / "models" / "styles.npz", "float32")
    assert model.geometry.halo == 48
    photo, other = gradient_image(170, 130, seed=7), gradient_image(120, 90, seed=8)  # padded to 172x132, cropped back
    whole = np.asarray(model.stylize(photo, style="shipwreck"), np.float32)
    passes: list[tuple[int, int]] = []
    tiled = np.asarray(model.stylize(photo, style="shipwreck", tile_size=64, progress=lambda *counts: passes.append(counts)), np.float32)
    assert tiled.shape == whole.shape == (130, 170, 3)
    assert passes[-1] == (126, 126) == (len(passes), (13 + 1) * 9)  # 9 tiles up to each of 13 normalisations, then painted
    assert np.abs(tiled - whole).mean() < 0.02 and np.abs(tiled - whole).max() <= 1  # rounding to whole levels only
    # One thread paints in tiles (with its statistics fixed) while another paints in one pass.
    alone = np.asarray(model.stylize(other, style="matisse"))
    results: dict[str, np.ndarray] = {}
    threads = [threading.Thread(target=lambda: results.update(tiled=np.asarray(model.stylize(photo, style="shipwreck", tile_size=64)))),
               threading.Thread(target=lambda: results.update(other=np.asarray(model.stylize(other, style="matisse"))))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert np.array_equal(results["other"], alone) and np.array_equal(results["tiled"], tiled.astype(np.uint8))
    for tile_size, message in ((2, "below this network's 4 px grid; use a larger tile_size"), (-1, "tile_size must be a whole number")):
        with pytest.raises(UsageError, match=message):
            model.stylize(photo, tile_size=tile_size)
