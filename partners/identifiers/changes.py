"""What a consent change, an erasure or a synchronous upsert did to a partner's current
records, announced to the data derived from them (the matching engine's arrays) so it can
follow without rereading every record.

The identifier service announces a change inside the change's transaction, right after it,
to the follower it was given (none outside requests). This module names what is announced and
what a follower is; the follower itself lives with the derived data and is wired in by the
app, so the identifiers domain imports nothing of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession


@dataclass(frozen=True, slots=True)
class RecordsChanged:
    """One raise of a partner's change counter: from ``version - 1`` to ``version``."""

    partner_id: UUID
    version: int
    # People whose consents were set, with the consents now on all their records.
    consents: Mapping[str, int] = field(default_factory=dict)
    # People erased whole (by customer_ref).
    erased_people: tuple[str, ...] = ()
    # Match keys, under every live key version, whose records were erased (by id_hash).
    erased_keys: tuple[bytes, ...] = ()
    # People whose records a synchronous upsert wrote: the records' owners, and the former
    # owner of a key that moved to another customer_ref (their records are read again whole).
    rewritten: tuple[str, ...] = ()
    # Everyone whose records this changed (the people above, and the owners of erased keys).
    touched: tuple[str, ...] = ()


class ChangeFollower(Protocol):
    async def follow(self, session: AsyncSession, change: RecordsChanged) -> None:
        """Called in the change's transaction, after its writes (it may read what they left,
        and arrange work for after the commit)."""
