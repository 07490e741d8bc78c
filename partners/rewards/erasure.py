"""What an erasure at a brand does to rewards. Erasure is per brand (each brand is its own
controller of what it holds):

* the brand's local lots of the person go to its ``forfeited`` account;
* the brand's feed no longer names the erased people, and it is no longer recorded as having
  received them (its disclosures go);
* the ledger member is tombstoned only when no brand holds it any more -- the coalition wallet
  and other brands' local wallets stay while one does. Postings are always kept.

Brands that received the person's activity from this brand are told by a ``withdrawn`` feed
item: the erasure is a consent event (cause ``erasure``) that ``rewards_sync`` turns into
those items.
"""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from partners.rewards import ledger
from partners.rewards.models import RewardDisclosure, RewardFeedItem


async def forget_in_rewards(
    session: AsyncSession,
    partner_id: UUID,
    match_keys: Sequence[bytes],
    customer_refs: Sequence[str],
) -> None:
    """In the erasure's transaction, after the partner's records were deleted."""
    members = await ledger.members_with_keys(session, match_keys)
    await ledger.forfeit_local(session, partner_id, members)
    await ledger.tombstone_unheld(session, members)
    for start in range(0, len(customer_refs), 500):
        refs = customer_refs[start : start + 500]
        await session.execute(
            delete(RewardFeedItem).where(
                RewardFeedItem.partner_id == partner_id, RewardFeedItem.customer_ref.in_(refs)
            )
        )
        await session.execute(
            delete(RewardDisclosure).where(
                RewardDisclosure.reader_id == partner_id, RewardDisclosure.reader_ref.in_(refs)
            )
        )
