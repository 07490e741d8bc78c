"""What one minute of a coalition's day holds, per brand unless a field says otherwise.

Three presets: ``full`` is the issue's day (1M-row uploads every 10 minutes per brand),
``reduced`` a lighter one for a shared machine, ``smoke`` the test suite's. Any field can be
overridden on the command line (``--set field=value``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Mix:
    # Requests of ``events_per_request`` reward events each; every ``replay_every``-th request
    # re-sends an earlier answered one (each event must come back "replayed", none applied).
    event_requests: float = 12.0
    events_per_request: int = 1000
    replay_every: int = 20
    # The chance that an event for a person with points to spend at this brand redeems 5.
    redeem_share: float = 0.5
    overlaps: float = 6.0  # half of them breakdowns (by=self.tier / by=self.tier,partner.city)
    audience_reads: float = 2.0  # `audience_pages` pages of the brand's offer's audience
    audience_page: int = 200
    # Pages per read, each read going on from where the last stopped (0: the whole audience
    # at every read, which at a million people per brand is thousands of pages a read).
    audience_pages: int = 10
    feed_reads: float = 6.0  # the feed from the brand's cursor to the end, paginated
    feed_page: int = 500
    balances: float = 6.0
    consent_changes: float = 4.0  # requests of ``consent_batch`` updates
    consent_batch: int = 20
    erasures: float = 1.0  # enrol a new person, earn, erase them
    upload_rows: int = 1_000_000
    upload_every_minutes: float = 10.0
    # The snapshot each brand already holds when the day starts (yesterday's upload of people
    # 0..N-1, applied before the clock starts); 0: only the population. Day N of a
    # coalition, not its first day: minute 5 then measures a hub at work, not one still
    # receiving its first million records per brand.
    preload_rows: int = 1_000_000
    console_views: float = 6.0  # the admin, in total (not per brand)
    admin_reads: float = 2.0  # the admin's API reads (jobs, audit head, deliveries), in total
    population: int = 20_000  # people every brand holds (events, overlaps, feeds)
    token_ttl_seconds: int = 300  # access tokens live this long and are renewed before expiry

    def with_overrides(self, pairs: list[str]) -> Mix:
        """``field=value`` pairs, converted to the field's type."""
        changes: dict[str, Any] = {}
        types = {f.name: f.type for f in dataclasses.fields(self)}
        for pair in pairs:
            name, sep, value = pair.partition("=")
            if not sep or name not in types:
                raise ValueError(f"--set {pair!r}: expected field=value, fields: {sorted(types)}")
            changes[name] = int(value) if types[name] == "int" else float(value)
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


PRESETS: dict[str, Mix] = {
    "full": Mix(),
    "reduced": Mix(
        event_requests=4.0,
        overlaps=3.0,
        audience_reads=1.0,
        feed_reads=3.0,
        balances=3.0,
        consent_changes=2.0,
        erasures=1.0,
        upload_rows=100_000,
        upload_every_minutes=5.0,
        preload_rows=100_000,
        console_views=4.0,
        admin_reads=2.0,
        population=10_000,
        token_ttl_seconds=180,
    ),
    "smoke": Mix(
        event_requests=3.0,
        replay_every=2,  # a brand's second request: a one-minute run always replays
        overlaps=4.0,
        audience_reads=2.0,
        feed_reads=4.0,
        balances=4.0,
        consent_changes=3.0,
        consent_batch=10,
        erasures=2.0,
        upload_rows=3_000,
        upload_every_minutes=10.0,  # one upload per brand, at the start
        preload_rows=0,
        console_views=16.0,  # each of the 8 pages twice in a one-minute run
        admin_reads=4.0,
        population=2_000,
        token_ttl_seconds=45,
    ),
}
