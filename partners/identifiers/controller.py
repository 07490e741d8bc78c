"""``/v1/identifiers``: a partner's own identifier records (scope ``identifiers:write``)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.params import JSONBody
from sqlalchemy.ext.asyncio import AsyncSession

from hub.core.audit import Actor
from hub.core.auth import Principal, requires_partner, requires_scope
from hub.core.errors import InvalidInput, PayloadTooLarge
from hub.core.openapi import OPENAPI_BODY_OPT, AnnotatedForm
from partners.identifiers.changes import ChangeFollower
from partners.identifiers.crypto import IdentifierCrypto
from partners.identifiers.schemas import (
    MAX_SYNC_BODY_BYTES,
    MAX_SYNC_RECORDS,
    ConsentsIn,
    ConsentsOut,
    ConsentUpdatesBody,
    CountsOut,
    EraseBody,
    EraseIn,
    EraseOut,
    IdentifierRecordsBody,
    RecordsIn,
    UploadOut,
)
from partners.identifiers.service import IdentifierService
from partners.identifiers.validation import (
    RecordError,
    check_consents,
    check_customer_ref,
    check_records,
)
from partners.kit import parse_digest

WRITE_SCOPE = "identifiers:write"


def provide_identifier_service(
    db_session: NamedDependency[AsyncSession], state: State
) -> IdentifierService:
    crypto: IdentifierCrypto = state.identifier_crypto
    follower: ChangeFollower | None = state.get("array_patcher")
    return IdentifierService(db_session, crypto, follower)


def _too_many(count: int, what: str) -> None:
    if count > MAX_SYNC_RECORDS:
        raise PayloadTooLarge(
            f"This request holds {count} {what}; the limit is {MAX_SYNC_RECORDS}.",
            fix=f"Split it into requests of at most {MAX_SYNC_RECORDS:,} {what}.",
        )


def _refuse(errors: list[RecordError], total: int, what: str) -> InvalidInput:
    bad = len({e.index for e in errors})
    return InvalidInput(
        f"{bad} of {total} {what} are invalid; nothing was stored.",
        errors=[e.as_dict() for e in errors],
    )


class IdentifierController(Controller):
    path = "/v1/identifiers"
    tags = ["identifiers"]
    guards = [requires_partner, requires_scope(WRITE_SCOPE)]
    dependencies = {"identifiers": Provide(provide_identifier_service, sync_to_thread=False)}

    @post(
        "/",
        status_code=200,
        request_max_body_size=MAX_SYNC_BODY_BYTES,
        summary="Upload up to 10,000 hashed identifier records (all or nothing)",
        opt={OPENAPI_BODY_OPT: IdentifierRecordsBody},
    )
    async def upload(
        self,
        data: JSONBody[RecordsIn],
        identifiers: NamedDependency[IdentifierService],
        principal: NamedDependency[Principal],
        actor: NamedDependency[Actor],
    ) -> UploadOut:
        _too_many(len(data.records), "records")
        valid, errors = check_records(data.records)
        if errors:
            raise _refuse(errors, len(data.records), "records")
        result = await identifiers.upsert(principal.partner, valid, actor)
        return UploadOut(
            accepted=result.accepted,
            created=result.created,
            updated=result.updated,
            unchanged=result.unchanged,
        )

    @post(
        "/consents",
        status_code=200,
        request_max_body_size=MAX_SYNC_BODY_BYTES,
        summary="Set people's consents (all their records); withdrawals apply at once",
        opt={OPENAPI_BODY_OPT: ConsentUpdatesBody},
    )
    async def consents(
        self,
        data: JSONBody[ConsentsIn],
        identifiers: NamedDependency[IdentifierService],
        principal: NamedDependency[Principal],
        actor: NamedDependency[Actor],
    ) -> ConsentsOut:
        _too_many(len(data.updates), "updates")
        errors: list[RecordError] = []
        updates: dict[str, int] = {}
        for index, item in enumerate(data.updates):
            if not isinstance(item, dict) or set(item) - {"customer_ref", "consents"}:
                errors.append(RecordError(index, "", 'an update is {"customer_ref", "consents"}'))
                continue
            try:
                ref = check_customer_ref(item.get("customer_ref"))
            except ValueError as exc:
                errors.append(RecordError(index, "customer_ref", str(exc)))
                continue
            try:
                mask = check_consents(item.get("consents"))
            except ValueError as exc:
                errors.append(RecordError(index, "consents", str(exc)))
                continue
            if ref in updates:
                errors.append(RecordError(index, "customer_ref", "the same person twice"))
                continue
            updates[ref] = mask
        if errors:
            raise _refuse(errors, len(data.updates), "updates")
        people, records, unknown = await identifiers.set_consents(
            principal.partner, list(updates.items()), actor
        )
        return ConsentsOut(people=people, records=records, unknown_customer_refs=unknown)

    @post(
        "/erase",
        status_code=200,
        request_max_body_size=MAX_SYNC_BODY_BYTES,
        summary="Erase people (by customer_ref) or records (by id_hash) everywhere",
        opt={OPENAPI_BODY_OPT: AnnotatedForm(EraseBody)},
    )
    async def erase(
        self,
        data: JSONBody[EraseIn],
        identifiers: NamedDependency[IdentifierService],
        principal: NamedDependency[Principal],
        actor: NamedDependency[Actor],
    ) -> EraseOut:
        if (data.customer_refs is None) == (data.id_hashes is None):
            raise InvalidInput(
                "Name either customer_refs or id_hashes, not both and not neither.",
                fix='Send {"customer_refs": [...]} or {"id_hashes": [...]}.',
            )
        items: list[Any] = data.customer_refs or data.id_hashes or []
        _too_many(len(items), "identifiers")
        errors: list[RecordError] = []
        refs: list[str] = []
        digests: list[bytes] = []
        field = "customer_refs" if data.customer_refs is not None else "id_hashes"
        for index, item in enumerate(items):
            try:
                if field == "customer_refs":
                    refs.append(check_customer_ref(item))
                elif not isinstance(item, str):
                    errors.append(RecordError(index, field, "an id_hash is a string"))
                else:
                    digests.append(parse_digest(item))
            except ValueError as exc:  # InvalidIdentifier is one; its text is the reason
                errors.append(RecordError(index, field, str(exc)))
        if errors:
            raise _refuse(errors, len(items), field)
        removed, people = await identifiers.erase(
            principal.partner, actor, customer_refs=refs, digests=digests
        )
        return EraseOut(records_removed=removed, people=people)

    @get("/summary", summary="How many records and people the caller has stored")
    async def summary(
        self,
        identifiers: NamedDependency[IdentifierService],
        principal: NamedDependency[Principal],
    ) -> CountsOut:
        return CountsOut(**await identifiers.counts(principal.partner))
