"""Shared by the benchmarks: the timing of a run's progress reports, styleplug's log lines, and peak memory."""

from __future__ import annotations

import logging
import time
from typing import Any


class Gaps:
    """A progress callback that records the seconds between reports (the first from its creation)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._last = time.perf_counter()

    def __call__(self, progress: Any) -> None:
        now = time.perf_counter()
        self.seconds.append(now - self._last)
        self._last = now

    def per_step(self, steps_per_report: int) -> tuple[float, float]:
        """Seconds per step over every report but the first, and the first report's extra (the compile)."""
        later = self.seconds[1:]
        step = sum(later) / (steps_per_report * len(later))
        return step, self.seconds[0] - steps_per_report * step


def logged_lines() -> list[str]:
    """A list that collects every message styleplug logs from now on (such as the planner's tiles)."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logging.getLogger("styleplug").addHandler(Collect())
    return lines


def peak_rss_gib() -> float:
    """This process's peak resident memory, in GiB: the kernel's VmHWM, its own. (``ru_maxrss`` starts
    from the peak of the process that started this one: a worker started by a parent holding an
    engine reports the parent's gigabytes.)"""
    with open("/proc/self/status") as status:
        kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    return round(kib / 2**20, 2)
