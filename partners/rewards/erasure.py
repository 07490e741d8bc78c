"""What an erasure at a brand does to rewards: the member is tombstoned in the ledger (its
postings stay, so settlements remain reproducible, but nothing links them to a person any more)
and the brand's own feed no longer names the erased people."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from partners.rewards.ledger import tombstone
from partners.rewards.models import RewardFeedItem


async def forget_in_rewards(
    session: AsyncSession,
    partner_id: UUID,
    match_keys: Sequence[bytes],
    customer_refs: Sequence[str],
) -> None:
    """In the erasure's transaction."""
    if match_keys:
        await tombstone(session, match_keys)
    for start in range(0, len(customer_refs), 500):
        await session.execute(
            delete(RewardFeedItem).where(
                RewardFeedItem.partner_id == partner_id,
                RewardFeedItem.customer_ref.in_(customer_refs[start : start + 500]),
            )
        )
