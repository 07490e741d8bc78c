"""What the Locust users of one run share: the coalition, the mix, and what each brand's
users learnt (points they may redeem, their feed cursor, the feed items and audience refs they
saw), so the audit can compare it with what the hub kept."""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.soak.coalition import Coalition
from bench.soak.mix import Mix

SAMPLED_MEMBERS = 40  # stable members per brand whose balance the audit recomputes


@dataclass
class BrandState:
    earned: Counter[int] = field(default_factory=Counter)  # answered earns here, per person
    redeemed: Counter[int] = field(default_factory=Counter)  # sent redeems here, per person
    sampled_events: dict[int, str] = field(default_factory=dict)  # person -> an event_id
    feed_cursor: str | None = None
    feed_seen: set[int] = field(default_factory=set)
    feed_seen_twice: int = 0
    # The audience is read a few pages at a time, a pass from the start to the end spread
    # over several reads: where the pass is, and what it has seen (no ref twice in a pass).
    audience_cursor: str | None = None
    audience_seen: set[str] = field(default_factory=set)
    foreign_refs: int = 0  # customer_refs of another brand seen in a feed or an audience
    requests: itertools.count[int] = field(default_factory=itertools.count)
    churn: itertools.count[int] = field(default_factory=itertools.count)
    last_events: dict[str, Any] | None = None


@dataclass
class World:
    coalition: Coalition
    mix: Mix
    upload_files: dict[str, Path]
    brands: dict[str, BrandState] = field(default_factory=dict)
    uploads: list[dict[str, Any]] = field(default_factory=list)
    replays: Counter[str] = field(default_factory=Counter)  # "replayed" / "applied_again"
    tokens_issued: int = 0
    statuses: dict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))
    _users: itertools.count[int] = field(default_factory=itertools.count)

    def __post_init__(self) -> None:
        for brand in self.coalition.brands:
            self.brands.setdefault(brand.code, BrandState())

    def next_user(self) -> int:
        return next(self._users)


_WORLD: World | None = None


def set_world(world: World) -> None:
    global _WORLD
    _WORLD = world


def world() -> World:
    if _WORLD is None:
        raise RuntimeError("the soak world is set before users start")
    return _WORLD
