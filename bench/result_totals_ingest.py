"""What the offer results' running totals (``matching.result_totals``, migration 0022) cost on
the rewards ingest path: events per second through ``POST /v1/rewards/events`` (1,000 earns
per request, a live hub in this process), on SQLite and PostgreSQL, four cases interleaved in
every round of the same run (each case first in turn; one unmeasured warm-up round):

* ``before``: the hub without the totals: ``add_applied`` replaced by a no-op in this process
  (the baseline: the code as it was);
* ``no offer``: a brand with no measured offer (the real code: one indexed count, nothing
  else);
* ``1 offer`` / ``3 offers``: a brand with one / three active offers whose totals are kept
  (one INSERT … SELECT … ON CONFLICT DO UPDATE per request, every event in every window).

``before`` sends as the three-offer brand (same data, same people). Median events/s per case
over ``--rounds``; ratios against ``before``; and, less exposed to the machine's load, the
time spent inside ``add_applied`` per request (timed in the hub's process) against the
request's time. Writes bench/results/result_totals_ingest.json.

    .venv/bin/python bench/result_totals_ingest.py --rounds 5 --requests 8
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# Read when tests.conftest is imported: the PostgreSQL server the hubs' databases go on.
os.environ.setdefault("HUB_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")

from matching import result_totals
from tests.api.matching_helpers import email, rec
from tests.api.test_offer_result_totals import approve, propose
from tests.api.test_offer_results import World, world
from tests.conftest import launch_hub
from tests.rewards.helpers import SHARE, brands, event, send


async def _no_totals(*_: Any, **__: Any) -> None:
    return None


def run(backend: str, people: int, rounds: int, requests: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp, launch_hub(backend, Path(tmp)) as hub:
        one = world(hub, people=people)
        three = world(hub, people=people)
        for _ in range(2):
            approve(hub, three, propose(hub, three))
        pair = brands(hub)
        bare = World(pair.a, pair.b, pair.partnership, {}, "", uuid.uuid4().hex[:6])
        bare.a.upload(
            hub, [rec(email(f"m{bare.tag}{n}"), f"a-{bare.tag}{n}", SHARE) for n in range(people)]
        )
        cases: dict[str, tuple[World, bool]] = {
            "before": (three, False),
            "no offer": (bare, True),
            "1 offer": (one, True),
            "3 offers": (three, True),
        }
        kept = result_totals.add_applied
        spent: list[float] = []  # seconds inside add_applied, per request of a measured case

        async def timed_add(*args: Any, **kwargs: Any) -> None:
            began = time.perf_counter()
            try:
                await kept(*args, **kwargs)
            finally:
                spent.append(time.perf_counter() - began)

        rates: dict[str, list[float]] = {name: [] for name in cases}
        inside: dict[str, list[float]] = {name: [] for name in cases}
        names = list(cases)
        for round_ in range(rounds + 1):  # round 0 warms up, unmeasured
            order = names[round_ % 4 :] + names[: round_ % 4]  # each case in each position
            for name in order:
                w, totals = cases[name]
                bodies = [
                    [
                        event(
                            f"{w.tag}-{uuid.uuid4().hex}",
                            f"{w.tag}{int(n)}",
                            "earn",
                            10,
                            occurred_at=datetime.now(UTC).isoformat(),
                            amount_minor=1000,
                        )
                        for n in rng.integers(0, people, 1000)
                    ]
                    for _ in range(requests)
                ]
                result_totals.add_applied = timed_add if totals else _no_totals  # type: ignore[assignment]
                spent.clear()
                try:
                    began = time.perf_counter()
                    for body in bodies:
                        response = send(hub, w.a, body)
                        assert response.status_code == 200, response.text
                    if round_:
                        rates[name].append(1000 * requests / (time.perf_counter() - began))
                        inside[name].append(1000 * sum(spent) / requests)
                finally:
                    result_totals.add_applied = kept
        base = statistics.median(rates["before"])
        return {
            name: {
                "events_per_second": statistics.median(values),
                "ratio_to_before": statistics.median(values) / base,
                "totals_ms_per_request": statistics.median(inside[name]),
                "request_ms": 1000 * 1000 / statistics.median(values),
                "rounds": values,
            }
            for name, values in rates.items()
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--people", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=8, help="1,000-event requests per case")
    parser.add_argument("--seed", type=int, default=16)
    args = parser.parse_args()
    report: dict[str, Any] = {"people": args.people, "events_per_request": 1000}
    for backend in args.backends.split(","):
        report[backend] = run(backend, args.people, args.rounds, args.requests, args.seed)
        print(json.dumps({backend: report[backend]}, indent=2), flush=True)
    out = Path(__file__).parent / "results" / "result_totals_ingest.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
