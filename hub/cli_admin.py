"""``hub admin partners|clients|partnerships|audit|users`` — the same services as the API
(``hub admin keys`` is in ``hub.cli_keys``). ``hub.cli`` adds :data:`GROUPS` under ``hub admin``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from uuid import UUID

import click
import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.cli_common import (
    CLI_ACTOR,
    CliError,
    cli_settings,
    console,
    emit,
    json_option,
    open_keyring,
    run_in_session,
    secret_hasher,
)
from hub.core.audit import (
    AuditEntry,
    SignedHead,
    current_head,
    sign_head,
    verify_chain,
    verify_head_signature,
)
from partners.clients.schemas import ClientCreate
from partners.clients.service import ClientService
from partners.partners.schemas import PartnerCreate, PartnerUpdate
from partners.partners.service import PartnerService
from partners.partners.service import to_out as partner_out
from partners.partnerships.schemas import PartnershipCreate, PartnershipUpdate
from partners.partnerships.service import PartnershipService
from partners.partnerships.service import to_out as partnership_out

PARTNER_COLUMNS = ["id", "name", "category", "status", "webhook_url"]
CLIENT_COLUMNS = ["client_id", "name", "scopes", "auth_method", "status"]
PARTNERSHIP_COLUMNS = ["id", "status", "purposes", "min_audience", "epsilon"]


def _uuid(value: str) -> UUID:
    try:
        return UUID(value)
    except ValueError as exc:
        raise CliError(f"{value!r} is not an id (a UUID as printed by the list commands)") from exc


def _partner_service(session: AsyncSession) -> PartnerService:
    settings = cli_settings()
    return PartnerService(session, allow_loopback_http=settings.webhooks.allow_loopback_http)


def _partnership_service(session: AsyncSession) -> PartnershipService:
    settings = cli_settings().partnerships
    return PartnershipService(
        session,
        default_min_audience=settings.default_min_audience,
        floor_min_audience=settings.floor_min_audience,
    )


async def _all_pages(fetch: Any) -> list[Any]:
    items: list[Any] = []
    cursor = None
    while True:
        page = await fetch(cursor)
        items.extend(page.items)
        if not page.next_cursor:
            return items
        cursor = page.next_cursor


# -- partners -------------------------------------------------------------------------------
@click.group()
def partners() -> None:
    """Onboard, list, suspend and reactivate partners."""


@partners.command("list")
@json_option
def partners_list(as_json: bool) -> None:
    """List every partner."""

    async def run(session: AsyncSession) -> list[Any]:
        service = _partner_service(session)
        return await _all_pages(lambda c: service.list(cursor=c, limit=500))

    emit(run_in_session(run), as_json, PARTNER_COLUMNS, "partners")


@partners.command("create")
@click.option("--name", required=True)
@click.option("--category", required=True, help="airline, hotel, coffee, bank_card, ...")
@click.option("--webhook-url", default=None)
@json_option
def partners_create(name: str, category: str, webhook_url: str | None, as_json: bool) -> None:
    """Onboard a partner."""
    data = _convert({"name": name, "category": category, "webhook_url": webhook_url}, PartnerCreate)

    async def run(session: AsyncSession) -> Any:
        return partner_out(await _partner_service(session).onboard(data, CLI_ACTOR))

    emit(run_in_session(run), as_json, PARTNER_COLUMNS)


def _set_partner_status(partner_id: str, status: str, as_json: bool) -> None:
    data = PartnerUpdate(status=status)  # type: ignore[arg-type]

    async def run(session: AsyncSession) -> Any:
        partner = await _partner_service(session).update(_uuid(partner_id), data, CLI_ACTOR)
        return partner_out(partner)

    emit(run_in_session(run), as_json, PARTNER_COLUMNS)


@partners.command("suspend")
@click.argument("partner_id")
@json_option
def partners_suspend(partner_id: str, as_json: bool) -> None:
    """Suspend a partner: its tokens stop working at once."""
    _set_partner_status(partner_id, "suspended", as_json)


@partners.command("reactivate")
@click.argument("partner_id")
@json_option
def partners_reactivate(partner_id: str, as_json: bool) -> None:
    """Reactivate a suspended partner."""
    _set_partner_status(partner_id, "active", as_json)


def _convert(raw: dict[str, Any], kind: type[Any]) -> Any:
    try:
        return msgspec.convert({k: v for k, v in raw.items() if v is not None}, kind)
    except msgspec.ValidationError as exc:
        raise CliError(f"invalid input: {exc}") from exc


# -- clients --------------------------------------------------------------------------------
@click.group()
def clients() -> None:
    """Create, list and revoke a partner's OAuth clients."""


@clients.command("list")
@click.argument("partner_id")
@json_option
def clients_list(partner_id: str, as_json: bool) -> None:
    """List a partner's clients."""

    async def run(session: AsyncSession) -> list[Any]:
        partner = await _partner_service(session).get(_uuid(partner_id))
        service = ClientService(session, secret_hasher(cli_settings()))
        return await _all_pages(lambda c: service.list(partner.id, cursor=c, limit=500))

    emit(run_in_session(run), as_json, CLIENT_COLUMNS, "clients")


@clients.command("create")
@click.argument("partner_id")
@click.option("--name", required=True)
@click.option("--scope", "scopes", multiple=True, required=True, help="Repeat for each scope.")
@click.option(
    "--auth-method",
    type=click.Choice(["client_secret_basic", "client_secret_post", "private_key_jwt"]),
    default="client_secret_basic",
)
@click.option("--jwks-file", type=click.Path(exists=True, dir_okay=False), default=None)
@json_option
def clients_create(
    partner_id: str,
    name: str,
    scopes: tuple[str, ...],
    auth_method: str,
    jwks_file: str | None,
    as_json: bool,
) -> None:
    """Create a client; its secret is printed once."""
    jwks = json.loads(Path(jwks_file).read_text()) if jwks_file else None
    data = _convert(
        {"name": name, "scopes": list(scopes), "auth_method": auth_method, "jwks": jwks},
        ClientCreate,
    )

    async def run(session: AsyncSession) -> Any:
        partner = await _partner_service(session).get(_uuid(partner_id))
        return await ClientService(session, secret_hasher(cli_settings())).create(
            partner, data, CLI_ACTOR
        )

    emit(run_in_session(run), as_json, [*CLIENT_COLUMNS[:4], "client_secret"])


@clients.command("revoke")
@click.argument("partner_id")
@click.argument("client_id")
@json_option
def clients_revoke(partner_id: str, client_id: str, as_json: bool) -> None:
    """Revoke a client: its tokens stop working at once."""
    from partners.clients.service import to_out

    async def run(session: AsyncSession) -> Any:
        service = ClientService(session, secret_hasher(cli_settings()))
        return to_out(await service.revoke(_uuid(partner_id), client_id, CLI_ACTOR))

    emit(run_in_session(run), as_json, CLIENT_COLUMNS)


@clients.command("list-admin")
@json_option
def clients_list_admin(as_json: bool) -> None:
    """List the coalition-admin clients."""

    async def run(session: AsyncSession) -> list[Any]:
        service = ClientService(session, secret_hasher(cli_settings()))
        return await _all_pages(lambda c: service.list(None, cursor=c, limit=500))

    emit(run_in_session(run), as_json, CLIENT_COLUMNS, "admin clients")


@clients.command("revoke-admin")
@click.argument("client_id")
@json_option
def clients_revoke_admin(client_id: str, as_json: bool) -> None:
    """Revoke a coalition-admin client (e.g. a leaked bootstrap secret)."""
    from partners.clients.service import to_out

    async def run(session: AsyncSession) -> Any:
        service = ClientService(session, secret_hasher(cli_settings()))
        return to_out(await service.revoke(None, client_id, CLI_ACTOR))

    emit(run_in_session(run), as_json, CLIENT_COLUMNS)


# -- partnerships ---------------------------------------------------------------------------
@click.group()
def partnerships() -> None:
    """Propose, list, suspend, resume and end partnerships."""


@partnerships.command("list")
@json_option
def partnerships_list(as_json: bool) -> None:
    """List every partnership."""

    async def run(session: AsyncSession) -> list[Any]:
        service = _partnership_service(session)
        return await _all_pages(lambda c: service.list(None, cursor=c, limit=500))

    emit(run_in_session(run), as_json, PARTNERSHIP_COLUMNS, "partnerships")


@partnerships.command("create")
@click.argument("partner_a")
@click.argument("partner_b")
@click.option("--purpose", "purposes", multiple=True, required=True)
@click.option("--min-audience", type=click.IntRange(min=1), default=None)
@click.option("--epsilon", type=click.FloatRange(min=0, min_open=True), default=None)
@click.option("--allow-competitors", is_flag=True)
@json_option
def partnerships_create(
    partner_a: str,
    partner_b: str,
    purposes: tuple[str, ...],
    min_audience: int | None,
    epsilon: float | None,
    allow_competitors: bool,
    as_json: bool,
) -> None:
    """Propose a partnership; each member accepts with its own token."""
    data = _convert(
        {
            "members": [str(_uuid(partner_a)), str(_uuid(partner_b))],
            "purposes": list(purposes),
            "min_audience": min_audience,
            "epsilon": epsilon,
            "allow_competitors": allow_competitors,
        },
        PartnershipCreate,
    )

    async def run(session: AsyncSession) -> Any:
        return partnership_out(await _partnership_service(session).propose(data, CLI_ACTOR))

    emit(run_in_session(run), as_json, PARTNERSHIP_COLUMNS)


def _set_partnership_status(partnership_id: str, status: str, as_json: bool) -> None:
    data = PartnershipUpdate(status=status)  # type: ignore[arg-type]

    async def run(session: AsyncSession) -> Any:
        service = _partnership_service(session)
        return partnership_out(await service.update(_uuid(partnership_id), data, CLI_ACTOR))

    emit(run_in_session(run), as_json, PARTNERSHIP_COLUMNS)


@partnerships.command("suspend")
@click.argument("partnership_id")
@json_option
def partnerships_suspend(partnership_id: str, as_json: bool) -> None:
    """Suspend an active partnership."""
    _set_partnership_status(partnership_id, "suspended", as_json)


@partnerships.command("resume")
@click.argument("partnership_id")
@json_option
def partnerships_resume(partnership_id: str, as_json: bool) -> None:
    """Resume a suspended partnership."""
    _set_partnership_status(partnership_id, "active", as_json)


@partnerships.command("end")
@click.argument("partnership_id")
@json_option
def partnerships_end(partnership_id: str, as_json: bool) -> None:
    """End a partnership (final)."""
    _set_partnership_status(partnership_id, "ended", as_json)


# -- audit ----------------------------------------------------------------------------------
@click.group()
def audit() -> None:
    """The hash-chained audit log."""


@audit.command("head")
def audit_head() -> None:
    """Print the current head, signed with the audit key (keep it to detect truncation)."""
    ring = open_keyring()

    async def run(session: AsyncSession) -> Any:
        count, head_hash = await current_head(session)
        return sign_head(ring, count, head_hash)

    click.echo(msgspec.json.encode(run_in_session(run)).decode())


@audit.command("verify")
@click.option(
    "--head",
    "head_file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="A signed head saved earlier (GET /v1/audit/head): detects a truncated tail.",
)
@json_option
def audit_verify(head_file: str | None, as_json: bool) -> None:
    """Recompute the chain; exit 1 if a row was edited, deleted or the tail truncated."""
    ring = open_keyring()
    signed = None
    if head_file:
        try:
            signed = msgspec.json.decode(Path(head_file).read_bytes(), type=SignedHead)
        except msgspec.DecodeError as exc:
            raise CliError(f"{head_file} is not a signed audit head: {exc}") from exc
        if not verify_head_signature(ring, signed):
            raise CliError(f"the signature of {head_file} does not verify with the audit key")

    async def run(session: AsyncSession) -> Any:
        entries = (await session.scalars(select(AuditEntry).order_by(AuditEntry.seq))).all()
        return verify_chain(entries, signed)

    report = run_in_session(run)
    if as_json:
        click.echo(msgspec.json.encode(report).decode())
    elif report.ok:
        console.print(f"[green]audit log intact[/]: {report.rows} rows")
    else:
        for problem in report.problems:
            console.print(f"[red]{problem}[/]")
    if not report.ok:
        raise SystemExit(1)


# -- console users --------------------------------------------------------------------------
@click.group()
def users() -> None:
    """Accounts of the admin console (/admin): create, list, disable."""


USER_COLUMNS = ["username", "disabled", "created_at", "last_sign_in_at"]


def _user_out(user: Any) -> dict[str, Any]:
    return {column: getattr(user, column) for column in USER_COLUMNS}


@users.command("create")
@click.argument("username")
@click.option(
    "--password",
    prompt=True,
    hide_input=True,
    confirmation_prompt=True,
    envvar="HUB_CONSOLE_PASSWORD",
    help="Prompted for when left out (or read from HUB_CONSOLE_PASSWORD).",
)
@json_option
def users_create(username: str, password: str, as_json: bool) -> None:
    """Create a console account; only a slow hash of its password is stored."""
    from hub.console.accounts import ConsoleAccounts

    async def run(session: AsyncSession) -> Any:
        accounts = ConsoleAccounts(session, secret_hasher(cli_settings()))
        return _user_out(await accounts.create(username, password, CLI_ACTOR))

    emit(run_in_session(run), as_json, USER_COLUMNS)


@users.command("list")
@json_option
def users_list(as_json: bool) -> None:
    """List the console accounts."""
    from hub.console.accounts import ConsoleAccounts

    async def run(session: AsyncSession) -> list[Any]:
        accounts = ConsoleAccounts(session, secret_hasher(cli_settings()))
        return [_user_out(user) for user in await accounts.list()]

    emit(run_in_session(run), as_json, USER_COLUMNS, "console users")


@users.command("disable")
@click.argument("username")
@json_option
def users_disable(username: str, as_json: bool) -> None:
    """Disable a console account; its open sessions end at once."""
    from hub.console.accounts import ConsoleAccounts

    async def run(session: AsyncSession) -> Any:
        accounts = ConsoleAccounts(session, secret_hasher(cli_settings()))
        return _user_out(await accounts.disable(username, CLI_ACTOR))

    emit(run_in_session(run), as_json, USER_COLUMNS)


GROUPS = (partners, clients, partnerships, audit, users)
