"""The end of a soak run: let the jobs catch up, then check that nothing was lost or doubled.

* **ledger**: the postings sum to zero, every transaction balances, every lot's remaining
  points equal its postings (the checks the rewards tests run after each test);
* **feeds**: no (reader, event) twice; every event of a *stable* person (consented to
  everything at every brand, never changed) in every other brand's feed; each reader's feed
  read through the API from the start holds each item once and as many as the database;
* **webhooks**: every feed item reached its brand's receiver in exactly one webhook id, each
  id accepted once, every signature verified, nothing left pending;
* **balances**: sampled members' balances, as the API answers them, equal a recomputation from
  the postings (local wallet at the brand + coalition wallet);
* **audit chain**: ``hub admin audit verify`` against the signed head the API published, and
  the chain read through ``GET /v1/audit/chain`` links up to that head.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import psycopg

from bench.soak.coalition import Coalition, token
from bench.soak.population import ref
from bench.soak.receiver import Receiver
from bench.soak.stack import Stack
from bench.soak.world import World


def _scalar(conn: psycopg.Connection[Any], sql: str, *params: Any) -> Any:
    row = conn.execute(sql, params).fetchone()
    return row[0] if row else None


# -- catching up ----------------------------------------------------------------------------
def run_job(
    http: httpx.Client, conn: psycopg.Connection[Any], name: str, timeout: float
) -> dict[str, Any]:
    """Ask for a run of ``name`` and wait until a run that started after the ask finished."""
    before = _scalar(conn, "SELECT coalesce(max(id), 0) FROM job_runs WHERE name = %s", name)
    asked = http.post(f"/v1/jobs/{name}/run")
    if asked.status_code != 202:
        raise RuntimeError(f"POST /v1/jobs/{name}/run: {asked.status_code} {asked.text}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = conn.execute(
            "SELECT id, status, counts FROM job_runs WHERE name = %s AND id > %s "
            "AND finished_at IS NOT NULL ORDER BY id LIMIT 1",
            (name, before),
        ).fetchone()
        if row:
            return {"id": row[0], "status": row[1], "counts": row[2]}
        time.sleep(0.5)
    raise RuntimeError(f"no run of {name} finished within {timeout} s")


QUIET = (
    "SELECT (SELECT coalesce(max(id), 0) FROM reward_events), "
    "(SELECT coalesce(max(seq), 0) FROM consent_events)"
)


def wait_for_quiet(conn: psycopg.Connection[Any], deadline: float, polls: int = 5) -> float:
    """Until no request is still writing: the newest event and consent change unchanged
    ``polls`` times in a row, 2 s apart (the users finish their last request before the load
    stops, but a request a client gave up on may still commit: the sync must not be audited
    before it)."""
    started, same, last = time.monotonic(), 0, None
    while same < polls and time.monotonic() < deadline:
        now = conn.execute(QUIET).fetchone()
        same = same + 1 if now == last else 0
        last = now
        time.sleep(2)
    return round(time.monotonic() - started, 1)


def catch_up(stack: Stack, coalition: Coalition, timeout: float) -> dict[str, Any]:
    """Uploads finished, the feeds synced to the last event, webhooks all sent."""
    out: dict[str, Any] = {}
    deadline = time.monotonic() + timeout
    http = httpx.Client(base_url=stack.urls[0], timeout=60)

    def authorised() -> httpx.Client:
        """A fresh admin token for each job run: the catch-up can outlast a token's life."""
        http.headers["Authorization"] = (
            f"Bearer {token(http, coalition.admin_id, coalition.admin_secret)}"
        )
        return http

    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        out["quiet_after_seconds"] = wait_for_quiet(conn, deadline)
        while _scalar(
            conn,
            "SELECT count(*) FROM identifier_uploads WHERE status IN ('pending', 'processing')",
        ):
            if time.monotonic() > deadline:
                out["uploads_unfinished"] = True
                break
            time.sleep(1)
        syncs = []
        while time.monotonic() < deadline:
            run = run_job(authorised(), conn, "rewards_sync", deadline - time.monotonic())
            syncs.append(run)
            counts = run["counts"] or {}
            if (
                run["status"] == "succeeded"
                and not counts.get("events")
                and not counts.get("consent_events")
            ):
                break
        out["final_syncs"] = syncs
        pending = None
        while time.monotonic() < deadline:
            pending = _scalar(
                conn, "SELECT count(*) FROM webhook_deliveries WHERE status = 'pending'"
            )
            if not pending:
                break
            run_job(authorised(), conn, "webhook_redelivery", deadline - time.monotonic())
        out["webhooks_pending_at_end"] = pending
    http.close()
    return out


# -- checks ---------------------------------------------------------------------------------
def ledger(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    unbalanced = conn.execute(
        "SELECT txn FROM reward_postings GROUP BY txn HAVING sum(amount) <> 0 LIMIT 5"
    ).fetchall()
    # Postings summed per lot first, then joined: the planner's nested loop over the join
    # itself took minutes at 100k lots.
    lots = conn.execute(
        "SELECT l.id FROM reward_lots l LEFT JOIN (SELECT lot_id, sum(amount) AS points "
        "FROM reward_postings WHERE lot_id IS NOT NULL GROUP BY lot_id) p ON p.lot_id = l.id "
        "WHERE coalesce(p.points, 0) <> l.remaining LIMIT 5"
    ).fetchall()
    out = {
        "postings_sum": int(_scalar(conn, "SELECT coalesce(sum(amount), 0) FROM reward_postings")),
        "postings": int(_scalar(conn, "SELECT count(*) FROM reward_postings")),
        "events": int(_scalar(conn, "SELECT count(*) FROM reward_events")),
        "unbalanced_transactions": [t for (t,) in unbalanced],
        "lots_disagreeing_with_postings": [i for (i,) in lots],
        "negative_lots": int(_scalar(conn, "SELECT count(*) FROM reward_lots WHERE remaining < 0")),
    }
    out["ok"] = (
        out["postings_sum"] == 0
        and not out["unbalanced_transactions"]
        and not out["lots_disagreeing_with_postings"]
        and not out["negative_lots"]
    )
    return out


def feeds(
    conn: psycopg.Connection[Any], stack: Stack, coalition: Coalition, world: World
) -> dict[str, Any]:
    doubled = _scalar(
        conn,
        "SELECT count(*) FROM (SELECT partner_id, event_ref FROM reward_feed "
        "WHERE event_ref IS NOT NULL GROUP BY 1, 2 HAVING count(*) > 1) d",
    )
    stable_events = _scalar(conn, "SELECT count(*) FROM reward_events WHERE event_id LIKE 's-%%'")
    missing = conn.execute(
        "SELECT e.id, e.partner_id, r.id FROM reward_events e "
        "JOIN partners r ON r.id <> e.partner_id WHERE e.event_id LIKE 's-%%' "
        "AND NOT EXISTS (SELECT 1 FROM reward_feed f "
        "WHERE f.partner_id = r.id AND f.event_ref = e.id) ORDER BY e.id"
    ).fetchall()
    out: dict[str, Any] = {
        "feed_items": int(_scalar(conn, "SELECT count(*) FROM reward_feed")),
        "withdrawn_items": int(
            _scalar(conn, "SELECT count(*) FROM reward_feed WHERE kind = 'withdrawn'")
        ),
        "reader_event_pairs_doubled": int(doubled),
        "stable_events": int(stable_events),
        "stable_items_expected": int(stable_events) * (len(coalition.brands) - 1),
        "stable_items_missing": len(missing),
        "missing_sample": [[int(e), str(s), str(r)] for e, s, r in missing[:5]],
        "missing_event_id_range": [int(missing[0][0]), int(missing[-1][0])] if missing else None,
        "readers": {},
    }
    ok = not doubled and not missing
    for brand in coalition.brands:
        state = world.brands[brand.code]
        ids = read_feed(stack.urls[1], brand.client_id, brand.client_secret)
        in_db = int(
            _scalar(
                conn, "SELECT count(*) FROM reward_feed WHERE partner_id = %s", brand.partner_id
            )
        )
        reader = {
            "api_items": len(ids),
            "api_items_repeated": len(ids) - len(set(ids)),
            "db_items": in_db,
            "seen_during_run": len(state.feed_seen),
            "seen_twice_during_run": state.feed_seen_twice,
            "seen_but_gone": len(state.feed_seen - set(ids)),
            "foreign_refs": state.foreign_refs,
        }
        out["readers"][brand.code] = reader
        ok = ok and len(ids) == len(set(ids)) == in_db and not state.feed_seen_twice
        ok = ok and not state.foreign_refs and not reader["seen_but_gone"]
    out["ok"] = ok
    return out


def polite_get(http: httpx.Client, url: str) -> httpx.Response:
    """GET, waiting out a 429 for as long as its Retry-After says: the audit reads whole feeds
    and the whole audit chain, thousands of pages, beyond a client's rate limit (a 30-minute
    run's audit stopped on one)."""
    for _ in range(30):
        answer = http.get(url)
        if answer.status_code != 429:
            return answer
        time.sleep(float(answer.headers.get("Retry-After") or 1))
    return answer


def _page(http: httpx.Client, url: str) -> dict[str, Any]:
    answer = polite_get(http, url)
    if answer.status_code != 200:
        raise RuntimeError(f"GET {url}: {answer.status_code} {answer.text[:300]}")
    return dict(answer.json())


def read_feed(url: str, client_id: str, secret: str) -> list[int]:
    """A reader's whole feed through the API (no cursor: from its start)."""
    with httpx.Client(base_url=url, timeout=60) as http:
        http.headers["Authorization"] = f"Bearer {token(http, client_id, secret)}"
        ids: list[int] = []
        cursor = None
        while True:
            query = {"limit": 500, **({"cursor": cursor} if cursor else {})}
            page = _page(http, f"/v1/rewards/feed?{urlencode(query)}")
            ids += [item["id"] for item in page["items"]]
            cursor = page.get("next_cursor") or cursor
            if not page.get("has_more"):
                return ids


def webhooks(
    conn: psycopg.Connection[Any], coalition: Coalition, receiver: Receiver
) -> dict[str, Any]:
    summary = receiver.summary()
    statuses = dict(
        conn.execute("SELECT status, count(*) FROM webhook_deliveries GROUP BY 1").fetchall()
    )
    missing = extra = 0
    for brand in coalition.brands:
        in_db = {
            int(seq)
            for (seq,) in conn.execute(
                "SELECT seq FROM reward_feed WHERE partner_id = %s", (brand.partner_id,)
            )
        }
        got = receiver.item_ids(brand.partner_id)
        missing += len(in_db - got)
        extra += len(got - in_db)
    out = {
        **summary,
        "deliveries_by_status": statuses,
        "feed_items_never_delivered": missing,
        "delivered_items_not_in_feed": extra,
    }
    out["ok"] = (
        not missing
        and not extra
        and not summary["webhook_ids_accepted_more_than_once"]
        and not summary["items_in_more_than_one_webhook"]
        and not summary["invalid_signatures"]
        and not statuses.get("dead")
    )
    return out


def balances(
    conn: psycopg.Connection[Any], stack: Stack, coalition: Coalition, world: World
) -> dict[str, Any]:
    checked, wrong = 0, []
    for brand in coalition.brands:
        with httpx.Client(base_url=stack.urls[0], timeout=60) as http:
            http.headers["Authorization"] = (
                f"Bearer {token(http, brand.client_id, brand.client_secret)}"
            )
            for person, event_id in sorted(world.brands[brand.code].sampled_events.items()):
                member = _scalar(
                    conn,
                    "SELECT member_id FROM reward_events WHERE partner_id = %s AND event_id = %s",
                    brand.partner_id,
                    event_id,
                )
                if member is None:
                    continue  # that request was refused: nothing to recompute
                local = _scalar(
                    conn,
                    "SELECT coalesce(sum(amount), 0) FROM reward_postings WHERE account = 'local' "
                    "AND member_id = %s AND partner_id = %s",
                    member,
                    brand.partner_id,
                )
                shared = _scalar(
                    conn,
                    "SELECT coalesce(sum(amount), 0) FROM reward_postings "
                    "WHERE account = 'coalition' AND member_id = %s",
                    member,
                )
                answer = polite_get(
                    http,
                    f"/v1/rewards/balances?{urlencode({'customer_ref': ref(brand.code, person)})}",
                )
                expected = {
                    "points": local + shared,
                    "local_points": local,
                    "coalition_points": shared,
                }
                checked += 1
                got = answer.json() if answer.status_code == 200 else {"status": answer.status_code}
                if got != expected:
                    wrong.append(
                        {"brand": brand.code, "person": person, "api": got, "postings": expected}
                    )
    return {
        "checked": checked,
        "wrong": wrong[:10],
        "wrong_count": len(wrong),
        "ok": checked > 0 and not wrong,
    }


def audit_chain(stack: Stack, coalition: Coalition) -> dict[str, Any]:
    with httpx.Client(base_url=stack.urls[1], timeout=120) as http:
        http.headers["Authorization"] = (
            f"Bearer {token(http, coalition.admin_id, coalition.admin_secret)}"
        )
        head = _page(http, "/v1/audit/head")
        head_file = stack.work_dir / "audit-head.json"
        head_file.write_text(json.dumps(head))
        links_ok, prev, rows, at_head = True, "0" * 64, 0, None
        start = 1
        while start:
            page = _page(http, f"/v1/audit/chain?from={start}&to={start + 999}")
            for row in page["items"]:
                links_ok = links_ok and row["prev_hash"] == prev
                prev = row["hash"]
                rows += 1
                if row["seq"] == head["count"]:
                    at_head = row["hash"]
            start = page.get("next_from")
    verified = stack_verify(stack, head_file)
    return {
        "head_count": head["count"],
        "chain_rows_read": rows,
        "chain_links_ok": links_ok,
        "chain_reaches_signed_head": at_head == head["head_hash"],
        "verify": verified,
        "ok": links_ok and at_head == head["head_hash"] and bool(verified.get("ok")),
    }


def stack_verify(stack: Stack, head_file: Path) -> dict[str, Any]:
    try:
        return dict(
            json.loads(stack.cli("admin", "audit", "verify", "--head", str(head_file), "--json"))
        )
    except RuntimeError as exc:
        return {"ok": False, "error": str(exc)[-500:]}


def consistency(
    stack: Stack, coalition: Coalition, world: World, receiver: Receiver
) -> dict[str, Any]:
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        out = {
            "ledger": ledger(conn),
            "feeds": feeds(conn, stack, coalition, world),
            "webhooks": webhooks(conn, coalition, receiver),
            "balances": balances(conn, stack, coalition, world),
            "audit_chain": audit_chain(stack, coalition),
            "replays": {**world.replays, "ok": not world.replays.get("applied_again")},
            "uploads": {
                "runs": world.uploads,
                "ok": all(u.get("status") == "completed" for u in world.uploads),
            },
        }
    out["ok"] = all(part["ok"] for part in out.values() if isinstance(part, dict))
    return out
