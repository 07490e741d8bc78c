"""Sending due deliveries: claim under a lease, sign, POST outside any transaction, record.

A claim raises ``attempts`` and sets ``lease_until`` in one short transaction (``FOR UPDATE
SKIP LOCKED`` on PostgreSQL; SQLite's writers are serialised by ``BEGIN IMMEDIATE``), so two
senders never hold the same delivery; a sender that dies leaves it to be claimed again when
the lease runs out. The result is recorded only while the claim is still ours (same
``attempts``, still pending). The URL is checked again before every attempt, and the attempt
connects to the very address that passed (DNS rebinding: a name may resolve into a private
range now even though it did not at registration, or between a check and the connection);
redirects are never followed, so a receiver cannot bounce the hub to an internal address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import random
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from uuid import UUID

import httpx
import structlog
from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.core.db import rowcount, writing
from hub.core.errors import InvalidInput
from hub.core.webhook_urls import check_webhook_url
from partners.identifiers.crypto import IdentifierCrypto
from partners.partners.models import ACTIVE, Partner
from partners.webhooks.models import (
    DEAD,
    DELIVERED,
    ERROR_CHARS,
    PENDING,
    WebhookDelivery,
    WebhookSecret,
)
from partners.webhooks.service import HubSettings, WebhookPolicy, webhook_policy
from partners.webhooks.signing import DataKeys, SecretBox, signed_headers

log = structlog.get_logger("hub.webhooks")
CLAIM_BATCH = 50
PARALLEL_SENDS = 10
LEASE_MARGIN_SECONDS = 30.0


@dataclass(frozen=True)
class Claim:
    id: str
    partner_id: UUID
    payload: dict[str, Any]
    attempt: int
    url: str | None
    secret: str


@dataclass(frozen=True)
class Outcome:
    delivered: bool
    status_code: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class Target:
    """Where an attempt connects: the checked address itself, named as the URL names it."""

    url: str
    headers: dict[str, str]
    extensions: dict[str, Any]


def pin(url: str, allow_loopback_http: bool) -> Target:
    """Check ``url`` now and pin the attempt to the address that passed the check.

    Checking a name and then letting the HTTP client resolve it again leaves a window in
    which a rebinding DNS server can answer with a private address; so the name is resolved
    once here, that address is checked, and the request connects to it, with the name in the
    Host header and in TLS (SNI and certificate verification).
    """
    check_webhook_url(url, allow_loopback_http=allow_loopback_http)
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        ipaddress.ip_address(host)
        return Target(url, {}, {})  # already an address, checked above
    except ValueError:
        pass
    port = parts.port or (443 if parts.scheme == "https" else 80)
    info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
    literal = f"[{address}]" if address.version == 6 else str(address)
    netloc = f"{literal}:{parts.port}" if parts.port else literal
    pinned = urlunsplit(parts._replace(netloc=netloc))
    check_webhook_url(pinned, allow_loopback_http=allow_loopback_http)
    extensions: dict[str, Any] = {"sni_hostname": host} if parts.scheme == "https" else {}
    return Target(pinned, {"host": parts.netloc}, extensions)


def body_of(payload: dict[str, Any]) -> str:
    """The exact body sent: canonical JSON, the same bytes on every attempt (JSONB on
    PostgreSQL does not keep key order, so keys are sorted)."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def backoff(policy: WebhookPolicy, attempts: int) -> timedelta:
    """Wait after the ``attempts``-th failed attempt: base * 2**(attempts-1), capped, with
    "equal jitter" (between half and all of it) so failing partners do not retry in step."""
    exponent = min(max(attempts - 1, 0), 62)
    ceiling = min(policy.backoff_base_seconds * 2**exponent, policy.backoff_max_seconds)
    return timedelta(seconds=ceiling / 2 + random.uniform(0, ceiling / 2))  # noqa: S311 (not security)


def _short(text: str) -> str:
    return text if len(text) <= ERROR_CHARS else text[: ERROR_CHARS - 1] + "…"


async def deliver_due(
    session_maker: async_sessionmaker[AsyncSession],
    keys: DataKeys | IdentifierCrypto,
    settings: WebhookPolicy | HubSettings,
    *,
    now: datetime | None = None,
    client: httpx.AsyncClient | None = None,
) -> dict[str, int]:
    """Send every delivery due at ``now``; returns counts of delivered, failed, dead.

    ``keys`` is the keyring (or an IdentifierCrypto holding it); ``settings`` the hub's
    settings or their ``[webhooks]`` section. ``now`` schedules retries (tests move it
    forward); the signed ``webhook-timestamp`` is always the real time of the attempt.
    """
    policy = webhook_policy(settings)
    now = now or datetime.now(UTC)
    box = SecretBox(keys)
    counts = {"delivered": 0, "failed": 0, "dead": 0}
    own_client = client is None
    http = client or httpx.AsyncClient(follow_redirects=False)
    try:
        counts["dead"] += await _bury_exhausted(session_maker, policy, now)
        while True:
            claims = await _claim(session_maker, box, policy, now)
            if not claims:
                return counts
            outcomes = await _attempt_all(http, claims, policy)
            for kind in await _record(session_maker, policy, now, claims, outcomes):
                counts[kind] += 1
    finally:
        if own_client:
            await http.aclose()


def _unleased(now: datetime) -> ColumnElement[bool]:
    return or_(WebhookDelivery.lease_until.is_(None), WebhookDelivery.lease_until < now)


async def _bury_exhausted(
    session_maker: async_sessionmaker[AsyncSession], policy: WebhookPolicy, now: datetime
) -> int:
    """Pending deliveries with no attempt left (their sender died during the last one, or
    max_attempts was lowered) are dead: nothing more will be tried."""
    with writing():
        async with session_maker() as session:
            result = await session.execute(
                update(WebhookDelivery)
                .where(
                    WebhookDelivery.status == PENDING,
                    WebhookDelivery.attempts >= policy.max_attempts,
                    _unleased(now),
                )
                .values(
                    status=DEAD,
                    lease_until=None,
                    updated_at=now,
                    last_error="no attempt left after an interrupted one",
                )
            )
            await session.commit()
    return rowcount(result)


async def _claim(
    session_maker: async_sessionmaker[AsyncSession],
    box: SecretBox,
    policy: WebhookPolicy,
    now: datetime,
) -> list[Claim]:
    lease_until = now + timedelta(seconds=policy.timeout_seconds * 2 + LEASE_MARGIN_SECONDS)
    with writing():
        async with session_maker() as session:
            # Held, not claimed: partners without a secret yet, and suspended partners.
            rows = (
                await session.execute(
                    select(
                        WebhookDelivery.id,
                        WebhookDelivery.partner_id,
                        WebhookDelivery.payload,
                        WebhookDelivery.attempts,
                        Partner.webhook_url,
                        WebhookSecret.key_version,
                        WebhookSecret.sealed,
                    )
                    .join(Partner, Partner.id == WebhookDelivery.partner_id)
                    .join(WebhookSecret, WebhookSecret.partner_id == WebhookDelivery.partner_id)
                    .where(
                        WebhookDelivery.status == PENDING,
                        WebhookDelivery.next_attempt_at <= now,
                        WebhookDelivery.attempts < policy.max_attempts,
                        _unleased(now),
                        Partner.status == ACTIVE,
                    )
                    .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
                    .limit(CLAIM_BATCH)
                    .with_for_update(of=WebhookDelivery, skip_locked=True)
                )
            ).all()
            claims = []
            secrets: dict[UUID, str] = {}
            for row in rows:
                if row.partner_id not in secrets:
                    secrets[row.partner_id] = box.open(row.sealed, row.key_version, row.partner_id)
                claims.append(
                    Claim(
                        id=row.id,
                        partner_id=row.partner_id,
                        payload=row.payload,
                        attempt=row.attempts + 1,
                        url=row.webhook_url,
                        secret=secrets[row.partner_id],
                    )
                )
                await session.execute(
                    update(WebhookDelivery)
                    .where(WebhookDelivery.id == row.id)
                    .values(attempts=row.attempts + 1, lease_until=lease_until)
                )
            await session.commit()
    return claims


async def _attempt_all(
    http: httpx.AsyncClient, claims: Sequence[Claim], policy: WebhookPolicy
) -> list[Outcome]:
    limit = asyncio.Semaphore(PARALLEL_SENDS)

    async def send(claim: Claim) -> Outcome:
        async with limit:
            return await _attempt(http, claim, policy)

    return list(await asyncio.gather(*(send(c) for c in claims)))


async def _attempt(http: httpx.AsyncClient, claim: Claim, policy: WebhookPolicy) -> Outcome:
    """One POST. Never raises for the receiver's failures: they are the outcome."""
    if not claim.url:
        return Outcome(False, error="the partner has no webhook_url")
    try:
        # Name resolution blocks: off the event loop.
        target = await asyncio.to_thread(pin, claim.url, policy.allow_loopback_http)
    except InvalidInput as refused:
        reason = refused.errors[0]["reason"] if refused.errors else refused.detail
        return Outcome(False, error=_short(f"refused by the URL policy: {reason}"))
    except OSError:
        return Outcome(False, error="the webhook_url's host name does not resolve")
    body = body_of(claim.payload)
    headers = signed_headers(claim.secret, claim.id, datetime.now(UTC), body)
    try:
        # Streamed and never read: a receiver cannot make the hub hold a large response.
        async with http.stream(
            "POST",
            target.url,
            content=body.encode(),
            headers={**headers, **target.headers},
            timeout=policy.timeout_seconds,
            follow_redirects=False,
            extensions=target.extensions,
        ) as response:
            code = response.status_code
    except httpx.TimeoutException:
        return Outcome(False, error=f"timed out after {policy.timeout_seconds:g} s")
    except httpx.HTTPError as exc:
        return Outcome(False, error=_short(f"connection failed: {type(exc).__name__}"))
    if 200 <= code < 300:
        return Outcome(True, status_code=code)
    return Outcome(False, status_code=code, error=f"HTTP {code}")


async def _record(
    session_maker: async_sessionmaker[AsyncSession],
    policy: WebhookPolicy,
    now: datetime,
    claims: Sequence[Claim],
    outcomes: Sequence[Outcome],
) -> list[str]:
    kinds = []
    with writing():
        async with session_maker() as session:
            for claim, outcome in zip(claims, outcomes, strict=True):
                values: dict[str, Any] = {
                    "lease_until": None,
                    "last_status_code": outcome.status_code,
                    "updated_at": now,
                }
                if outcome.delivered:
                    kind = "delivered"
                    values.update(status=DELIVERED, delivered_at=now, last_error=None)
                elif claim.attempt >= policy.max_attempts:
                    kind = "dead"
                    values.update(status=DEAD, last_error=outcome.error)
                else:
                    kind = "failed"
                    values.update(
                        last_error=outcome.error,
                        next_attempt_at=now + backoff(policy, claim.attempt),
                    )
                result = await session.execute(
                    update(WebhookDelivery)
                    .where(
                        WebhookDelivery.id == claim.id,
                        WebhookDelivery.status == PENDING,
                        WebhookDelivery.attempts == claim.attempt,
                    )
                    .values(**values)
                )
                if getattr(result, "rowcount", 0) != 1:
                    log.warning("webhook claim lost before its result", delivery_id=claim.id)
                    continue
                if kind != "delivered":
                    log.info(
                        "webhook attempt failed",
                        delivery_id=claim.id,
                        partner_id=str(claim.partner_id),
                        attempt=claim.attempt,
                        error=outcome.error,
                        dead=kind == "dead",
                    )
                kinds.append(kind)
            await session.commit()
    return kinds
