"""Batches of photos and videos: in this process, on a local Ray cluster and on a simulated two-node
cluster; nothing lost or repeated across failures and interruptions."""

from __future__ import annotations

import json
import re
import warnings
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from styleplug.frontends.batch import FastPainter, run_batch
from styleplug.frontends.video import Smoothing, chunks, paint_frames, probe, read_frames
from support import EXAMPLES, REPO, gradient_image, pan_frames, write_clip

MODEL = REPO / "styleplug" / "models" / "styles.npz"


def styleplug_cli(*arguments: object, **options: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "styleplug", *map(str, arguments)], capture_output=True, text=True,
                          **options)  # type: ignore[call-overload]


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """Six photos of different sizes and formats, and one file that is not an image."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for seed in range(6):
        gradient_image(64 + 8 * seed, 48 + 4 * seed, seed=seed).save(folder / f"photo{seed}.{'png' if seed % 2 else 'jpg'}")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a JPEG")
    return folder


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path), np.float64)


def test_a_batch_paints_every_photo_reports_the_broken_one_and_a_rerun_skips_what_is_done(photos, tmp_path):
    out, report = tmp_path / "out", tmp_path / "report.json"
    first = styleplug_cli("batch", photos, "-O", out, "--model", MODEL, "--style", "shipwreck", "--report", report)
    assert first.returncode == 1, first.stderr  # one input failed
    assert "6 done, 0 skipped (already done), 1 failed" in first.stderr
    assert f"failed: {photos / 'broken.jpg'}: " in first.stderr and "not an image Pillow can read" in first.stderr
    assert sorted(path.name for path in out.iterdir()) == [f"photo{seed}.png" for seed in range(6)]
    assert Image.open(out / "photo5.png").size == (104, 68)
    written = json.loads(report.read_text())
    assert len(written["done"]) == 6 and [item["input"] for item in written["failed"]] == [str(photos / "broken.jpg")]
    stamps = {path.name: path.stat().st_mtime_ns for path in out.iterdir()}
    replay = styleplug_cli("replay", out / "photo0.png", "-O", tmp_path / "replay.png")
    assert replay.returncode == 2 and "painted by a fast style model" in replay.stderr

    again = styleplug_cli("batch", photos, "-O", out, "--model", MODEL, "--style", "shipwreck")
    assert "0 done, 6 skipped (already done), 1 failed" in again.stderr
    assert {path.name: path.stat().st_mtime_ns for path in out.iterdir()} == stamps  # nothing rewritten

    # Another setting is another painting: every output is made again.
    before = pixels(out / "photo2.png")
    weaker = styleplug_cli("batch", photos / "photo1.png", str(photos / "photo[23].*"), "-O", out, "--model", MODEL,
                           "--style", "shipwreck", "--strength", "0.5")
    assert weaker.returncode == 0 and "3 done, 0 skipped" in weaker.stderr, weaker.stderr
    assert np.abs(pixels(out / "photo2.png") - before).mean() > 5


def test_too_large_and_too_small_inputs_are_skipped_with_their_reasons(photos, tmp_path):
    gradient_image(20, 20).save(photos / "tiny.png")
    out = tmp_path / "out"
    result = styleplug_cli("batch", photos / "photo0.jpg", photos / "photo5.png", photos / "tiny.png", "-O", out,
                           "--model", MODEL, "--max-pixels", "5000")
    assert result.returncode == 1
    failures = [line for line in result.stderr.splitlines() if line.startswith("styleplug: failed:")]
    assert len(failures) == 2
    assert "photo5.png" in failures[0] and "above the limit" in failures[0] and "--max-pixels" in failures[0]
    assert "tiny.png" in failures[1] and "at least 32 px" in failures[1]
    assert [path.name for path in out.iterdir()] == ["photo0.png"]


def test_bad_commands_get_one_line_and_write_nothing(photos, tmp_path):
    out = tmp_path / "out"
    for arguments, message in (
        ((), "give --model MODEL (a fast style model) or --style-image IMAGE (the optimiser)"),
        (("--model", MODEL, "--steps", "50"), "--steps set the optimiser; with --model only --size"),
        (("--model", MODEL, "--style", "cubism"), "this model has no style 'cubism'"),
        (("--model", photos / "photo1.png"), "is not a styleplug style model"),
        (("--model", MODEL, "--ray", photos / "photo1.png"), "--ray took"),
    ):
        refused = styleplug_cli("batch", photos, "-O", out, *arguments)
        lines = refused.stderr.strip().splitlines()
        assert refused.returncode == 2 and len(lines) == 1 and message in lines[0], refused.stderr
    missing = styleplug_cli("batch", str(photos / "*.tiff"), "-O", out, "--model", MODEL)
    assert missing.returncode == 2 and "no file matches" in missing.stderr
    # --ray before the only input takes it as an address: the hint, not "missing argument".
    ray_first = styleplug_cli("batch", "--ray", photos, "-O", out, "--model", MODEL)
    assert ray_first.returncode == 2 and "put --ray after the inputs, or write --ray=ADDRESS" in ray_first.stderr
    assert not out.exists()


def test_without_ray_installed_the_ray_option_says_how_to_install_it(photos, tmp_path):
    # Ray is installed here; hide it from this one process as if it were not.
    code = ("import sys; sys.modules['ray'] = None; from styleplug.frontends.cli import main; "
            f"sys.argv = ['styleplug', 'batch', {str(photos)!r}, '-O', {str(tmp_path / 'out')!r}, '--model', {str(MODEL)!r}, "
            "'--ray']; main()")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 2 and "pip install 'styleplug[ray]'" in result.stderr, result.stderr


def test_an_interrupted_batch_resumes_without_repeating_work(photos, tmp_path):
    out = tmp_path / "out"
    (photos / "broken.jpg").unlink()
    command = [sys.executable, "-m", "styleplug", "batch", str(photos), "-O", str(out), "--style-image",
               str(EXAMPLES / "starry_night.jpg"), "--size", "48", "--steps", "60", "--no-early-stop", "--seed", "1"]
    running = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out.is_dir() and any(out.glob("*.png"))) and time.monotonic() < deadline:
        time.sleep(0.05)
    running.send_signal(signal.SIGINT)  # Ctrl-C
    _, stderr = running.communicate(timeout=60)
    assert running.returncode == 130, stderr
    assert "before it was interrupted; run the same command again to finish" in stderr
    finished = sorted(out.glob("*.png"))
    assert 1 <= len(finished) < 6 and not list(out.glob(".*"))  # no half-written files

    resumed = subprocess.run(command, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{6 - len(finished)} done, {len(finished)} skipped (already done), 0 failed" in resumed.stderr
    replayed = styleplug_cli("replay", out / "photo3.png", "-O", tmp_path / "replay.png")
    assert "identical to the original" in replayed.stderr, replayed.stderr


def test_a_batch_that_cannot_start_on_ray_leaves_no_folder_behind(photos, tmp_path):
    pytest.importorskip("ray")
    result = styleplug_cli("batch", photos, "-O", tmp_path / "out", "--model", MODEL, "--ray", "--actors", "9", "--threads", "1")
    assert result.returncode == 2 and "9 actors of 1 threads need 9 CPUs" in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()


def test_ctrl_c_that_lands_in_a_finaliser_still_stops_the_batch(photos, tmp_path):
    """Python runs finalisers between any two steps and only prints what they raise: a Ctrl-C that
    arrives while one runs (TensorFlow frees tensors in them all the time) is lost as an exception.
    The batch stops anyway, after the photo it is on."""
    script = f"""
import os, signal, sys
import styleplug.frontends.batch as batch
from styleplug.frontends.cli import main

class Finaliser:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C, delivered while this runs
        sum(range(1000))                     # the KeyboardInterrupt is raised here, and swallowed

paint_one = batch.paint_one
def paint_once_then_ctrl_c(*arguments):
    result = paint_one(*arguments)
    if not hasattr(batch, "pressed"):
        batch.pressed = True
        Finaliser()
    return result

batch.paint_one = paint_once_then_ctrl_c
main(["batch", {str(photos)!r}, "-O", {str(tmp_path / "out")!r}, "--model", {str(MODEL)!r}, "--size", "64"])
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert "Exception ignored" in result.stderr and "KeyboardInterrupt" in result.stderr  # the interruption was lost...
    assert result.returncode == 130, result.stderr  # ...and the batch stopped all the same
    assert len(list((tmp_path / "out").glob("*.png"))) <= 1  # of the folder's five photos


def test_cancelling_from_the_python_api_stops_after_the_current_photo(photos, tmp_path):
    cancel = threading.Event()
    report = run_batch([photos], tmp_path / "out", FastPainter.from_file(MODEL), cancel=cancel,
                       progress=lambda report, total: len(report.done) == 2 and cancel.set())
    assert report.interrupted and len(report.done) == 2


# -- videos -----------------------------------------------------------------------------------------

def test_a_video_keeps_its_frames_rate_and_audio_and_the_blend_reduces_flicker(tmp_path):
    photo = Image.open(EXAMPLES / "tubingen.jpg")
    clip = tmp_path / "static.mp4"
    write_clip(clip, pan_frames(photo, 16, (160, 120), step=0, noise=4), rate=12)
    result = styleplug_cli("video", clip, "-O", tmp_path / "out.mp4", "--model", MODEL, "--style", "starry_night")
    assert result.returncode == 0, result.stderr
    source, painted = probe(clip), probe(tmp_path / "out.mp4")
    assert (painted.frames, painted.rate, painted.audio) == (16, source.rate, True)
    assert json.loads((tmp_path / "out.mp4.json").read_text())["smoothing"] == {"denoise": 0.8, "blend": 0.15}

    import av

    with av.open(str(clip)) as original, av.open(str(tmp_path / "out.mp4")) as output:
        assert [bytes(p) for p in original.demux(original.streams.audio[0]) if p.size] == \
               [bytes(p) for p in output.demux(output.streams.audio[0]) if p.size]  # audio copied, unchanged

    frames = list(read_frames(clip))
    paint = FastPainter.from_file(MODEL, style="starry_night").open()

    def flicker_and_sharpness(smoothing: Smoothing) -> tuple[float, float]:
        outputs = [frame.astype(np.float64).mean(axis=-1) for frame in paint_frames(paint, frames, smoothing)]
        return (float(np.mean([np.abs(a - b).mean() for a, b in zip(outputs, outputs[1:])])),
                float(np.mean([np.abs(np.diff(frame, axis=1)).mean() for frame in outputs])))

    flicker, sharpness = flicker_and_sharpness(Smoothing())
    raw_flicker, raw_sharpness = flicker_and_sharpness(Smoothing(0, 0))
    assert flicker < 0.7 * raw_flicker and sharpness > 0.85 * raw_sharpness  # steadier, and about as crisp
    assert flicker_and_sharpness(Smoothing(0, 0.6))[1] < sharpness  # blending outputs alone softens more


def test_a_file_that_is_not_a_video_gets_one_line(tmp_path):
    fake = tmp_path / "fake.mp4"
    fake.write_bytes(b"not a video at all")
    result = styleplug_cli("video", fake, "-O", tmp_path / "out.mp4", "--model", MODEL)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "is not a video FFmpeg can read" in result.stderr and not (tmp_path / "out.mp4").exists()


def test_a_truncated_video_or_a_renamed_photo_fails_in_one_line_and_counts_as_failed_in_a_batch(tmp_path):
    import av

    photo = Image.open(EXAMPLES / "tubingen.jpg")
    plain = tmp_path / "plain.mp4"
    write_clip(plain, pan_frames(photo, 60, (160, 120), step=2), rate=12, audio=False)
    # The index first (as players and cameras write for streaming), so the file opens when cut short.
    streamable = tmp_path / "streamable.mp4"
    with av.open(str(plain)) as source, av.open(str(streamable), "w", options={"movflags": "faststart"}) as sink:
        stream = sink.add_stream_from_template(source.streams.video[0])
        for packet in source.demux(source.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                sink.mux(packet)
    with av.open(str(streamable)) as source:
        starts = [packet.pos for packet in source.demux(source.streams.video[0]) if packet.pos is not None and packet.pos >= 0]
    data, inputs = streamable.read_bytes(), tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "cut.mp4").write_bytes(data[: starts[25]])  # between two frames: it decodes cleanly, 25 frames
    (inputs / "torn.mp4").write_bytes(data[: (starts[25] + starts[26]) // 2])  # inside a frame: fewer frames, or a decoder error
    (inputs / "photo.mp4").write_bytes((EXAMPLES / "tubingen.jpg").read_bytes())
    for name, message in (("cut.mp4", r"ends after 25 of the 60 frames its header announces \(truncated\?\)"),
                          ("torn.mp4", r"\(truncated\?\)|is damaged part way"), ("photo.mp4", "is a still image")):
        source = inputs / name
        result = styleplug_cli("video", source, "-O", tmp_path / "out.mp4", "--model", MODEL)
        errors = [line for line in result.stderr.splitlines() if line.startswith("styleplug:")]  # besides the progress bar
        assert result.returncode == 2 and len(errors) == 1 and re.search(message, errors[0]), result.stderr
        assert not (tmp_path / "out.mp4").exists()
    report = run_batch([tmp_path / "inputs"], tmp_path / "batch", FastPainter.from_file(MODEL))
    assert sorted(Path(failure["input"]).name for failure in report.failed) == ["cut.mp4", "photo.mp4", "torn.mp4"]
    assert not report.done


# -- Ray ---------------------------------------------------------------------------------------------

@pytest.fixture
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _host_state(ray) -> tuple:
    """What a host that runs Ray itself has set up, and a batch must leave as it found it."""
    import logging

    context = ray.data.DataContext.get_current()
    return (context.enable_progress_bars, context.print_on_execution_start, context.wait_for_min_actors_s,
            context.execution_options.preserve_order, logging.getLogger("ray.data").level, list(warnings.filters))


def test_ray_gives_the_same_photos_and_video_as_this_process(photos, tmp_path, local_ray):
    painter = FastPainter.from_file(MODEL, style="matisse")
    here = run_batch([photos], tmp_path / "here", painter)
    host = _host_state(local_ray)
    there = run_batch([photos], tmp_path / "there", painter, ray="local", actors=2, threads=1)
    assert (len(there.done), len(there.failed)) == (6, 1) and "not an image" in there.failed[0]["error"]
    for item in here.done:
        name = Path(item["output"]).name
        assert np.abs(pixels(tmp_path / "here" / name) - pixels(tmp_path / "there" / name)).mean() <= 1

    # A video in chunks: the same frames, rate and audio.
    clip = tmp_path / "clip.mp4"
    write_clip(clip, pan_frames(Image.open(EXAMPLES / "tubingen.jpg"), 30, (160, 120), step=2, noise=2), rate=10)
    video = run_batch([clip], tmp_path / "video", painter, ray="local")
    assert len(video.done) == 1, video.failed
    assert probe(tmp_path / "video" / "clip.mp4") == probe(clip)
    assert _host_state(local_ray) == host  # the host's Ray Data settings, logger and warning filters


def test_chunks_of_frames_meet_without_a_seam():
    """What each Ray actor does with its chunk, done here: thanks to the warm-up frames that lead
    each chunk, the frames where chunks start are, within a tenth of a frame's change, those of one
    pass over the whole clip."""
    frames = pan_frames(Image.open(EXAMPLES / "tubingen.jpg"), 30, (160, 120), step=0, noise=4)
    paint = FastPainter.from_file(MODEL).open()
    joined = [frame.astype(np.float64) for piece in chunks(frames, length=12)
              for frame in paint_frames(paint, list(piece["frames"]), Smoothing(), piece["skip"])]
    whole = [frame.astype(np.float64) for frame in paint_frames(paint, frames, Smoothing())]
    assert len(joined) == 30
    change = np.median([np.abs(a - b).mean() for a, b in zip(whole, whole[1:])])
    assert max(np.abs(a - b).mean() for a, b in zip(joined, whole)) < 0.1 * change
    unsmoothed = [frame.astype(np.float64) for frame in paint_frames(paint, frames, Smoothing(0, 0))]
    assert np.abs(joined[12] - unsmoothed[12]).mean() > change  # a chunk's first frame is steadied too


def test_a_simulated_two_node_cluster_shares_the_batch(photos, tmp_path):
    pytest.importorskip("ray")
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    try:
        report = run_batch([photos], tmp_path / "out", FastPainter.from_file(MODEL), ray=cluster.address, actors=2,
                           threads=1)
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert len(report.done) == 6
    assert len({item["worker"] for item in report.done}) == 2  # both nodes painted
