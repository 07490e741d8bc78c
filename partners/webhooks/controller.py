"""Coalition admin: partners' webhook signing secrets and the deliveries' dead letters."""

from __future__ import annotations

from uuid import UUID

from litestar import Controller, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, Parameter
from sqlalchemy.ext.asyncio import AsyncSession

from hub.core.audit import Actor
from hub.core.auth import requires_admin
from hub.core.pagination import CursorParameter, LimitParameter, Page
from partners.webhooks.schemas import DeliveryOut, SecretCreated
from partners.webhooks.service import WebhookService


def provide_webhook_service(
    db_session: NamedDependency[AsyncSession], state: State
) -> WebhookService:
    return WebhookService(db_session, state.keyring)


class WebhookController(Controller):
    path = "/v1"
    tags = ["webhooks (admin)"]
    guards = [requires_admin]
    dependencies = {"webhooks": Provide(provide_webhook_service, sync_to_thread=False)}

    @post(
        "/partners/{partner_id:uuid}/webhook-secret",
        summary="Create or rotate a partner's webhook signing secret",
        description="The secret (whsec_…) is in this response only; the hub keeps it encrypted. "
        "Deliveries signed after a rotation verify with the new secret only. A retry with the "
        "same Idempotency-Key does not show the secret again.",
        opt={"idempotency_redact": ("secret",)},
    )
    async def rotate_secret(
        self,
        partner_id: FromPath[UUID],
        webhooks: NamedDependency[WebhookService],
        actor: NamedDependency[Actor],
    ) -> SecretCreated:
        return await webhooks.rotate_secret(partner_id, actor)

    @get(
        "/webhooks/deliveries",
        summary="List webhook deliveries, newest first",
        description="Without payloads: ids, status, attempts and the last error only.",
    )
    async def list_deliveries(
        self,
        webhooks: NamedDependency[WebhookService],
        limit: int = LimitParameter,
        cursor: str | None = CursorParameter,
        status: str | None = Parameter(default=None, pattern="^(pending|delivered|dead)$"),
        partner_id: UUID | None = Parameter(default=None),
    ) -> Page[DeliveryOut]:
        return await webhooks.list_deliveries(
            cursor=cursor, limit=limit, status=status, partner_id=partner_id
        )

    @post(
        "/webhooks/deliveries/{delivery_id:str}/replay",
        status_code=200,
        summary="Send a dead or delivered webhook again",
        description="Same webhook-id and body (receivers deduplicate on the id); attempts "
        "start again from zero.",
    )
    async def replay(
        self,
        delivery_id: FromPath[str],
        webhooks: NamedDependency[WebhookService],
        actor: NamedDependency[Actor],
    ) -> DeliveryOut:
        return await webhooks.replay(delivery_id, actor)
