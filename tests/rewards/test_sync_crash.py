"""A `hub worker` SIGKILLed at random points while rewards_sync works loses nothing and applies
nothing twice: every event reaches the other brand's feed exactly once, and the webhook
deliveries hold every feed item exactly once."""

from __future__ import annotations

import json
import random
import signal
import time
from collections import Counter
from uuid import UUID

from sqlalchemy import select

from hub.core.db import create_hub_sync_engine
from partners.rewards.models import RewardFeedItem
from tests.conftest import Hub, execute_sql
from tests.jobs.helpers import start_worker
from tests.rewards.helpers import SHARE, brands, enrol, event, ledger_problems, send

EVENTS = 6000
KILLS = 5


def feed_rows(hub: Hub, reader: str) -> list[tuple[int, int]]:
    """(seq, event_ref) of the reader's feed, read through the model (GUIDs on both DBs)."""
    engine = create_hub_sync_engine(hub.database_url, writer=False)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(RewardFeedItem.seq, RewardFeedItem.event_ref).where(
                    RewardFeedItem.partner_id == UUID(reader)
                )
            )
            return [(int(seq), int(ref)) for seq, ref in rows]
    finally:
        engine.dispose()


def feed_refs(hub: Hub, reader: str) -> list[int]:
    return [ref for _, ref in feed_rows(hub, reader)]


def test_sync_survives_sigkill_at_random_points(hub: Hub) -> None:
    pair = brands(hub)
    hub.as_admin("PATCH", f"/v1/partners/{pair.b.id}", json={"webhook_url": "http://127.0.0.1:9/"})
    secret = hub.as_admin("POST", f"/v1/partners/{pair.b.id}/webhook-secret")
    assert secret.status_code == 201, secret.text
    for n in range(20):
        enrol(hub, pair.a, f"k{n}", f"a-k{n}", SHARE)
        enrol(hub, pair.b, f"k{n}", f"b-k{n}", SHARE)
    for start in range(0, EVENTS, 1000):
        batch = [event(f"c{i}", f"k{i % 20}", "earn", 1) for i in range(start, start + 1000)]
        assert send(hub, pair.a, batch).status_code == 200
    env = {
        "HUB_JOBS_REWARDS_SYNC_SECONDS": "0.2",
        "HUB_REWARDS_SYNC_BATCH": "50",
        "HUB_JOBS_LEASE_SECONDS": "2",
    }
    rng = random.Random(7)
    reader = pair.b.id
    for _ in range(KILLS):
        before = len(feed_refs(hub, reader))
        worker = start_worker(hub.database_url, hub.data_dir, **env)
        deadline = time.monotonic() + 30
        while len(feed_refs(hub, reader)) == before and time.monotonic() < deadline:
            time.sleep(0.02)  # until this worker is at work...
        time.sleep(rng.uniform(0.0, 0.3))  # ...then somewhere inside a batch or between two
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    assert len(feed_refs(hub, reader)) < EVENTS, "the kills came too late to test anything"
    worker = start_worker(hub.database_url, hub.data_dir, **env)
    try:
        deadline = time.monotonic() + 90
        while len(feed_refs(hub, reader)) < EVENTS and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
    refs = feed_refs(hub, reader)
    assert len(refs) == EVENTS
    assert len(set(refs)) == EVENTS
    # Every feed item was queued for the webhook exactly once.
    queued: Counter[int] = Counter()
    for (payload,) in execute_sql(hub.database_url, "SELECT payload FROM webhook_deliveries"):
        body = payload if isinstance(payload, dict) else json.loads(payload)
        queued.update(item["id"] for item in body["items"])
    feed_ids = {seq for seq, _ in feed_rows(hub, reader)}
    assert set(queued) == feed_ids
    assert max(queued.values()) == 1
    runs = execute_sql(hub.database_url, "SELECT status FROM job_runs WHERE name = 'rewards_sync'")
    assert "abandoned" in {status for (status,) in runs}
    assert ledger_problems(hub.database_url) == []
