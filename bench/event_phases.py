"""What writing a request's reward events in per-member phases saves (issue 19): 1,000-event
requests (earns, and redeems of people with points, ~12 % by default, spread through the
request as a brand's stream of activity is) through ``POST /v1/rewards/events`` on a live hub
in this process, on SQLite and PostgreSQL, against the way before in the same run.

* ``before``: ``partners.rewards.service.phases_of`` replaced in this process by the old plan,
  a new batch at every change from spends back to earns across the request (the baseline:
  the code as it was);
* ``phases``: the real code, one phase per change from a member's spend to that member's earn.

Both cases interleaved in every round (each first in turn; one unmeasured warm-up round).
Median request time per case over ``--rounds``, its ratio to ``before``, and the phases (write
batches) per request. Writes bench/results/event_phases.json.

    .venv/bin/python -m bench.event_phases --rounds 5 --requests 8
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# Read when tests.conftest is imported: the PostgreSQL server the hubs' databases go on.
os.environ.setdefault("HUB_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")

from partners.rewards import service
from tests.api.matching_helpers import email, rec
from tests.conftest import launch_hub
from tests.rewards.helpers import SHARE, brands, event, send

CURRENT = service.phases_of


def batches_before(members: Sequence[int], earns: Sequence[bool]) -> list[int]:
    """The old plan: consecutive earns together, then consecutive spends, whoever's they are."""
    plan, phase, spent = [], 0, False
    for earn in earns:
        if earn and spent:
            phase += 1
        spent = not earn
        plan.append(phase)
    return plan


def run(backend: str, people: int, rounds: int, requests: int, redeems: float) -> dict[str, Any]:
    rng = random.Random(19)
    earned = [0] * people

    def body() -> list[dict[str, Any]]:
        out = []
        for _ in range(1000):
            n = rng.randrange(people)
            if earned[n] >= 5 and rng.random() < redeems:
                earned[n] -= 5
                out.append(event(uuid.uuid4().hex, n, "redeem", 5))
            else:
                earned[n] += 10
                out.append(event(uuid.uuid4().hex, n, "earn", 10))
        return out

    planned: list[int] = []

    def counting(plan: Any) -> Any:
        def phases(members: Sequence[int], earns: Sequence[bool]) -> list[int]:
            out = list(plan(members, earns))
            planned.append(max(out, default=-1) + 1)
            return out

        return phases

    cases = {"before": counting(batches_before), "phases": counting(CURRENT)}
    with tempfile.TemporaryDirectory() as tmp, launch_hub(backend, Path(tmp)) as hub:
        pair = brands(hub)
        pair.a.upload(hub, [rec(email(f"m{n}"), f"a-{n}", SHARE) for n in range(people)])
        for _ in range(5):  # points to spend
            assert send(hub, pair.a, body()).status_code == 200
        times: dict[str, list[float]] = {name: [] for name in cases}
        batches: dict[str, list[int]] = {name: [] for name in cases}
        names = list(cases)
        try:
            for round_ in range(rounds + 1):  # round 0 warms up, unmeasured
                for name in names[round_ % 2 :] + names[: round_ % 2]:
                    service.phases_of = cases[name]  # type: ignore[assignment]
                    bodies = [body() for _ in range(requests)]
                    planned.clear()
                    spent = []
                    for request in bodies:
                        began = time.perf_counter()
                        response = send(hub, pair.a, request)
                        spent.append(time.perf_counter() - began)
                        assert response.status_code == 200, response.text
                    if round_:
                        times[name].append(statistics.median(spent))
                        batches[name] += planned
        finally:
            service.phases_of = CURRENT  # type: ignore[assignment]
    base = statistics.median(times["before"])
    return {
        name: {
            "request_ms": 1000 * statistics.median(values),
            "ratio_to_before": statistics.median(values) / base,
            "phases_per_request": statistics.median(batches[name]),
            "rounds_ms": [round(1000 * v, 1) for v in values],
        }
        for name, values in times.items()
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--people", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=8, help="1,000-event requests per case")
    parser.add_argument("--redeems", type=float, default=0.12, help="share of redeems")
    args = parser.parse_args()
    report: dict[str, Any] = {"people": args.people, "events_per_request": 1000}
    for backend in args.backends.split(","):
        report[backend] = run(backend, args.people, args.rounds, args.requests, args.redeems)
        print(json.dumps({backend: report[backend]}, indent=2), flush=True)
    out = Path(__file__).parent / "results" / "event_phases.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
