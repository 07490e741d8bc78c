"""Found by the soak (issue 19), fixed by :mod:`hub.core.horizon`. On PostgreSQL,
``rewards_sync`` keeps a cursor on ``reward_events.id``, but a request draws its events' ids
when it inserts them, not when it commits. A request that drew its ids first and committed
after a faster one (whose ids are higher) was skipped for good by a sync that ran in between:
its events never reached the feeds. Now the sync reads only up to the committed horizon.

Played with real requests: a redeem is held (the test holds a row lock on the lot it spends)
after it inserted its event, while an earn for someone else commits and a sync runs."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import PG_URL
from tests.rewards.helpers import SHARE, brands, enrol, event, launch_jobs_hub, run_job, send

pytestmark = [
    pytest.mark.skipif(not PG_URL, reason="concurrent writers are PostgreSQL's: set it"),
]


def wait_until_blocked(database_url: str, within: float = 20) -> None:
    deadline = time.monotonic() + within
    with psycopg.connect(database_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            waiting = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'"
            ).fetchone()
            if waiting and waiting[0]:
                return
            time.sleep(0.05)
    raise AssertionError("the redeem never waited for the lot")


def test_an_event_committed_after_a_later_one_still_reaches_the_feed(tmp_path: Path) -> None:
    with launch_jobs_hub("postgres", tmp_path) as hub:
        pair = brands(hub)
        for n in (1, 2):
            enrol(hub, pair.a, n, f"a-{n}", SHARE)
            enrol(hub, pair.b, n, f"b-{n}", SHARE)
        assert send(hub, pair.a, [event("earn-1", 1, "earn", 10)]).status_code == 200
        run_job(hub, "rewards_sync")
        answers: list[Any] = []
        lots = psycopg.connect(hub.database_url)
        lots.execute("SELECT id FROM reward_lots FOR UPDATE")  # member 1's only lot
        slow = threading.Thread(
            target=lambda: answers.append(send(hub, pair.a, [event("redeem-1", 1, "redeem", 5)]))
        )
        slow.start()
        wait_until_blocked(hub.database_url)  # its event is inserted, its id drawn
        assert send(hub, pair.a, [event("earn-2", 2, "earn", 10)]).status_code == 200
        threading.Timer(3.0, lots.commit).start()  # whatever the sync waits for, it ends
        run_job(hub, "rewards_sync")
        slow.join(timeout=30)
        lots.close()
        assert answers
        assert answers[0].status_code == 200
        run_job(hub, "rewards_sync")
        with psycopg.connect(hub.database_url) as conn:
            items = dict(
                conn.execute(
                    "SELECT e.event_id, count(f.seq) FROM reward_events e "
                    "LEFT JOIN reward_feed f ON f.event_ref = e.id GROUP BY 1"
                ).fetchall()
            )
        assert items == {"earn-1": 1, "redeem-1": 1, "earn-2": 1}
