"""Names for the ids the audit log and other pages hold: partners, clients, partnerships, offers.

Pages show a name where a person expects one, and keep the id at hand (a title attribute, a
small secondary line) for search and for the API. Everything a page needs is read in a few
queries for the whole page, never one per row.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from uuid import UUID

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.core.audit import AuditEntry
from matching.models import Offer
from partners.clients.models import OAuthClient
from partners.partners.models import Partner
from partners.partnerships.models import Partnership

CLIENT_ACTOR = "client:"


@dataclass(frozen=True, slots=True)
class Label:
    """What a page writes for an id: ``text`` for people, ``id`` kept alongside it."""

    text: str
    id: str | None = None
    href: str | None = None

    @property
    def named(self) -> bool:
        """Whether ``text`` says more than the id itself."""
        return self.id is not None and self.text != self.id


@dataclass(slots=True)
class Names:
    """The names of the objects a page refers to, by id (as strings, the audit log's form)."""

    partners: dict[str, str] = field(default_factory=dict)
    clients: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # name, partner
    partnerships: dict[str, list[str]] = field(default_factory=dict)  # member ids
    offers: dict[str, str] = field(default_factory=dict)  # title

    def partner(self, partner_id: object) -> Label:
        key = str(partner_id)
        name = self.partners.get(key)
        if name is None:
            return Label(key, key)
        return Label(name, key, f"/admin/partners/{key}")

    def actor(self, actor: str) -> Label:
        """``client:<id>`` as the client's partner and name; other actors as they are."""
        if not actor.startswith(CLIENT_ACTOR):
            return Label(actor)
        client_id = actor.removeprefix(CLIENT_ACTOR)
        return Label(self._client(client_id), actor)

    def target(self, target_type: str, target_id: str | None) -> Label:
        if target_id is None:
            return Label(target_type)
        if target_type == "partner" and target_id in self.partners:
            return self.partner(target_id)
        if target_type == "client" and target_id in self.clients:
            return Label(f"client {self._client(target_id)}", target_id)
        if target_type == "partnership" and target_id in self.partnerships:
            members = " & ".join(self.partner(m).text for m in self.partnerships[target_id])
            return Label(f"partnership {members}", target_id, f"/admin/partnerships/{target_id}")
        if target_type == "offer" and target_id in self.offers:
            return Label(f'offer "{self.offers[target_id]}"', target_id, "/admin/offers")
        return Label(target_type, target_id)

    def _client(self, client_id: str) -> str:
        known = self.clients.get(client_id)
        if known is None:
            return client_id
        name, partner_id = known
        owner = self.partners.get(partner_id, partner_id) if partner_id else "coalition admin"
        return f"{owner} · {name}"


async def all_partner_names(session: AsyncSession) -> dict[str, str]:
    return {str(pid): name for pid, name in await session.execute(select(Partner.id, Partner.name))}


async def names_for_entries(session: AsyncSession, entries: Iterable[AuditEntry]) -> Names:
    """The names every id in these audit entries refers to (four queries at most)."""
    rows = list(entries)
    names = Names(partners=await all_partner_names(session))
    clients = {e.actor.removeprefix(CLIENT_ACTOR) for e in rows if e.actor.startswith(CLIENT_ACTOR)}
    clients |= _targets(rows, "client")
    if clients:
        found = await session.execute(
            select(OAuthClient.client_id, OAuthClient.name, OAuthClient.partner_id).where(
                OAuthClient.client_id.in_(clients)
            )
        )
        names.clients = {cid: (name, str(pid) if pid else None) for cid, name, pid in found}
    partnership_ids = _uuids(_targets(rows, "partnership"))
    if partnership_ids:
        partnerships = await session.scalars(
            select(Partnership).where(Partnership.id.in_(partnership_ids))
        )
        names.partnerships = {
            str(p.id): [str(m.partner_id) for m in p.members] for p in partnerships
        }
    offer_ids = _uuids(_targets(rows, "offer"))
    if offer_ids:
        titles = await session.execute(select(Offer.id, Offer.title).where(Offer.id.in_(offer_ids)))
        names.offers = {str(oid): title for oid, title in titles}
    return names


def _targets(entries: list[AuditEntry], target_type: str) -> set[str]:
    return {e.target_id for e in entries if e.target_type == target_type and e.target_id}


def _uuids(values: Iterable[str]) -> set[UUID]:
    """The values that are UUIDs (a target id is free text in the log)."""
    found: set[UUID] = set()
    for value in values:
        try:
            found.add(UUID(value))
        except ValueError:
            continue
    return found
