"""``hub admin keys``: the keyring's versions -- list them, add and rotate them.

Every change is made under the keyring file's lock and written atomically (``Keyring.editing``),
is audited (actor ``cli:admin``, key ids and versions only, never a key), and ends with a
reminder to back the keyring up again: a version only the live file holds is lost with it.
With ``HUB_KEYRING`` the new keyring JSON is printed instead, to be set on every process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import click
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.cli_common import (
    CliError,
    cli_session,
    cli_settings,
    console,
    emit,
    err_console,
    json_option,
    open_keyring,
    require_migrated,
)
from hub.core import audit
from hub.core.db import create_hub_async_engine, writing
from hub.core.keyring import Keyring, KeyringError
from hub.jobs.signing_keys import retirement_grace, rotation_details
from hub.settings import Settings
from partners.identifiers.crypto import IdentifierCrypto
from partners.identifiers.rotation import RotationReport, Targets, remaining, rotate


def backup_reminder(ring: Keyring) -> str:
    source = str(ring.path) if ring.path is not None else "the new HUB_KEYRING value"
    return (
        f"The keyring changed: back it up again now (README, 'The keyring'): {source}, "
        "e.g. install -m 600 <keyring> /secure/backup/keyring-$(date +%F).json"
    )


INLINE_NOTICE = "HUB_KEYRING is in use: set it to the JSON above on every hub process."


@click.group()
def keys() -> None:
    """The keyring (outside the database): signing, audit, match and data keys."""


KeyChange = Callable[[Keyring], dict[str, Any]]


def change_keyring(action: str, target: str, change: KeyChange, as_json: bool) -> None:
    """Apply ``change`` to the keyring and audit it in one go: the audit entry commits only
    once the new keyring is on disk. Prints the outcome and the backup reminder."""
    settings = cli_settings()
    ring = open_keyring()

    async def main() -> dict[str, Any]:
        async with cli_session(settings) as session:
            if ring.path is None:
                outcome = change(ring)
            else:
                with ring.editing():
                    outcome = change(ring)
                    await _audit(session, action, target, outcome, ring)
                return outcome
            await _audit(session, action, target, outcome, ring)
            return outcome

    try:
        outcome = asyncio.run(main())
    except KeyringError as exc:
        raise CliError(str(exc)) from exc
    report(ring, outcome, as_json)


async def _audit(
    session: AsyncSession, action: str, target: str, outcome: dict[str, Any], ring: Keyring
) -> None:
    stored = "file" if ring.path is not None else "HUB_KEYRING (printed)"
    operation = action.removeprefix("keys.")
    version = outcome.get("match_version") or outcome.get("data_version")
    key_id = outcome.get("new_kid") or (f"v{version}" if version else None)
    await audit.append(
        session, audit.key_operation_event(operation, target, key_id, keyring=stored, **outcome)
    )


def report(ring: Keyring, outcome: dict[str, Any], as_json: bool) -> None:
    """The outcome, then the reminder (in the JSON as ``reminder``, for scripts)."""
    if ring.path is None:
        click.echo(ring.to_json())
        console.print(f"[yellow]{INLINE_NOTICE}[/]")
    if as_json:
        emit({**outcome, "reminder": backup_reminder(ring)}, as_json)
        return
    emit(outcome, as_json)
    console.print(f"[yellow]{backup_reminder(ring)}[/]", highlight=False)


@keys.command("list")
@json_option
def keys_list(as_json: bool) -> None:
    """Show key ids and versions (never the keys)."""
    ring = open_keyring()
    rows = [
        {"kind": kind, "id": k.kid, "created_at": k.created_at, "retired_at": k.retired_at}
        for kind, items in (("signing", ring.data.signing), ("audit", ring.data.audit))
        for k in items
    ] + [
        {
            "kind": kind,
            "id": f"v{v.version}",
            "created_at": v.created_at,
            "retired_at": v.retired_at,
        }
        for kind in ("match", "data")
        for v in getattr(ring.data, kind)
    ]
    emit(rows, as_json, ["kind", "id", "created_at", "retired_at"], "keys")


@keys.command("rotate-signing")
@json_option
def keys_rotate_signing(as_json: bool) -> None:
    """A new key signs tokens from now on; old keys stay in the JWKS until their tokens
    expire (the signing_key_rotation job does this on a schedule)."""
    grace = retirement_grace(cli_settings())

    def rotate(ring: Keyring) -> dict[str, Any]:
        details = rotation_details(ring.rotate_signing(grace))
        return {**details, "verifying_kids": [k.kid for k in ring.data.signing]}

    change_keyring("keys.signing_rotated", "signing", rotate, as_json)


@keys.command("add-audit-key")
@json_option
def keys_add_audit_key(as_json: bool) -> None:
    """Add an audit key: new audit heads are signed with it; heads signed earlier still
    verify (every audit key is kept)."""

    def add(ring: Keyring) -> dict[str, Any]:
        new = ring.add_audit_key()
        return {"new_kid": new.kid, "verifying_kids": [k.kid for k in ring.data.audit]}

    change_keyring("keys.audit_key_added", "audit", add, as_json)


def add_version(kind: str, unfinished: str, as_json: bool) -> None:
    """Add a match- or data-key version, refused while the last rotation of that kind is
    unfinished (two live versions already)."""

    def add(ring: Keyring) -> dict[str, Any]:
        live: Callable[[], list[int]] = getattr(ring, f"live_{kind}_versions")
        if len(live()) > 1:
            raise CliError(f"a {kind}-key rotation is still unfinished: {unfinished}")
        version = getattr(ring, f"add_{kind}_key")()
        return {f"{kind}_version": version, "live_versions": live()}

    change_keyring(f"keys.{kind}_key_added", kind, add, as_json)


@keys.command("add-match-key")
@json_option
def keys_add_match_key(as_json: bool) -> None:
    """Add a match-key version; new records are keyed with it. Then run rotate-match-key
    (or let the match_key_rotation job do it)."""
    add_version(
        "match",
        "run `hub admin keys rotate-match-key` until it reports no record left, "
        "then add a new version",
        as_json,
    )


@keys.command("add-data-key")
@json_option
def keys_add_data_key(as_json: bool) -> None:
    """Add a data-key version; digests and webhook secrets are sealed with it from now on.
    The match_key_rotation job (or rotate-match-key) re-seals the stored ones, then retires
    the older version."""
    add_version(
        "data",
        "run `hub admin keys rotate-match-key` (or the match_key_rotation job) until nothing "
        "is left, then add a new version",
        as_json,
    )


@keys.command("rotate-match-key")
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=5000,
    show_default=True,
    help="Rows per transaction.",
)
@json_option
def keys_rotate_match_key(batch_size: int, as_json: bool) -> None:
    """Move every stored row to the newest keys, online and resumable: re-key identifier
    records and reward members to the newest match-key version, re-seal digests and webhook
    secrets under the newest data key.

    Safe to stop and run again. When no row is left under an older version, the older
    versions are retired in the keyring.
    """
    settings = cli_settings()
    require_migrated(settings.database_url)
    ring = open_keyring()
    crypto = IdentifierCrypto(ring)
    targets = Targets.newest(crypto)
    older = len(ring.live_match_versions()) > 1 or len(ring.live_data_versions()) > 1
    report = asyncio.run(_rotate_rows(settings, crypto, batch_size, as_json))

    def retire(ring: Keyring) -> dict[str, Any]:
        match = ring.retire_match_versions(below=targets.match_version)
        data = ring.retire_data_versions(below=targets.data_version)
        return _rotation_outcome(report, match, data)

    if report.remaining or not (older or report.rekeyed or report.resealed):
        emit(_rotation_outcome(report, [], []), as_json)  # nothing retired: the keyring stays
        return
    change_keyring("keys.rows_rotated", "match,data", retire, as_json)


async def _rotate_rows(
    settings: Settings, crypto: IdentifierCrypto, batch_size: int, as_json: bool
) -> RotationReport:
    from rich.progress import Progress

    engine = create_hub_async_engine(settings.database_url)
    factory = async_sessionmaker(engine, expire_on_commit=False)
    try:
        with writing():
            async with factory() as session:
                total = await remaining(session, Targets.newest(crypto))
            with Progress(console=err_console, disable=as_json) as progress:
                task = progress.add_task("moving rows to the newest keys", total=total or None)
                report = await rotate(
                    factory,
                    crypto,
                    batch_size=batch_size,
                    on_batch=lambda done: progress.advance(task, done),
                )
                if report.remaining == 0:
                    # Hub processes pick up a new keyring within their poll interval; give
                    # any write under an older version that long, then sweep again.
                    await asyncio.sleep(settings.oauth.revocation_poll_seconds + 1)
                    again = await rotate(factory, crypto, batch_size=batch_size)
                    report.rekeyed += again.rekeyed
                    report.resealed += again.resealed
                    report.remaining = again.remaining
        return report
    finally:
        await engine.dispose()


def _rotation_outcome(report: RotationReport, match: list[int], data: list[int]) -> dict[str, Any]:
    return {
        "match_version": report.target_version,
        "data_version": report.data_version,
        "rekeyed": report.rekeyed,
        "resealed": report.resealed,
        "partners": len(report.partners),
        "remaining": report.remaining,
        "retired_versions": match,
        "retired_data_versions": data,
    }
