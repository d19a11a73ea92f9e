"""The web demo's job queue: a bounded, fair queue of stylisation jobs served by worker threads.

Kept apart from Gradio so that its rules hold whatever front end calls it:
- each visitor (session) has at most one job queued or running, and controls only that job;
- the queue is bounded; a visitor who cannot join is told how many jobs are ahead;
- each worker owns its engines and runs one job at a time, to its real end: a cancelled job keeps
  its worker until its thread has finished the chunk it was in, so two jobs never share a worker;
- cancelling never waits: it sets an event, or withdraws a job that has not started.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from .engine import Engine, Progress, Result
from .job import MAX_SIZE, Job, plan_scales
from .errors import StyleplugError, UsageError, one_line
from .image import long_side_size

log = logging.getLogger("styleplug")


@dataclass(frozen=True)
class Limits:
    """What the server accepts, whatever a client sends; set by the operator."""

    max_size: int | None = None  # None: the demo takes 512 px on a CPU, 2048 on a GPU
    max_steps: int = 1000
    max_pixels: int = 40_000_000  # per uploaded image, checked from the header before decoding
    max_upload_mb: int = 20
    max_queue: int = 8  # jobs waiting, beyond those running
    result_minutes: float = 60.0  # results and uploads are deleted after this
    chunk_seconds: float = 2.0  # the longest a job runs between two checks of Stop

    def check(self, size: int, steps: int) -> None:
        max_size = self.max_size or MAX_SIZE
        if not 64 <= size <= max_size:
            raise UsageError(f"size must be between 64 and {max_size} px on this server; got {size}.")
        if not 1 <= steps <= self.max_steps:
            raise UsageError(f"steps must be between 1 and {self.max_steps} on this server; got {steps}.")


class StepTimes:
    """Seconds per optimisation step as a line in the number of pixels, fitted to what the
    workers measured (the calibration at start-up, then every job), plus a fixed start-up cost."""

    def __init__(self) -> None:
        self._samples: deque[tuple[float, float]] = deque(maxlen=50)  # (pixels, seconds per step)
        self.startup = 5.0  # targets and tracing, refined by jobs
        self._lock = threading.Lock()

    def add(self, pixels: float, seconds_per_step: float) -> None:
        with self._lock:
            self._samples.append((pixels, seconds_per_step))

    def per_step(self, pixels: float) -> float | None:
        with self._lock:
            samples = list(self._samples)
        if not samples:
            return None
        sizes = {round(p) for p, _ in samples}
        if len(sizes) < 2:  # one size measured: assume the time grows with the pixels
            p, t = samples[-1]
            return t * pixels / p
        mean_p = sum(p for p, _ in samples) / len(samples)
        mean_t = sum(t for _, t in samples) / len(samples)
        slope = sum((p - mean_p) * (t - mean_t) for p, t in samples) / sum((p - mean_p) ** 2 for p, _ in samples)
        return max(mean_t + slope * (pixels - mean_p), 0.2 * mean_t * pixels / mean_p)

    def estimate(self, content_size: tuple[int, int], size: int, steps: int, scales: str) -> float | None:
        """Seconds for a job of ``steps`` steps per scale on a content image of ``content_size``
        (width, height) at long side ``size``, start-up included; ``scales`` as in ``stylize``."""
        sizes = [long_side_size(content_size, stage) for stage in plan_scales(scales, size)]
        rates = [self.per_step(width * height) for width, height in sizes]
        if any(rate is None for rate in rates):
            return None
        return self.startup * len(sizes) + steps * sum(rates)  # type: ignore[arg-type]


@dataclass
class WebJob:
    """One visitor's job: the engine it needs, the ``Job``, and what it reports."""

    session: str
    engine_key: tuple[Any, ...]
    job: Job
    content_size: tuple[int, int]  # (width, height) of the content image, for the step times
    estimate: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    events: queue.Queue[tuple[str, Any]] = field(default_factory=queue.Queue)
    started: float | None = None
    engine: Engine | None = None  # the worker's engine that ran it


class JobQueue:
    """A bounded queue of ``WebJob``s served by ``workers`` threads, each with its own engines.

    ``make_engine(key)`` builds an engine for a job's ``engine_key``; ``device(worker)`` gives the
    context a worker runs in (e.g. ``tf.device``).
    """

    def __init__(self, make_engine: Callable[[tuple[Any, ...]], Engine], limits: Limits, workers: int = 1,
                 device: Callable[[int], AbstractContextManager[Any]] = lambda worker: nullcontext()) -> None:
        self.limits, self.times = limits, StepTimes()
        self._make_engine, self._device = make_engine, device
        self._waiting: deque[WebJob] = deque()
        self._running: dict[str, WebJob] = {}
        self._lock = threading.Condition()
        self._engines: list[dict[tuple[Any, ...], Engine]] = [{} for _ in range(workers)]
        self.workers = [threading.Thread(target=self._serve, args=(index,), daemon=True, name=f"styleplug-worker-{index}")
                        for index in range(workers)]
        for worker in self.workers:
            worker.start()

    # -- visitors --------------------------------------------------------------------------------

    def submit(self, job: WebJob) -> None:
        """Queue ``job``; refuse a second job of the same visitor and a full queue."""
        with self._lock:
            if self.has_job(job.session):
                raise UsageError("you already have a job queued or running; stop it before starting another.")
            if len(self._waiting) >= self.limits.max_queue:
                wait = self._wait_seconds(len(self._waiting))
                about = f", about {wait:.0f} s" if wait is not None else ""
                raise UsageError(f"the server is busy: {len(self._waiting) + len(self._running)} jobs ahead of you"
                                 f"{about}; try again later.")
            self._waiting.append(job)
            self._lock.notify()

    def has_job(self, session: str) -> bool:
        with self._lock:
            return session in self._running or any(job.session == session for job in self._waiting)

    def stop(self, session: str) -> bool:
        """Withdraw the visitor's queued job, or signal their running job to stop; False when the
        visitor has no job. Never waits."""
        with self._lock:
            job = self._running.get(session) or next((job for job in self._waiting if job.session == session), None)
        if job is None:
            return False
        self.cancel(job)
        return True

    def cancel(self, job: WebJob) -> None:
        """Withdraw ``job`` if it has not started, else signal it to stop at its next chunk."""
        with self._lock:
            if job in self._waiting:
                self._waiting.remove(job)
                job.events.put(("withdrawn", None))
        job.cancel.set()

    def position(self, job: WebJob) -> tuple[int, float | None]:
        """How many jobs run or wait ahead of ``job``, and about how long until it starts."""
        with self._lock:
            ahead = next((index for index, waiting in enumerate(self._waiting) if waiting is job), len(self._waiting))
            return ahead + len(self._running), self._wait_seconds(ahead)

    def follow(self, job: WebJob, poll: float = 1.0) -> Iterator[tuple[str, Any]]:
        """The job's events as they come: ("queued", (ahead, seconds)) while it waits, then
        ("progress", Progress), and a last ("done", image), ("error", StyleplugError) or ("withdrawn", None)."""
        while True:
            try:
                kind, payload = job.events.get(timeout=poll)
            except queue.Empty:
                if job.started is None:
                    yield "queued", self.position(job)
                continue
            yield kind, payload
            if kind in ("done", "error", "withdrawn"):
                return

    # -- workers ---------------------------------------------------------------------------------

    def _wait_seconds(self, ahead: int) -> float | None:
        """About how long the first ``ahead`` waiting jobs and the running ones take."""
        now, total = time.perf_counter(), 0.0
        for job in [*self._running.values(), *list(self._waiting)[:ahead]]:
            if job.estimate is None:
                return None
            total += max(job.estimate - (now - job.started if job.started else 0.0), 0.0)
        return total / len(self.workers)

    def _serve(self, index: int) -> None:
        while True:
            with self._lock:
                while not self._waiting:
                    self._lock.wait()
                job = self._waiting.popleft()
                self._running[job.session] = job
            try:
                self._run(index, job)
            finally:
                with self._lock:
                    del self._running[job.session]

    def _run(self, index: int, job: WebJob) -> None:
        job.started = time.perf_counter()
        job.events.put(("started", None))
        last: list[Progress] = []

        def pixels(progress: Progress) -> int:
            width, height = long_side_size(job.content_size, progress.size)
            return width * height

        def report(progress: Progress) -> None:
            # Chunks of a few steps only: in a chunk of one or two, the per-chunk overhead dominates.
            if last and last[-1].size == progress.size and progress.step - last[-1].step >= 3:
                seconds = (progress.elapsed - last[-1].elapsed) / (progress.step - last[-1].step)
                self.times.add(pixels(progress), seconds)
            last.append(progress)
            job.events.put(("progress", progress))

        try:
            with self._device(index):
                engines = self._engines[index]
                engine = engines.get(job.engine_key) or engines.setdefault(job.engine_key, self._make_engine(job.engine_key))
                job.engine = engine
                for event in engine.iter_stylize(job.job, job.cancel):
                    if isinstance(event, Result):
                        image = event.image
                    else:
                        report(event)
            if len(last) > 1:  # what the first report took beyond its steps: targets and tracing
                first = last[0]
                startup = max(0.0, first.elapsed - first.step * (self.times.per_step(pixels(first)) or 0.0))
                self.times.startup = (self.times.startup + startup) / 2
            job.events.put(("done", image))
        except StyleplugError as error:
            log.warning("demo job of session %s: %s", job.session[:8], error)
            job.events.put(("error", error))
        except Exception as error:  # keep serving; one line in the page and in the log
            log.warning("demo job of session %s failed: %s: %s", job.session[:8], type(error).__name__, one_line(error))
            log.debug("traceback", exc_info=True)
            job.events.put(("error", StyleplugError(f"unexpected {type(error).__name__}: {one_line(error)}")))


def calibrate(jobs: JobQueue, content: str, style: str, content_size: tuple[int, int], engine_key: tuple[Any, ...],
              sizes: tuple[int, ...] = (128, 256), steps: int = 15) -> None:
    """Measure the step time at two sizes with a short job each (in the workers' queue, as visitors'
    jobs run), so the page can estimate a job's time before anything else has run."""
    for size in sizes:
        job = WebJob("calibration", engine_key, Job(content=content, style=style, size=size, steps=steps, scales="none",
                                                    tolerance=0), content_size)
        jobs.submit(job)
        for kind, payload in jobs.follow(job):
            if kind == "error":
                log.warning("could not measure the step time at %d px: %s", size, payload)
                return
    log.info("measured step times; start-up %.1f s", jobs.times.startup)
