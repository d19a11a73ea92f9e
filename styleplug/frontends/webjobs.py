"""The web demo's job queue: a bounded, fair queue of stylisation jobs served by worker threads.

Kept apart from Gradio so that its rules hold whatever front end calls it:
- each visitor (session) has at most one job queued or running, and controls only that job;
- each client (network address) has a bounded share of the queue, however many sessions it opens;
- the queue is bounded; a visitor who cannot join is told how many jobs are ahead;
- a job whose visitor is not listening for its result is dropped within seconds;
- each worker keeps a few engines, the least recently used are let go;
- each worker owns its engines and runs one job at a time, to its real end: a cancelled job keeps
  its worker until its thread has finished the chunk it was in, so two jobs never share a worker;
- cancelling never waits: it sets an event, or withdraws a job that has not started.
"""

from __future__ import annotations

import logging
import queue
from collections import OrderedDict
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from ..core.engine import Engine, Progress, Result
from ..run.job import MAX_SIZE, Job, plan_scales
from ..errors import StyleplugError, UsageError, one_line
from ..run.image import long_side_size

log = logging.getLogger("styleplug")
# One line per job for the operator: who, how large, how long, how it ended (never file contents).
access_log = logging.getLogger("styleplug.access")


@dataclass(frozen=True)
class Limits:
    """What the server accepts, whatever a client sends; set by the operator."""

    max_size: int | None = None  # None: the demo takes 512 px on a CPU, 2048 on a GPU
    max_steps: int = 1000
    max_pixels: int = 40_000_000  # per uploaded image, checked from the header before decoding
    max_upload_mb: int = 20
    max_queue: int = 8  # jobs waiting, beyond those running
    max_per_client: int = 2  # jobs one network address may have queued or running
    max_engines: int = 2  # engines (network, weights, precision, options) each worker keeps
    allow_downloads: bool = False  # offer weight sources that the server would have to download
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
    compiled: bool = False  # whether its time included compiling (the first job of its shape on its worker)
    client: str = "local"  # the visitor's network address, for their share of the queue
    submitted: float = field(default_factory=time.perf_counter)


class JobQueue:
    """A bounded queue of ``WebJob``s served by ``workers`` threads, each with its own engines.

    ``make_engine(key)`` builds an engine for a job's ``engine_key``; ``device(worker)`` gives the
    context a worker runs in (e.g. a GPU's ``device_scope``).
    """

    def __init__(self, make_engine: Callable[[tuple[Any, ...]], Engine], limits: Limits, workers: int = 1,
                 device: Callable[[int], AbstractContextManager[Any]] = lambda worker: nullcontext()) -> None:
        self.limits, self.times = limits, StepTimes()
        self._make_engine, self._device = make_engine, device
        self._waiting: deque[WebJob] = deque()
        self._running: dict[str, WebJob] = {}
        self._lock = threading.Condition()
        self._engines: list[OrderedDict[tuple[Any, ...], Engine]] = [OrderedDict() for _ in range(workers)]
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
            if sum(other.client == job.client for other in self._jobs()) >= self.limits.max_per_client:
                raise UsageError(f"your address already has {self.limits.max_per_client} jobs queued or running on this "
                                 "server; wait for one to finish.")
            if len(self._waiting) >= self.limits.max_queue:
                wait = self._wait_seconds(len(self._waiting))
                about = f", about {wait:.0f} s" if wait is not None else ""
                raise UsageError(f"the server is busy: {len(self._waiting) + len(self._running)} jobs ahead of you"
                                 f"{about}; try again later.")
            self._waiting.append(job)
            self._lock.notify()

    def has_job(self, session: str) -> bool:
        with self._lock:
            return any(job.session == session for job in self._jobs())

    def _jobs(self) -> list[WebJob]:
        return [*self._running.values(), *self._waiting]

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

    def follow(self, job: WebJob, poll: float = 1.0, listening: Callable[[], bool] = lambda: True,
               grace: float = 5.0) -> Iterator[tuple[str, Any]]:
        """The job's events as they come: ("queued", (ahead, seconds)) while it waits, then
        ("progress", Progress), and a last ("done", image), ("error", StyleplugError) or ("withdrawn", None).

        ``listening()`` says whether the visitor still receives the events; once it has said no for
        ``grace`` seconds (a client takes a moment to open its stream), the job is cancelled."""
        deaf_since: float | None = None
        while True:
            now = time.perf_counter()
            if listening():
                deaf_since = None
            elif now - (deaf_since := deaf_since or now) >= grace and not job.cancel.is_set():
                log.warning("demo job of client %s: nobody is listening; cancelled", job.client)
                self.cancel(job)
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
            last = ("error", StyleplugError("the job ended without a result"))
            try:
                last = self._run(index, job)
            finally:
                with self._lock:
                    del self._running[job.session]
                job.events.put(last)  # once the job is gone: its visitor may start the next one at once

    def _engine(self, index: int, key: tuple[Any, ...]) -> Engine:
        """Worker ``index``'s engine for ``key``: kept among its ``max_engines`` most recently used."""
        engines = self._engines[index]
        if key in engines:
            engines.move_to_end(key)
            return engines[key]
        while len(engines) >= self.limits.max_engines:
            engines.popitem(last=False)  # its network, compiled steps and cached targets go with it
        engines[key] = self._make_engine(key)
        return engines[key]

    def _run(self, index: int, job: WebJob) -> tuple[str, Any]:
        """Run ``job``, reporting its progress; return its last event."""
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

        outcome = "error"
        try:
            with self._device(index):
                job.engine = engine = self._engine(index, job.engine_key)
                for event in engine.iter_stylize(job.job, job.cancel):
                    if isinstance(event, Result):
                        image = event.image
                    else:
                        report(event)
                        job.compiled = job.compiled or event.compiled
            if len(last) > 1:  # what the first report took beyond its steps: targets and tracing
                first = last[0]
                startup = max(0.0, first.elapsed - first.step * (self.times.per_step(pixels(first)) or 0.0))
                self.times.startup = (self.times.startup + startup) / 2
            outcome = "stopped" if job.cancel.is_set() else "done"
            return "done", image
        except StyleplugError as error:
            log.warning("demo job of session %s: %s", job.session[:8], error)
            return "error", error
        except Exception as error:  # keep serving; one line in the page and in the log
            log.warning("demo job of session %s failed: %s: %s", job.session[:8], type(error).__name__, one_line(error))
            log.debug("traceback", exc_info=True)
            return "error", StyleplugError(f"unexpected {type(error).__name__}: {one_line(error)}")
        finally:
            width, height = job.content_size
            access_log.info("job client=%s content=%dx%d size=%d steps=%d/%d waited=%.1fs ran=%.1fs outcome=%s",
                            job.client, width, height, job.job.size, last[-1].step if last else 0, job.job.steps,
                            job.started - job.submitted, time.perf_counter() - job.started, outcome)


class Gate:
    """Bounds quick calls that run in the caller's thread (the Instant tab): ``running`` at once,
    ``waiting`` more in line, one per client. Beyond that a call is refused at once, so a flood
    costs the server nothing."""

    def __init__(self, running: int, waiting: int) -> None:
        self._slots = threading.Semaphore(running)
        self._capacity = running + waiting
        self._clients: set[str] = set()
        self._lock = threading.Lock()

    @contextmanager
    def enter(self, client: str) -> Iterator[None]:
        with self._lock:
            if client in self._clients:
                raise UsageError("you already have a painting in progress; wait for it to finish.")
            if len(self._clients) >= self._capacity:
                raise UsageError("the server is busy painting for others; try again in a few seconds.")
            self._clients.add(client)
        try:
            with self._slots:
                yield
        finally:
            with self._lock:
                self._clients.discard(client)


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
