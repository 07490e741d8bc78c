"""The keyring: every secret key of the hub, kept outside the database.

Stored as JSON in ``HUB_KEYRING_FILE`` (default ``./var/keyring.json``, created on first start
with mode 0600) or given whole in ``HUB_KEYRING``. It holds versions of the token signing keys
(RS256, RFC 9068 §2.1), the audit signing key (Ed25519, RFC 9864), and — for the identifier
exchange — the match key and the data key. Losing it loses the ability to verify tokens and to
match: back it up (see README).
"""

from __future__ import annotations

import base64
import os
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
from joserfc.jwk import KeySet, OKPKey, RSAKey

SIGNING_ALG = "RS256"
# RFC 9864 fully-specified EdDSA algorithm name.
AUDIT_ALG = "Ed25519"


class SigningKey(msgspec.Struct):
    kid: str
    jwk: dict[str, Any]
    created_at: int
    # A retired key no longer signs; it verifies until every token it signed has expired.
    retired_at: int | None = None


class SecretVersion(msgspec.Struct):
    version: int
    secret: str  # base64 of 32 random bytes
    created_at: int
    # A retired match-key version no longer keys any record (set when a rotation finished).
    retired_at: int | None = None


class KeyringData(msgspec.Struct):
    format: int = 1
    signing: list[SigningKey] = msgspec.field(default_factory=list)
    audit: list[SigningKey] = msgspec.field(default_factory=list)
    match: list[SecretVersion] = msgspec.field(default_factory=list)
    data: list[SecretVersion] = msgspec.field(default_factory=list)


class KeyringError(RuntimeError):
    """The keyring is missing, unreadable or cannot be written."""


def _kid(prefix: str) -> str:
    return f"{prefix}-{time.strftime('%Y%m%d')}-{secrets.token_hex(4)}"


def _new_signing_key() -> SigningKey:
    kid = _kid("sig")
    key = RSAKey.generate_key(2048, parameters={"kid": kid, "alg": SIGNING_ALG, "use": "sig"})
    return SigningKey(kid=kid, jwk=key.as_dict(private=True), created_at=int(time.time()))


def _new_audit_key() -> SigningKey:
    kid = _kid("audit")
    key = OKPKey.generate_key("Ed25519", parameters={"kid": kid, "alg": AUDIT_ALG, "use": "sig"})
    return SigningKey(kid=kid, jwk=key.as_dict(private=True), created_at=int(time.time()))


def _new_secret(version: int) -> SecretVersion:
    secret = base64.b64encode(secrets.token_bytes(32)).decode()
    return SecretVersion(version=version, secret=secret, created_at=int(time.time()))


def new_keyring() -> KeyringData:
    return KeyringData(
        signing=[_new_signing_key()],
        audit=[_new_audit_key()],
        match=[_new_secret(1)],
        data=[_new_secret(1)],
    )


class Keyring:
    """Read access to the keys, plus the few operations that add versions."""

    def __init__(self, data: KeyringData, path: Path | None) -> None:
        self.data = data
        self.path = path
        self._mtime = path.stat().st_mtime_ns if path and path.exists() else None
        self._build()

    def _build(self) -> None:
        self.signing_key = RSAKey.import_key(self.active_signing().jwk)
        public = [RSAKey.import_key(k.jwk).as_dict(private=False) for k in self.data.signing]
        self.verification_keys = KeySet.import_key_set({"keys": public})
        self.public_jwks = {"keys": public}
        self.audit_key = OKPKey.import_key(self.data.audit[-1].jwk)

    def active_signing(self) -> SigningKey:
        active = [k for k in self.data.signing if k.retired_at is None]
        if not active:
            raise KeyringError("the keyring has no active signing key")
        return active[-1]

    # -- match and data keys (identifier exchange) ------------------------------------------

    def _secret(self, kind: str, version: int) -> bytes:
        for item in getattr(self.data, kind):
            if item.version == version:
                return base64.b64decode(item.secret)
        raise KeyringError(f"the keyring has no {kind} key version {version}")

    def _newest(self, kind: str) -> int:
        versions: list[SecretVersion] = getattr(self.data, kind)
        if not versions:
            raise KeyringError(f"the keyring has no {kind} key")
        return max(item.version for item in versions)

    def match_secret(self, version: int) -> bytes:
        return self._secret("match", version)

    @property
    def match_version(self) -> int:
        """The newest match-key version: new records are keyed with it."""
        return self._newest("match")

    def live_match_versions(self) -> list[int]:
        """Versions that may still key records (newest first)."""
        return sorted((i.version for i in self.data.match if i.retired_at is None), reverse=True)

    def add_match_key(self) -> int:
        version = self.match_version + 1
        self.data.match.append(_new_secret(version))
        return version

    def retire_match_versions(self, below: int) -> list[int]:
        now = int(time.time())
        retired = []
        for item in self.data.match:
            if item.version < below and item.retired_at is None:
                item.retired_at = now
                retired.append(item.version)
        return retired

    def data_secret(self, version: int) -> bytes:
        return self._secret("data", version)

    @property
    def data_version(self) -> int:
        return self._newest("data")

    def audit_public_keys(self) -> KeySet:
        return KeySet.import_key_set(
            {"keys": [OKPKey.import_key(k.jwk).as_dict(private=False) for k in self.data.audit]}
        )

    def rotate_signing(self, token_ttl_seconds: int) -> SigningKey:
        """Add a signing key; retire the old ones and drop those whose tokens all expired."""
        now = int(time.time())
        kept = []
        for key in self.data.signing:
            if key.retired_at is None:
                key.retired_at = now
            if key.retired_at + token_ttl_seconds + 60 >= now:
                kept.append(key)
        new = _new_signing_key()
        kept.append(new)
        self.data.signing = kept
        self._build()
        return new

    def reload_if_changed(self) -> bool:
        """Re-read the file when another process rotated a key. Returns True when it did."""
        if self.path is None or not self.path.exists():
            return False
        mtime = self.path.stat().st_mtime_ns
        if mtime == self._mtime:
            return False
        self.data = _decode(self.path.read_bytes(), str(self.path))
        self._mtime = mtime
        self._build()
        return True

    def save(self) -> None:
        if self.path is None:
            raise KeyringError(
                "the keyring came from HUB_KEYRING; set the printed JSON as its new value"
            )
        write_keyring_file(self.path, self.data)
        self._mtime = self.path.stat().st_mtime_ns

    def to_json(self) -> str:
        return msgspec.json.encode(self.data).decode()


def _decode(raw: bytes | str, source: str) -> KeyringData:
    try:
        return msgspec.json.decode(raw, type=KeyringData)
    except msgspec.DecodeError as exc:
        raise KeyringError(f"the keyring in {source} is not valid: {exc}") from exc


def write_keyring_file(path: Path, data: KeyringData) -> None:
    """Write atomically with mode 0600: a crash never leaves a half-written keyring."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".keyring-")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(msgspec.json.encode(data))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_keyring(path: Path, inline: str = "", *, create: bool = True) -> Keyring:
    """Load the keyring from ``inline`` JSON or ``path``; create the file when asked."""
    if inline:
        return Keyring(_decode(inline, "HUB_KEYRING"), None)
    if not path.exists():
        if not create:
            raise KeyringError(f"no keyring at {path}; start the hub once or restore a backup")
        tmp = path.with_name(f".keyring-new-{os.getpid()}-{secrets.token_hex(4)}")
        write_keyring_file(tmp, new_keyring())
        try:
            # link() fails if the name exists: two processes starting together create one
            # keyring, and nobody ever reads a half-written file.
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    return Keyring(_decode(path.read_bytes(), str(path)), path)
