"""The event loop's watchdog (hub/core/stalls.py) on a real loop: a blocking call is reported
once, with its length and where the loop was; waiting without blocking is not reported; the
metrics count what was reported."""

from __future__ import annotations

import asyncio
import time
import types

import pytest
import structlog
from prometheus_client import REGISTRY, generate_latest
from sqlalchemy.ext.asyncio import create_async_engine
from structlog.testing import capture_logs

from hub.core import stalls as stalls_module
from hub.core.logging import configure_logging
from hub.core.stalls import watching


def unbound_stall_log(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hub's logging binds each logger on its first use and keeps it
    (``configure_logging``). A stall logged by an earlier test of the process (a hub started
    in it) bound the module's logger to that configuration; once logging was configured again
    (the next hub), ``capture_logs`` no longer saw what it wrote (a fresh-clone CI run failed
    so). Each test here starts with a logger not bound yet."""
    monkeypatch.setattr(stalls_module, "log", structlog.get_logger("hub.stalls"))


@pytest.fixture(autouse=True)
def _unbound_stall_log(monkeypatch: pytest.MonkeyPatch) -> None:
    unbound_stall_log(monkeypatch)


def test_the_log_is_captured_after_two_hubs_configured_logging(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What the fixture is for: the stall logger used under one configuration of the hub's
    logging, then logging configured again (two hubs started in one process); with a logger
    not bound yet, the capture sees the report."""
    configure_logging("INFO")
    stalls_module.log.info("warm", fixture="bound under the first configuration")
    configure_logging("INFO")
    with capture_logs() as missed:
        stalls_module.log.warning("event loop stalled", seconds=1.0)
    assert missed == []  # the trap itself
    unbound_stall_log(monkeypatch)
    with capture_logs() as logs:
        stalls_module.log.warning("event loop stalled", seconds=1.0)
    assert [e["event"] for e in logs] == ["event loop stalled"]


def block_the_loop_for(seconds: float) -> None:
    time.sleep(seconds)


def _metric(name: str) -> float:
    for line in generate_latest(REGISTRY).decode().splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    raise AssertionError(f"{name} is not exported")


def test_a_blocking_call_is_reported_once_with_its_length_and_place() -> None:
    async def run() -> tuple[int, float, int, float]:
        async with watching(0.2) as watch:
            assert watch is not None
            await asyncio.sleep(0.3)  # the loop comes round: nothing to report
            block_the_loop_for(0.8)
            await asyncio.sleep(0.3)  # the watch sees the loop back
            stalls, seconds = watch.stalls, watch.stalled_seconds
            exported = (int(_metric("hub_event_loop_stalls_total")), seconds)
        return stalls, seconds, *exported

    with capture_logs() as logs:
        stalls, seconds, exported, exported_seconds = asyncio.run(run())
    stalled = [e for e in logs if e["event"] == "event loop stalled"]
    assert stalls == 1
    assert len(stalled) == 1
    assert 0.7 <= stalled[0]["seconds"] <= 1.2
    assert abs(seconds - stalled[0]["seconds"]) < 0.01
    assert any("block_the_loop_for" in frame for frame in stalled[0]["hub_frames"])
    assert exported == 1
    assert exported_seconds >= 0.7


def test_a_loop_that_only_waits_is_never_reported_and_zero_watches_nothing() -> None:
    async def run() -> int:
        async with watching(0.2) as watch:
            assert watch is not None
            for _ in range(5):
                await asyncio.sleep(0.1)
                block_the_loop_for(0.05)  # short blocks, well under the threshold
            stalls = watch.stalls
        async with watching(0) as none:
            assert none is None
        return stalls

    with capture_logs() as logs:
        assert asyncio.run(run()) == 0
    assert not [e for e in logs if e["event"] == "event loop stalled"]


def _block_a_connection(_: object) -> None:
    time.sleep(0.6)


def test_a_stall_inside_sqlalchemy_s_greenlet_names_the_task_that_awaited_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SQLAlchemy's asyncio layer runs synchronous code in a greenlet, whose stack ends at the
    greenlet: the report then names where the task awaited it."""
    monkeypatch.setattr("hub.core.stalls.OWN_CODE", ("/tests/unit/",))
    # A blocking callable from outside the "own" code, as SQLAlchemy's or a driver's would be.
    code = _block_a_connection.__code__.replace(co_filename="<lib>")
    block = types.FunctionType(code, globals())

    async def awaited_from_here() -> None:
        engine = create_async_engine("sqlite+aiosqlite://")
        try:
            async with watching(0.2), engine.connect() as conn:
                await conn.run_sync(block)
                await asyncio.sleep(0.3)
        finally:
            await engine.dispose()

    with capture_logs() as logs:
        asyncio.run(awaited_from_here())
    stalled = [e for e in logs if e["event"] == "event loop stalled"]
    assert len(stalled) == 1
    assert any("awaited_from_here" in frame for frame in stalled[0]["hub_frames"])
