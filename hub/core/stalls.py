"""A watchdog for the event loop: when the loop does not come round for ``threshold`` seconds,
the log says so, for how long, and where the loop's thread was.

Every request of a ``hub serve`` process is handled on one event loop. Work that keeps the loop
(CPU in a handler, a blocking call, a long collection) or a thread that keeps the GIL delays
every request of the process at once: the tail latency of routes that do little themselves.
A beat task notes the time every ``interval``; a thread watches the beat, and when it is late
by ``threshold`` it samples the loop thread's stack (``sys._current_frames``) a few times while
the stall lasts. When the loop comes back, one warning names the stall's length and the most
often sampled innermost frames of the hub's own code (``hub_frames``), and the metric
``hub_event_loop_stalls`` / ``hub_event_loop_stalled_seconds`` counts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import AsyncIterator, Iterator

import structlog
from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

log = structlog.get_logger("hub.stalls")

OWN_CODE = ("/hub/", "/partners/", "/matching/")
FRAMES = 6  # innermost frames kept per sample
SAMPLES = 20  # at most, per stall


class StallWatch:
    """Watches one event loop from a daemon thread (start it from the loop's thread)."""

    def __init__(self, threshold: float, interval: float = 0.05) -> None:
        self.threshold = threshold
        self.interval = interval
        self.stalls = 0
        self.stalled_seconds = 0.0
        self._beat = time.monotonic()
        self._loop_thread = threading.get_ident()
        self._loop = asyncio.get_running_loop()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="stall-watch", daemon=True)

    async def beat(self) -> None:
        while True:
            self._beat = time.monotonic()
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _watch(self) -> None:
        samples: Counter[tuple[str, ...]] = Counter()
        since: float | None = None
        while not self._stop.wait(self.interval):
            beat = self._beat
            late = time.monotonic() - beat
            if late >= self.threshold:
                since = beat if since is None else since
                if sum(samples.values()) < SAMPLES:
                    samples[self._where()] += 1
            elif since is not None:
                self._report(beat - since - self.interval, samples)
                samples, since = Counter(), None

    def _where(self) -> tuple[str, ...]:
        frame = sys._current_frames().get(self._loop_thread)
        if frame is None:
            return ()
        stack = traceback.extract_stack(frame)
        own = _own(stack)
        if not own:
            # Code run by SQLAlchemy's asyncio layer runs in a greenlet: its stack ends there.
            # The task it runs for still shows where in the hub it was awaited from.
            task = asyncio.current_task(self._loop)
            if task is not None:
                frames = [(f, f.f_lineno) for f in task.get_stack()]
                own = _own(traceback.StackSummary.extract(iter(frames)))
        return tuple(f"{_short(f.filename)}:{f.lineno} {f.name}" for f in (own or stack)[-FRAMES:])

    def _report(self, seconds: float, samples: Counter[tuple[str, ...]]) -> None:
        self.stalls += 1
        self.stalled_seconds += seconds
        where, seen = samples.most_common(1)[0] if samples else ((), 0)
        log.warning(
            "event loop stalled",
            seconds=round(seconds, 3),
            hub_frames=list(where),
            of_samples=f"{seen}/{sum(samples.values())}",
        )


def _own(stack: traceback.StackSummary) -> list[traceback.FrameSummary]:
    return [f for f in stack if any(part in f.filename for part in OWN_CODE)]


def _short(filename: str) -> str:
    for part in OWN_CODE:
        at = filename.rfind(part)
        if at >= 0:
            return filename[at + 1 :]
    return filename.rsplit("/", 2)[-1]


class _StallCollector(Collector):
    def __init__(self) -> None:
        self.watch: StallWatch | None = None

    def collect(self) -> Iterator[Metric]:
        watch = self.watch
        stalls = CounterMetricFamily(
            "hub_event_loop_stalls", "Times the event loop did not come round in time"
        )
        seconds = CounterMetricFamily(
            "hub_event_loop_stalled_seconds", "Seconds the event loop was stalled, summed"
        )
        stalls.add_metric([], watch.stalls if watch else 0)
        seconds.add_metric([], watch.stalled_seconds if watch else 0.0)
        yield stalls
        yield seconds


_collector = _StallCollector()
REGISTRY.register(_collector)


@contextlib.asynccontextmanager
async def watching(threshold: float) -> AsyncIterator[StallWatch | None]:
    """Watch the running loop while the block runs (``threshold`` 0: not at all)."""
    if threshold <= 0:
        yield None
        return
    watch = StallWatch(threshold)
    beat = asyncio.create_task(watch.beat())
    watch.start()
    _collector.watch = watch
    try:
        yield watch
    finally:
        watch.stop()
        beat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beat
        if _collector.watch is watch:
            _collector.watch = None
