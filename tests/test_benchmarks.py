"""The benchmark scripts run end to end and print every table the README describes (tiny sizes;
no figure is asserted: timings belong in the benchmark output, not in tests)."""

from __future__ import annotations

import subprocess
import sys

from support import REPO


def run_benchmark(script: str, *arguments: str) -> str:
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *arguments],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_step_time_prints_steps_time_to_loss_and_memory():
    output = run_benchmark("step_time.py", "--sizes", "64", "--chunks", "1", "--ttl-size", "64", "--ttl-steps", "10",
                           "--ttl-checkpoints", "2", "--ttl-cap", "2", "--reuse-size", "64", "--rss-sizes", "64")
    lines = output.splitlines()
    assert any(line.split()[:2] == ["64²", "float32"] for line in lines), output
    ttl_header = next(index for index, line in enumerate(lines) if line.startswith("time to a total loss at 64px"))
    ttl_rows = [line.split() for line in lines[ttl_header + 2:ttl_header + 4]]
    assert [row[2] for row in ttl_rows] == ["5", "10"], output  # styleplug's steps at each checkpoint
    assert "peak RSS of a 64² job" in output
    reuse = [line for line in lines if line.strip().startswith("job ")]
    assert [line.split()[-1] for line in reuse] == ["1", "1"], output  # the second job compiled nothing new


def test_precision_compares_both_precisions(tmp_path):
    output = run_benchmark("precision.py", "--sizes", "48", "--steps", "20", "--pairs", "tubingen:starry_night",
                           "--out", str(tmp_path))
    assert "tubingen:starry_night 48 px judged in float32" in output and "ratio" in output
    assert len([line for line in output.splitlines() if "total every 10 steps" in line]) == 2
    assert {path.name for path in tmp_path.iterdir()} == {"precision_tubingen_starry_night_48.png"}


def test_scales_compares_and_writes_the_images(tmp_path):
    output = run_benchmark("scales.py", "--size", "64", "--steps", "10", "--sizes", "64", "--table-steps", "10",
                           "--out", str(tmp_path))
    assert "time ratio multi/single" in output
    assert any(line.split()[:3] == ["64", "64", "10"] for line in output.splitlines()), output  # size, scales, steps
    written = {path.name for path in tmp_path.iterdir()}
    assert written == {"single_64.png", "multiscale_64.png", "defaults_64.png", "sizes_side_by_side.jpg"}


def test_demo_estimate_prints_estimate_and_real_time():
    output = run_benchmark("demo_estimate.py", "--sizes", "64", "--steps", "10")
    rows = [line.split() for line in output.splitlines() if line.split()[:1] == ["64"]]
    assert [row[1] for row in rows] == ["on", "off"], output
    assert all(float(row[-1]) > 0 for row in rows)


def test_quality_judges_the_settings_and_writes_the_pictures(tmp_path):
    output = run_benchmark("quality.py", "--size", "48", "--steps", "5", "--pairs", "held-out",
                           "--settings", "defaults", "before", "--out", str(tmp_path))
    rows = [line.split() for line in output.splitlines() if line.startswith(("defaults", "before"))]
    assert len(rows) == 2 and all(len(row) == 8 for row in rows), output  # setting, pair (3 words), 4 figures
    assert {path.name for path in tmp_path.iterdir()} == {"quality_defaults_48.jpg", "quality_before_48.jpg"}


def test_quality_times_the_defaults_to_the_old_quality():
    output = run_benchmark("quality.py", "--time-to-quality", "48", "--reference-steps", "10")
    assert "time to quality at 48 px, chelsea x woman_with_hat_matisse" in output
    assert "defaults,  float32:" in output, output


def test_fast_prints_apply_times_training_step_time_and_judged_quality(tmp_path):
    from styleplug.fast.model import Architecture, StyleModel

    model = tmp_path / "model.npz"
    StyleModel.new(["starry_night", "shipwreck", "matisse"], Architecture((8, 8, 8), 1), "float32").save(model)
    output = run_benchmark("fast.py", "--apply-sizes", "64", "--train-steps", "2", "--model", str(model), "--size", "64",
                           "--steps", "3", "--out", str(tmp_path))
    assert "(32, 64, 128) x5" in output and "s per step" in output, output
    rows = [line.split() for line in output.splitlines() if "chelsea x" in line]
    assert [row[3] for row in rows].count("optimiser") == 3 and sum(row[3:5] == ["fast", "+"] for row in rows) == 3, output
    assert (tmp_path / "fast_quality.jpg").exists()


def test_batch_prints_throughput_memory_seams_and_flicker(tmp_path):
    output = run_benchmark("batch.py", "--photos", "2", "--size", "64", "--frames", "4", "--seam-size", "64",
                           "--seam-chunks", "2", "--flicker-size", "64", "--flicker-frames", "8", "--out", str(tmp_path))
    for line in ("in-process (all cores):", "Ray, 2 actor(s) x 1 thread(s):", "peak memory per actor",
                 "two nodes x 1 actor x 1 thread:", "video 64px, Ray (local, 2 actors)", "change at the seams",
                 "default (0.8, 0.15)    : static clip change"):
        assert line in output, output
    assert {path.name for path in tmp_path.iterdir()} == {"video_0.0_0.00.png", "video_0.0_0.60.png", "video_0.8_0.00.png",
                                                          "video_0.8_0.15.png", "video_0.8_0.30.png"}


def test_demo_engines_prints_memory_per_round_for_each_bound():
    output = run_benchmark("demo_engines.py", "--rounds", "2", "--size", "32", "--combinations", "3", "--keep", "1", "3")
    assert "engine combinations offered on this machine" in output
    assert [line.split(":")[0] for line in output.splitlines() if line.startswith("keep ")] == ["keep 1", "keep 3"]
    assert "growth over the last round" in output
