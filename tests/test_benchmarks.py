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
                           "--ttl-checkpoints", "2", "--ttl-cap", "2", "--rss-sizes", "64")
    lines = output.splitlines()
    assert any(line.split()[:2] == ["64²", "float32"] for line in lines), output
    ttl_header = next(index for index, line in enumerate(lines) if line.startswith("time to a total loss at 64px"))
    ttl_rows = [line.split() for line in lines[ttl_header + 2:ttl_header + 4]]
    assert [row[2] for row in ttl_rows] == ["5", "10"], output  # styleplug's steps at each checkpoint
    assert "peak RSS of a 64² job" in output


def test_scales_compares_and_writes_the_images(tmp_path):
    output = run_benchmark("scales.py", "--size", "64", "--steps", "10", "--sizes", "64", "--table-steps", "10",
                           "--out", str(tmp_path))
    assert "time ratio multi/single" in output
    assert any(line.split()[:3] == ["64", "64", "10"] for line in output.splitlines()), output  # size, scales, steps
    written = {path.name for path in tmp_path.iterdir()}
    assert written == {"single_64.png", "multiscale_64.png", "defaults_64.png", "sizes_side_by_side.jpg"}
