"""Console accounts: creating, listing and disabling them, and signing in with throttling.

Passwords are kept only as argon2id hashes (the hasher of client secrets). Sign-in failures
are counted per username and per client address in a table, so every hub process sees them:
after ``FAILURES_PER_USERNAME`` (or ``FAILURES_PER_ADDRESS``) failures within the window the
sign-in is refused without checking the password until the oldest failure leaves the window.
"""

from __future__ import annotations

import asyncio
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.console.models import ConsoleSession, ConsoleSignInFailure, ConsoleUser
from hub.core import audit
from hub.core.audit import Actor
from hub.core.errors import Conflict, InvalidInput, NotFound
from hub.core.secrets import SecretHasher

USERNAME = re.compile(r"^[a-z0-9][a-z0-9._@-]{1,99}$")
MIN_PASSWORD_LENGTH = 12
FAILURES_PER_USERNAME = int(os.environ.get("HUB_CONSOLE_FAILURES_PER_USERNAME", "5"))
FAILURES_PER_ADDRESS = int(os.environ.get("HUB_CONSOLE_FAILURES_PER_ADDRESS", "20"))
FAILURE_WINDOW = timedelta(seconds=int(os.environ.get("HUB_CONSOLE_FAILURE_WINDOW", "900")))


def console_actor(username: str, request_id: str | None = None) -> Actor:
    """The audit log's name for a console user."""
    return Actor(name=f"console:{username}", request_id=request_id)


@dataclass(frozen=True, slots=True)
class Throttled:
    retry_after: int


class ConsoleAccounts:
    def __init__(self, session: AsyncSession, hasher: SecretHasher) -> None:
        self.session = session
        self.hasher = hasher

    async def create(self, username: str, password: str, actor: Actor) -> ConsoleUser:
        username = username.strip().lower()
        if not USERNAME.match(username):
            raise InvalidInput(
                "a username is 2 to 100 characters: lower-case letters, digits, . _ @ -",
                fix="Choose a username such as 'ana' or 'ana@coalition.example'.",
            )
        if len(password) < MIN_PASSWORD_LENGTH:
            raise InvalidInput(
                f"a console password has at least {MIN_PASSWORD_LENGTH} characters",
                fix="Use a longer password (a passphrase of a few words works well).",
            )
        if await self.session.scalar(
            select(ConsoleUser.id).where(ConsoleUser.username == username)
        ):
            raise Conflict(
                f"A console user {username!r} already exists.",
                fix="Choose another username, or disable the existing account first.",
            )
        user = ConsoleUser(
            username=username,
            password_hash=await asyncio.to_thread(self.hasher.hash, password),
            disabled=False,
        )
        self.session.add(user)
        await self.session.flush()
        await audit.append(
            self.session, actor.event("console_user.created", "console_user", username)
        )
        return user

    async def list(self) -> list[ConsoleUser]:
        return list(await self.session.scalars(select(ConsoleUser).order_by(ConsoleUser.username)))

    async def disable(self, username: str, actor: Actor) -> ConsoleUser:
        user = await self.session.scalar(
            select(ConsoleUser).where(ConsoleUser.username == username.strip().lower())
        )
        if user is None:
            raise NotFound(f"No console user {username!r}.", fix="See `hub admin users list`.")
        if not user.disabled:
            user.disabled = True
            # Signed-in sessions end with the account.
            await self.session.execute(
                delete(ConsoleSession).where(ConsoleSession.user_id == user.id)
            )
            await audit.append(
                self.session, actor.event("console_user.disabled", "console_user", user.username)
            )
        await self.session.flush()
        return user

    async def throttled(self, username: str, address: str) -> Throttled | None:
        """Whether sign-ins for this username or from this address are paused, and how long."""
        since = datetime.now(UTC) - FAILURE_WINDOW
        for key, limit in (
            (_user_key(username), FAILURES_PER_USERNAME),
            (_address_key(address), FAILURES_PER_ADDRESS),
        ):
            count, oldest = (
                await self.session.execute(
                    select(func.count(), func.min(ConsoleSignInFailure.at)).where(
                        ConsoleSignInFailure.key == key, ConsoleSignInFailure.at >= since
                    )
                )
            ).one()
            if count >= limit and oldest is not None:
                wait = (oldest + FAILURE_WINDOW - datetime.now(UTC)).total_seconds()
                return Throttled(retry_after=max(1, int(wait) + 1))
        return None

    async def authenticate(self, username: str, password: str, address: str) -> ConsoleUser | None:
        """The user if the password is right and the account enabled; a failure is counted."""
        username = username.strip().lower()
        user = await self.session.scalar(
            select(ConsoleUser).where(ConsoleUser.username == username)
        )
        # An unknown user costs the same hash as a wrong password: timing reveals no names.
        stored = user.password_hash if user is not None else self.hasher.dummy_hash
        valid = await asyncio.to_thread(self.hasher.verify, stored, password)
        if user is None or user.disabled or not valid:
            self.session.add_all(
                [
                    ConsoleSignInFailure(key=_user_key(username)),
                    ConsoleSignInFailure(key=_address_key(address)),
                ]
            )
            await self.session.flush()
            return None
        await self.session.execute(
            delete(ConsoleSignInFailure).where(ConsoleSignInFailure.key == _user_key(username))
        )
        user.last_sign_in_at = datetime.now(UTC)
        await self.session.flush()
        return user

    async def forget_old_failures(self) -> None:
        cutoff = datetime.now(UTC) - FAILURE_WINDOW
        await self.session.execute(
            delete(ConsoleSignInFailure).where(ConsoleSignInFailure.at < cutoff)
        )


def _user_key(username: str) -> str:
    return "user:" + username.strip().lower()[:150]


def _address_key(address: str) -> str:
    return "addr:" + address[:150]
