"""Console sign-in throttling: guessing is slowed, and nobody can lock an admin out.

Failed sign-ins are rows of ``console_sign_in_failures`` (so every hub process sees them),
counted under three keys within ``WINDOW``:

* the username and the address together: ``FAILURES_PER_PAIR`` failures pause that pair until
  its oldest failure leaves the window. A guesser at one address stops there, while the admin
  signing in from anywhere else is not touched by it;
* the address alone: ``FAILURES_PER_ADDRESS`` failures pause that address for every username
  (one address spraying many names);
* the username alone: after ``FREE_FAILURES`` failures, each further one doubles a delay before
  the next attempt for that name from any address, capped at ``MAX_DELAY_SECONDS`` (about
  30 s). Guessers with many addresses get at most one try per cap; the admin waits at most the
  cap, never longer: a growing delay, never a lock on the name.

An attempt refused while paused is not a failure: refusals cannot extend a pause. A success
clears the failures of its username and of its pair.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.console.models import ConsoleSignInFailure

FAILURES_PER_PAIR = int(os.environ.get("HUB_CONSOLE_FAILURES_PER_USERNAME", "5"))
FAILURES_PER_ADDRESS = int(os.environ.get("HUB_CONSOLE_FAILURES_PER_ADDRESS", "20"))
WINDOW = timedelta(seconds=int(os.environ.get("HUB_CONSOLE_FAILURE_WINDOW", "900")))
FREE_FAILURES = 3
MAX_DELAY_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class Throttled:
    retry_after: int  # seconds


def username_delay(failures: int) -> float:
    """Seconds a username waits after its latest failure, given its failures in the window:
    none for the first ``FREE_FAILURES``, then 1, 2, 4 … capped at ``MAX_DELAY_SECONDS``."""
    if failures < FREE_FAILURES:
        return 0.0
    return min(MAX_DELAY_SECONDS, 2.0 ** min(failures - FREE_FAILURES, 32))


async def sign_in_pause(session: AsyncSession, username: str, address: str) -> Throttled | None:
    """Whether a sign-in for ``username`` from ``address`` must wait now, and how long."""
    now = datetime.now(UTC)
    for key, limit in (
        (_pair_key(username, address), FAILURES_PER_PAIR),
        (_address_key(address), FAILURES_PER_ADDRESS),
    ):
        count, oldest, _ = await _failures(session, key, now)
        if count >= limit and oldest is not None:
            return _throttled((oldest + WINDOW - now).total_seconds())
    count, _, latest = await _failures(session, _user_key(username), now)
    delay = username_delay(count)
    if delay and latest is not None:
        wait = (latest + timedelta(seconds=delay) - now).total_seconds()
        if wait > 0:
            return _throttled(wait)
    return None


async def record_failure(session: AsyncSession, username: str, address: str) -> None:
    session.add_all(
        [
            ConsoleSignInFailure(key=_user_key(username)),
            ConsoleSignInFailure(key=_address_key(address)),
            ConsoleSignInFailure(key=_pair_key(username, address)),
        ]
    )
    await session.flush()


async def forget_after_success(session: AsyncSession, username: str, address: str) -> None:
    await session.execute(
        delete(ConsoleSignInFailure).where(
            ConsoleSignInFailure.key.in_([_user_key(username), _pair_key(username, address)])
        )
    )


async def forget_old_failures(session: AsyncSession) -> None:
    await session.execute(
        delete(ConsoleSignInFailure).where(ConsoleSignInFailure.at < datetime.now(UTC) - WINDOW)
    )


async def _failures(
    session: AsyncSession, key: str, now: datetime
) -> tuple[int, datetime | None, datetime | None]:
    count, oldest, latest = (
        await session.execute(
            select(
                func.count(), func.min(ConsoleSignInFailure.at), func.max(ConsoleSignInFailure.at)
            ).where(ConsoleSignInFailure.key == key, ConsoleSignInFailure.at >= now - WINDOW)
        )
    ).one()
    return int(count), oldest, latest


def _throttled(seconds: float) -> Throttled:
    return Throttled(retry_after=max(1, math.ceil(seconds)))


def _normal(username: str) -> str:
    return username.strip().lower()[:150]


def _user_key(username: str) -> str:
    return "user:" + _normal(username)


def _address_key(address: str) -> str:
    return "addr:" + address[:150]


def _pair_key(username: str, address: str) -> str:
    # Hashed: a name and an address together may pass the key column's 200 characters.
    pair = f"{_normal(username)}\n{address}".encode()
    return "pair:" + hashlib.sha256(pair).hexdigest()
