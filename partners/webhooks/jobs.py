"""The ``webhook_redelivery`` scheduled job: send every webhook delivery that is due.

The scheduler (hub/jobs) calls it with its job context; domains do not import the shell, so
the context is described here by what the job reads of it (:class:`WebhookJobContext`).
"""

from __future__ import annotations

from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from partners.webhooks.delivery import deliver_due
from partners.webhooks.service import HubSettings
from partners.webhooks.signing import DataKeys


class WebhookJobContext(Protocol):
    """What the job needs of the scheduler's context: sessions, settings and the keyring."""

    @property
    def session_maker(self) -> async_sessionmaker[AsyncSession]: ...
    @property
    def settings(self) -> HubSettings: ...
    @property
    def keyring(self) -> DataKeys: ...


async def webhook_redelivery(ctx: WebhookJobContext) -> dict[str, int]:
    """Deliver due webhooks; returns {"delivered", "failed", "dead"} for the job's run record.

    Each run is safe alongside another (deliveries are leased), and after a crash the next run
    picks up whatever was left."""
    return await deliver_due(ctx.session_maker, ctx.keyring, ctx.settings)
