"""What a job receives when it runs: the hub's resources, its cursor, and ``checkpoint``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.core.db import writing
from hub.core.keyring import Keyring
from hub.jobs.lease import Lease, renew
from hub.settings import Settings
from partners.identifiers.crypto import IdentifierCrypto


class JobFailed(Exception):
    """A job's own failure. Its message becomes the run's ``error`` as it is, so it must name
    no data value (any other exception is recorded by its type only; details go to the log)."""


class JobSkipped(Exception):
    """The job cannot do its work in this deployment, and that is not a failure of the run
    (the keyring is read-only, say). Recorded ``skipped`` with the message as the reason, in
    ``error``; like :class:`JobFailed`'s, the message must name no data value."""


@dataclass
class JobContext:
    """One run of one job.

    ``cursor`` is where the previous run of this job got to -- the last checkpoint of the
    newest run, even one that crashed -- and ``{}`` the first time. A job resumes from it and
    moves it forward with :meth:`checkpoint` after each batch of work.
    """

    name: str
    run_id: int
    settings: Settings
    session_maker: async_sessionmaker[AsyncSession]
    keyring: Keyring
    identifier_crypto: IdentifierCrypto
    cursor: dict[str, Any]
    lease: Lease
    counts: dict[str, int] = field(default_factory=dict)

    async def checkpoint(
        self,
        cursor: dict[str, Any],
        counts: dict[str, int],
        *,
        session: AsyncSession | None = None,
    ) -> None:
        """Save ``cursor`` and ``counts`` on the run and renew the lease, then commit.

        With ``session``, the checkpoint is written in that session's transaction and commits
        it: the batch of work and the cursor that says it is done commit together, so a crash
        can neither lose the batch nor apply it twice. (On SQLite, open that session inside
        ``hub.core.db.writing()``.) Without it, the checkpoint commits on its own.

        Raises :class:`hub.jobs.lease.LeaseLost` -- the session rolled back -- when another run
        took the job's lease over (this one stalled past its expiry): stop at once.
        """
        cursor = msgspec.json.decode(msgspec.json.encode(cursor))  # JSON, as it will be read
        counts = {str(k): int(v) for k, v in counts.items()}
        seconds = self.settings.jobs.lease_seconds
        if session is None:
            with writing():
                async with self.session_maker() as own:
                    await self._save(own, cursor, counts, seconds)
        else:
            await self._save(session, cursor, counts, seconds)
        self.cursor = cursor
        self.counts = counts

    async def _save(
        self,
        session: AsyncSession,
        cursor: dict[str, Any],
        counts: dict[str, int],
        seconds: float,
    ) -> None:
        try:
            await renew(session, self.lease, seconds, cursor=cursor, counts=counts)
        except BaseException:
            await session.rollback()
            raise
        await session.commit()
