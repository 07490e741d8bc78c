"""The keyring: every secret key of the hub, kept outside the database.

Stored as JSON in ``HUB_KEYRING_FILE`` (default ``./var/keyring.json``, created on first start
with mode 0600) or given whole in ``HUB_KEYRING``. It holds versions of the token signing keys
(RS256, RFC 9068 §2.1), the audit signing key (Ed25519, RFC 9864), and — for the identifier
exchange — the match key and the data key. Losing it loses the ability to verify tokens and to
match: back it up (see README) after every change.

Every process reads the file and polls it (``reload_if_changed``); a change is made under an
exclusive lock beside the file (``editing``), re-read first so two writers never lose each
other's versions, and written atomically (temp file in the same directory, fsync, rename).
"""

from __future__ import annotations

import base64
import fcntl
import os
import secrets
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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
    # A retired match-key version keys no record, a retired data-key version seals nothing
    # (set when a rotation finished). Its secret stays: a row written by a process that had not
    # reloaded the keyring yet is still readable, and the next rotation moves it on.
    retired_at: int | None = None


class KeyringData(msgspec.Struct):
    format: int = 1
    signing: list[SigningKey] = msgspec.field(default_factory=list)
    audit: list[SigningKey] = msgspec.field(default_factory=list)
    match: list[SecretVersion] = msgspec.field(default_factory=list)
    data: list[SecretVersion] = msgspec.field(default_factory=list)


class KeyringError(RuntimeError):
    """The keyring is missing, unreadable or cannot be written."""


class KeyringReadOnly(KeyringError):
    """The keyring cannot be changed here: it came from ``HUB_KEYRING`` or its file is not
    writable. The message says which."""


INLINE_READ_ONLY = (
    "the keyring comes from HUB_KEYRING, which the hub cannot rewrite: add keys with "
    "`hub admin keys ...` (it prints the new JSON) and set HUB_KEYRING to it on every process"
)


@dataclass(frozen=True)
class SigningRotation:
    """What :meth:`Keyring.rotate_signing` did, for the audit and the operator."""

    new_kid: str
    retired: list[str]  # stopped signing now; still in the JWKS while their tokens live
    removed: list[str]  # left the JWKS: every token they signed has expired


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


def _file_identity(path: Path) -> tuple[int, int, int] | None:
    """What changes when the file is replaced (a rename gives a new inode) or rewritten."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return (stat.st_ino, stat.st_mtime_ns, stat.st_size)


class Keyring:
    """Read access to the keys, plus the few operations that add versions."""

    def __init__(self, data: KeyringData, path: Path | None) -> None:
        self.data = data
        self.path = path
        self._identity = _file_identity(path) if path else None
        self._build()

    def _build(self) -> None:
        active = self.active_signing()
        signing_key = RSAKey.import_key(active.jwk)
        public = [RSAKey.import_key(k.jwk).as_dict(private=False) for k in self.data.signing]
        # One assignment: a token issued while another task reloads never pairs one key's
        # kid with another key.
        self.signer: tuple[str, RSAKey] = (active.kid, signing_key)
        self.signing_key = signing_key
        self.verification_keys = KeySet.import_key_set({"keys": public})
        self.public_jwks = {"keys": public}
        self.audit_key = OKPKey.import_key(self.active_audit().jwk)

    def active_signing(self) -> SigningKey:
        active = [k for k in self.data.signing if k.retired_at is None]
        if not active:
            raise KeyringError("the keyring has no active signing key")
        return active[-1]

    def active_audit(self) -> SigningKey:
        """The audit key that signs new heads: the newest. Older ones only verify."""
        if not self.data.audit:
            raise KeyringError("the keyring has no audit key")
        return self.data.audit[-1]

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
        """The newest data-key version: digests are sealed with it."""
        return self._newest("data")

    def live_data_versions(self) -> list[int]:
        """Versions that may still seal digests (newest first)."""
        return sorted((i.version for i in self.data.data if i.retired_at is None), reverse=True)

    def add_data_key(self) -> int:
        version = self.data_version + 1
        self.data.data.append(_new_secret(version))
        return version

    def retire_data_versions(self, below: int) -> list[int]:
        now = int(time.time())
        retired = []
        for item in self.data.data:
            if item.version < below and item.retired_at is None:
                item.retired_at = now
                retired.append(item.version)
        return retired

    def audit_public_keys(self) -> KeySet:
        """Every audit key ever used: a head signed by a superseded key still verifies."""
        return KeySet.import_key_set(
            {"keys": [OKPKey.import_key(k.jwk).as_dict(private=False) for k in self.data.audit]}
        )

    def add_audit_key(self) -> SigningKey:
        """A new audit key signs heads from now on; the older ones are kept to verify."""
        now = int(time.time())
        for key in self.data.audit:
            if key.retired_at is None:
                key.retired_at = now
        new = _new_audit_key()
        self.data.audit.append(new)
        self._build()
        return new

    def rotate_signing(self, grace_seconds: float) -> SigningRotation:
        """Add a signing key that signs from now on; the active one stops signing and stays
        in the JWKS; keys retired more than ``grace_seconds`` ago leave it.

        ``grace_seconds`` must cover a token's lifetime, the verifier's clock leeway and the
        time other processes take to reload the keyring (they sign with the old key until
        then): past it no token a retired key signed can still be accepted.
        """
        now = int(time.time())
        retired, removed, kept = [], [], []
        for key in self.data.signing:
            if key.retired_at is None:
                key.retired_at = now
                retired.append(key.kid)
            if key.retired_at + grace_seconds < now:
                removed.append(key.kid)
            else:
                kept.append(key)
        new = _new_signing_key()
        self.data.signing = [*kept, new]
        self._build()
        return SigningRotation(new_kid=new.kid, retired=retired, removed=removed)

    def reload_if_changed(self) -> bool:
        """Re-read the file when another process rotated a key. Returns True when it did."""
        if self.path is None:
            return False
        identity = _file_identity(self.path)
        if identity is None or identity == self._identity:
            return False
        self._load(identity)
        return True

    def _load(self, identity: tuple[int, int, int] | None) -> None:
        assert self.path is not None
        self.data = _decode(self.path.read_bytes(), str(self.path))
        self._identity = identity
        self._build()

    def writable_reason(self) -> str | None:
        """Why this process cannot change the keyring, or None when it can."""
        if self.path is None:
            return INLINE_READ_ONLY
        # Writing needs a temp file and a rename in the directory, and the lock file.
        for target in (self.path.parent, self.path):
            if not os.access(target, os.W_OK):
                return f"the keyring file {self.path} is not writable by this process ({target})"
        return None

    @contextmanager
    def editing(self) -> Iterator[Keyring]:
        """Change the keyring: under an exclusive lock, re-read the file, let the caller
        change this keyring, then write it atomically. Nothing is written if the block fails
        (the file is read again instead). Raises :class:`KeyringReadOnly`."""
        reason = self.writable_reason()
        if reason is not None:
            raise KeyringReadOnly(reason)
        assert self.path is not None
        lock_path = self.path.with_name(f".{self.path.name}.lock")
        try:
            lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise KeyringReadOnly(f"cannot lock the keyring ({lock_path}): {exc.strerror}") from exc
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            if not self.path.exists():
                raise KeyringError(f"no keyring at {self.path}; restore it from a backup")
            self._load(_file_identity(self.path))
            try:
                yield self
                self.save()
            except BaseException:
                self._load(_file_identity(self.path))
                raise
        finally:
            os.close(lock_fd)  # releases the lock

    def save(self) -> None:
        if self.path is None:
            raise KeyringReadOnly(INLINE_READ_ONLY)
        try:
            write_keyring_file(self.path, self.data)
        except OSError as exc:
            raise KeyringReadOnly(
                f"the keyring file {self.path} cannot be written: {exc.strerror or exc}"
            ) from exc
        self._identity = _file_identity(self.path)

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
    # The rename itself must survive a crash too.
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


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
