"""Console accounts: creating, listing and disabling them, and signing in with throttling.

Passwords are kept only as argon2id hashes (the hasher of client secrets). Failed sign-ins
are counted and throttled by ``hub.console.sign_in_throttle`` (by username and address
together, plus a growing per-username delay capped at about 30 s: never a lock on a name).
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.console.models import ConsoleSession, ConsoleUser
from hub.console.sign_in_throttle import (
    Throttled,
    forget_after_success,
    forget_old_failures,
    record_failure,
    sign_in_pause,
)
from hub.core import audit
from hub.core.audit import Actor
from hub.core.errors import Conflict, InvalidInput, NotFound
from hub.core.secrets import SecretHasher

USERNAME = re.compile(r"^[a-z0-9][a-z0-9._@-]{1,99}$")
MIN_PASSWORD_LENGTH = 12


def console_actor(username: str, request_id: str | None = None) -> Actor:
    """The audit log's name for a console user."""
    return Actor(name=f"console:{username}", request_id=request_id)


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
        """Whether a sign-in for this username from this address must wait, and how long."""
        return await sign_in_pause(self.session, username, address)

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
            await record_failure(self.session, username, address)
            return None
        await forget_after_success(self.session, username, address)
        user.last_sign_in_at = datetime.now(UTC)
        await self.session.flush()
        return user

    async def forget_old_failures(self) -> None:
        await forget_old_failures(self.session)
