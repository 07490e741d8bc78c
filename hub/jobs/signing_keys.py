"""``signing_key_rotation``: a new token signing key on a schedule (weekly by default).

Each run adds a signing key that signs every token from then on. The key it replaces stops
signing but stays in the JWKS (``/.well-known/jwks.json``), so tokens it signed keep verifying
until they expire; a later run removes it from the JWKS once no token it signed can still be
accepted (:func:`retirement_grace`). The keyring file is changed under its lock and written
atomically, and every hub process picks it up within ``oauth.revocation_poll_seconds``.

With ``HUB_KEYRING`` (the keyring given whole in the environment) or a keyring file this
process cannot write, the run is recorded ``skipped`` with the reason: nothing rotates until an
operator runs ``hub admin keys rotate-signing`` and deploys the new keyring.
"""

from __future__ import annotations

import math
from typing import Any

import structlog

from hub.core import audit
from hub.core.audit import SYSTEM, key_operation_event
from hub.core.db import writing
from hub.core.keyring import KeyringReadOnly, SigningRotation
from hub.jobs.context import JobContext, JobSkipped
from hub.settings import Settings

log = structlog.get_logger("hub.jobs")
BACKUP_REMINDER = "the keyring changed: back it up again (README, 'The keyring')"


def retirement_grace(settings: Settings) -> int:
    """Seconds a retired signing key stays in the JWKS: a token's lifetime, plus the time other
    processes may still sign with it (until they reload the keyring), plus the verifier's clock
    leeway past ``exp``. After that no token it signed is accepted anywhere."""
    oauth = settings.oauth
    return (
        oauth.access_token_ttl_seconds
        + math.ceil(oauth.revocation_poll_seconds)
        + oauth.clock_leeway_seconds
    )


def rotation_details(rotation: SigningRotation) -> dict[str, Any]:
    """What the audit entry of a signing-key rotation says (key ids only, never a key)."""
    return {"new_kid": rotation.new_kid, "retired": rotation.retired, "removed": rotation.removed}


async def signing_key_rotation(ctx: JobContext) -> dict[str, int]:
    ring = ctx.keyring
    reason = ring.writable_reason()
    if reason is not None:
        raise JobSkipped(f"signing key not rotated: {reason}")
    with writing():
        async with ctx.session_maker() as session:
            try:
                # The audit entry commits only once the new keyring is on disk; a keyring
                # that cannot be written leaves no entry behind.
                with ring.editing():
                    rotation = ring.rotate_signing(retirement_grace(ctx.settings))
                    await audit.append(
                        session,
                        key_operation_event(
                            "signing_rotated",
                            "signing",
                            rotation.new_kid,
                            actor=SYSTEM.name,
                            job=ctx.name,
                            run_id=ctx.run_id,
                            **rotation_details(rotation),
                        ),
                    )
            except KeyringReadOnly as exc:
                await session.rollback()
                raise JobSkipped(f"signing key not rotated: {exc}") from exc
            await session.commit()
    log.warning(BACKUP_REMINDER, job=ctx.name, new_kid=rotation.new_kid)
    return {
        "added": 1,
        "retired": len(rotation.retired),
        "removed_from_jwks": len(rotation.removed),
    }
