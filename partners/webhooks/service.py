"""Webhook secrets, the delivery queue, replays and retention. Services flush; callers commit.

Deliveries are written in the caller's transaction (:func:`enqueue`), so the feed items and
their webhooks are stored together or not at all; :mod:`partners.webhooks.delivery` sends them.
A partner with a ``webhook_url`` but no signing secret yet has its deliveries held (pending,
``last_error`` "no signing secret") until an admin creates one: the hub never invents a secret
the partner has not seen, as the partner could not verify anything signed with it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from uuid import UUID

import msgspec
import uuid_utils
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.core import audit
from hub.core.audit import Actor
from hub.core.db import rowcount
from hub.core.errors import Conflict, NotFound
from hub.core.pagination import Page, paginate
from partners.identifiers.crypto import IdentifierCrypto
from partners.partners.models import Partner
from partners.webhooks.models import (
    DEAD,
    DELIVERED,
    PENDING,
    WebhookDelivery,
    WebhookSecret,
)
from partners.webhooks.schemas import DeliveryOut, SecretCreated
from partners.webhooks.signing import DataKeys, SecretBox, new_secret

EVENT_TYPE = "rewards.feed"
NO_SECRET = "no signing secret"  # noqa: S105 (a message, not a password)
ID_PREFIX = "msg_"


class WebhookPolicy(Protocol):
    """What webhooks read of the hub's ``[webhooks]`` settings."""

    @property
    def allow_loopback_http(self) -> bool: ...
    @property
    def batch_items(self) -> int: ...
    @property
    def timeout_seconds(self) -> float: ...
    @property
    def max_attempts(self) -> int: ...
    @property
    def backoff_base_seconds(self) -> float: ...
    @property
    def backoff_max_seconds(self) -> float: ...
    @property
    def retention_days(self) -> int: ...


class HubSettings(Protocol):
    """The hub's whole settings (``hub.settings.Settings``), of which webhooks read a section."""

    @property
    def webhooks(self) -> WebhookPolicy: ...


def webhook_policy(settings: WebhookPolicy | HubSettings) -> WebhookPolicy:
    """Accept the whole settings or their ``[webhooks]`` section."""
    section = getattr(settings, "webhooks", None)
    return section if section is not None else settings  # type: ignore[return-value]


def new_delivery_id() -> str:
    # UUIDv7: ids sort by creation time.
    return ID_PREFIX + uuid_utils.uuid7().hex


def parse_delivery_id(value: Any) -> str:
    """A cursor key or path value that must look like a delivery id."""
    if not isinstance(value, str) or not value.startswith(ID_PREFIX) or len(value) > 40:
        raise ValueError("not a delivery id")
    return value


def to_out(delivery: WebhookDelivery) -> DeliveryOut:
    return msgspec.convert(delivery, DeliveryOut, from_attributes=True)


async def enqueue(
    session: AsyncSession,
    partner_id: UUID,
    items: list[dict[str, Any]],
    *,
    batch_items: int = 1000,
    now: datetime | None = None,
) -> list[str]:
    """Queue ``items`` for ``partner_id``'s webhook in the caller's transaction.

    Splits them into deliveries of at most ``batch_items`` and returns their ids (the
    ``webhook-id`` each is sent with). A partner without a ``webhook_url`` gets none (it reads
    the feed), and an empty list queues nothing. Items must be JSON-able (UUIDs and datetimes
    become strings); the body is fixed here, so every retry sends the same bytes.
    """
    if not items:
        return []
    row = (
        await session.execute(
            select(Partner.webhook_url, WebhookSecret.partner_id)
            .outerjoin(WebhookSecret, WebhookSecret.partner_id == Partner.id)
            .where(Partner.id == partner_id)
        )
    ).first()
    if row is None:
        raise NotFound(f"No partner {partner_id}.")
    if not row.webhook_url:
        return []
    now = now or datetime.now(UTC)
    held = NO_SECRET if row.partner_id is None else None
    size = max(1, batch_items)
    ids = []
    for start in range(0, len(items), size):
        chunk = msgspec.to_builtins(items[start : start + size])
        delivery = WebhookDelivery(
            id=new_delivery_id(),
            partner_id=partner_id,
            payload={"type": EVENT_TYPE, "items": chunk},
            item_count=len(chunk),
            status=PENDING,
            attempts=0,
            next_attempt_at=now,
            last_error=held,
            created_at=now,
            updated_at=now,
        )
        session.add(delivery)
        ids.append(delivery.id)
    await session.flush()
    return ids


async def purge_deliveries(
    session: AsyncSession, settings: WebhookPolicy | HubSettings, *, now: datetime | None = None
) -> int:
    """Delete delivered and dead deliveries untouched for ``retention_days``; returns how many.

    Runs in the caller's transaction. Pending ones are kept whatever their age.
    """
    policy = webhook_policy(settings)
    cutoff = (now or datetime.now(UTC)) - timedelta(days=policy.retention_days)
    result = await session.execute(
        delete(WebhookDelivery).where(
            WebhookDelivery.status.in_((DELIVERED, DEAD)), WebhookDelivery.updated_at < cutoff
        )
    )
    return rowcount(result)


class WebhookService:
    """The admin's side: secrets, the delivery list, replays."""

    def __init__(self, session: AsyncSession, keys: DataKeys | IdentifierCrypto) -> None:
        self.session = session
        self.box = SecretBox(keys)

    async def rotate_secret(self, partner_id: UUID, actor: Actor) -> SecretCreated:
        """Create or replace the partner's signing secret; the only time it is shown."""
        if await self.session.get(Partner, partner_id) is None:
            raise NotFound(f"No partner {partner_id}.")
        secret = new_secret()
        version, sealed = self.box.seal(secret, partner_id)
        now = datetime.now(UTC)
        stored = await self.session.get(WebhookSecret, partner_id, with_for_update=True)
        first = stored is None
        if stored is None:
            self.session.add(
                WebhookSecret(
                    partner_id=partner_id,
                    key_version=version,
                    sealed=sealed,
                    created_at=now,
                    rotated_at=now,
                )
            )
        else:
            stored.key_version, stored.sealed, stored.rotated_at = version, sealed, now
        await audit.append(
            self.session,
            actor.event(
                "webhook.secret_rotated",
                "partner",
                str(partner_id),
                concerns=[partner_id],
                first=first,
            ),
        )
        await self.session.flush()
        return SecretCreated(secret=secret)

    async def list_deliveries(
        self,
        *,
        cursor: str | None,
        limit: int,
        status: str | None = None,
        partner_id: UUID | None = None,
    ) -> Page[DeliveryOut]:
        stmt = select(WebhookDelivery)
        if status:
            stmt = stmt.where(WebhookDelivery.status == status)
        if partner_id:
            stmt = stmt.where(WebhookDelivery.partner_id == partner_id)
        return await paginate(
            self.session,
            stmt,
            WebhookDelivery.id,
            cursor=cursor,
            limit=limit,
            to_item=to_out,
            parse_key=parse_delivery_id,
            descending=True,
        )

    async def replay(self, delivery_id: str, actor: Actor) -> DeliveryOut:
        """Send a dead (or delivered) delivery again: same webhook-id, same body."""
        delivery = await self.session.get(WebhookDelivery, delivery_id, with_for_update=True)
        if delivery is None:
            raise NotFound(f"No webhook delivery {delivery_id}.")
        if delivery.status == PENDING:
            raise Conflict(
                f"Delivery {delivery_id} is still pending: it will be sent without a replay.",
                fix="Replay only dead or delivered deliveries.",
            )
        previous = delivery.status
        now = datetime.now(UTC)
        delivery.status = PENDING
        delivery.attempts = 0
        delivery.next_attempt_at = now
        delivery.lease_until = None
        delivery.delivered_at = None
        delivery.updated_at = now
        await audit.append(
            self.session,
            actor.event(
                "webhook.replayed",
                "webhook_delivery",
                delivery_id,
                concerns=[delivery.partner_id],
                partner_id=str(delivery.partner_id),
                previous_status=previous,
            ),
        )
        await self.session.flush()
        return to_out(delivery)
