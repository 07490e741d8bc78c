"""Console sessions: a random token in an HttpOnly cookie, its SHA-256 in the database.

A session ends after ``IDLE_SECONDS`` without use or ``ABSOLUTE_SECONDS`` after sign-in,
whichever comes first. Each session has its own CSRF token, which every form carries.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hub.console.accounts import console_actor
from hub.console.models import ConsoleSession, ConsoleUser
from hub.core.audit import Actor

COOKIE = "hub_console"
COOKIE_PATH = "/admin"
IDLE_SECONDS = int(os.environ.get("HUB_CONSOLE_IDLE_SECONDS", str(8 * 3600)))
ABSOLUTE_SECONDS = int(os.environ.get("HUB_CONSOLE_ABSOLUTE_SECONDS", str(12 * 3600)))
# Sliding the idle expiry is a write: do it at most this often per session.
TOUCH_EVERY = timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class SignedIn:
    """The console user behind a request."""

    session_id: str
    user_id: int
    username: str
    csrf_token: str
    expires_at: datetime
    created_at: datetime
    last_seen_at: datetime

    def actor(self, request_id: str | None = None) -> Actor:
        return console_actor(self.username, request_id)

    def csrf_matches(self, submitted: str | None) -> bool:
        return bool(submitted) and hmac.compare_digest(
            self.csrf_token.encode(), str(submitted).encode()
        )

    @property
    def needs_touch(self) -> bool:
        return datetime.now(UTC) - self.last_seen_at >= TOUCH_EVERY


def session_id_of(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def open_session(session: AsyncSession, user: ConsoleUser) -> str:
    """A new session for ``user``; returns the cookie's token (stored only as a hash)."""
    token = secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    session.add(
        ConsoleSession(
            id=session_id_of(token),
            user_id=user.id,
            csrf_token=secrets.token_urlsafe(32),
            created_at=now,
            last_seen_at=now,
            expires_at=now + timedelta(seconds=min(IDLE_SECONDS, ABSOLUTE_SECONDS)),
        )
    )
    # Expired sessions of anyone are useless rows: sign-in is a good moment to drop them.
    await session.execute(delete(ConsoleSession).where(ConsoleSession.expires_at < now))
    await session.flush()
    return token


async def load_session(session: AsyncSession, token: str | None) -> SignedIn | None:
    """The live session the token names, or None (unknown, expired, or user disabled)."""
    if not token or len(token) > 200:
        return None
    row = (
        await session.execute(
            select(ConsoleSession, ConsoleUser.username)
            .join(ConsoleUser, ConsoleUser.id == ConsoleSession.user_id)
            .where(
                ConsoleSession.id == session_id_of(token),
                ConsoleSession.expires_at > datetime.now(UTC),
                ConsoleUser.disabled.is_(False),
            )
        )
    ).first()
    if row is None:
        return None
    found, username = row
    return SignedIn(
        session_id=found.id,
        user_id=found.user_id,
        username=username,
        csrf_token=found.csrf_token,
        expires_at=found.expires_at,
        created_at=found.created_at,
        last_seen_at=found.last_seen_at,
    )


async def touch_session(session: AsyncSession, signed_in: SignedIn) -> None:
    """Slide the idle expiry, never past the absolute lifetime."""
    now = datetime.now(UTC)
    cap = signed_in.created_at + timedelta(seconds=ABSOLUTE_SECONDS)
    await session.execute(
        update(ConsoleSession)
        .where(ConsoleSession.id == signed_in.session_id)
        # An expiry moved into the past (sign-out elsewhere, a test) stays there.
        .where(ConsoleSession.expires_at > now)
        .values(last_seen_at=now, expires_at=min(now + timedelta(seconds=IDLE_SECONDS), cap))
    )


async def rotate_csrf(session: AsyncSession, signed_in: SignedIn) -> SignedIn:
    """A new CSRF token for the session: a form submitted again with the old one (a reload of
    the page that showed a client secret) is refused instead of acting twice."""
    token = secrets.token_urlsafe(32)
    await session.execute(
        update(ConsoleSession)
        .where(ConsoleSession.id == signed_in.session_id)
        .values(csrf_token=token)
    )
    return dataclasses.replace(signed_in, csrf_token=token)


async def close_session(session: AsyncSession, session_id: str) -> None:
    await session.execute(delete(ConsoleSession).where(ConsoleSession.id == session_id))
