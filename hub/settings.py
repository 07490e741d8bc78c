"""Settings: one msgspec Struct loaded from config TOML files and ``HUB_*`` variables.

Order (later wins): ``config/default.toml``, the file named by ``HUB_CONFIG`` (if any), then
environment variables named ``HUB_<SECTION>_<FIELD>``. ``HUB_KEYRING`` is an alias for
``HUB_KEYRING_INLINE`` as the design names it. A list setting takes a comma-separated variable.

A bad value is refused with the variable (or the setting) named; no number may be negative,
and those counting things that must exist (ports, workers, rates, batch sizes) are at least 1.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from pathlib import Path
from typing import Any

import msgspec

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"
ENV_ALIASES = {"HUB_KEYRING": ("keyring", "inline")}


class ServerSettings(msgspec.Struct, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    data_dir: str = "./var"
    max_json_body_bytes: int = 1_048_576
    # Reverse proxies (addresses or networks, "*" for any) whose X-Forwarded-For and
    # X-Forwarded-Proto are believed; from anyone else those headers are ignored.
    forwarded_allow_ips: list[str] = msgspec.field(default_factory=list)


class DatabaseSettings(msgspec.Struct, forbid_unknown_fields=True):
    url: str = ""
    echo: bool = False
    # PostgreSQL: one process's request pool (steady, and extra under a burst). A process
    # opens at most pool_size + max_overflow + 9 connections (its two small synchronous
    # pools), plus one per upload parsing process: keep the sum over the hub's processes under
    # the server's max_connections.
    pool_size: int = 10
    max_overflow: int = 5
    # How long a request waits for a free connection before it is answered 503.
    pool_timeout_seconds: float = 10.0
    sqlite_busy_timeout_ms: int = 30_000


class KeyringSettings(msgspec.Struct, forbid_unknown_fields=True):
    file: str = ""
    inline: str = ""


class OAuthSettings(msgspec.Struct, forbid_unknown_fields=True):
    # Empty: the address served, http://<server.host>:<server.port> (see Settings).
    issuer: str = ""
    resource: str = "urn:coalition-hub:api"
    access_token_ttl_seconds: int = 900
    assertion_max_age_seconds: int = 3600
    failed_auth_limit: int = 10
    failed_auth_limit_per_address: int = 100
    failed_auth_window_seconds: int = 300
    revocation_poll_seconds: float = 1.0
    # How far past its exp (and before its nbf) a token is still accepted: clock skew.
    clock_leeway_seconds: int = 30
    secret_hash_time_cost: int = 3
    secret_hash_memory_kib: int = 65536


class LimitSettings(msgspec.Struct, forbid_unknown_fields=True):
    requests_per_minute: int = 1200
    burst: int = 200


class WebhookSettings(msgspec.Struct, forbid_unknown_fields=True):
    allow_loopback_http: bool = False
    # Deliveries: items per delivery, request timeout, retries with exponential backoff
    # (base * 2**attempt, capped) until dead-lettered, and how long delivered ones are kept.
    batch_items: int = 1000
    timeout_seconds: float = 10.0
    max_attempts: int = 8
    backoff_base_seconds: float = 10.0
    backoff_max_seconds: float = 3600.0
    retention_days: int = 30


class JobSettings(msgspec.Struct, forbid_unknown_fields=True):
    """The scheduler (``hub worker``, or in ``hub serve`` on the embedded default)."""

    run_in_serve: bool = True
    lease_seconds: float = 60.0
    poll_seconds: float = 0.5
    misfire_grace_seconds: int = 3600
    runs_retention_days: int = 30
    # Schedules: seconds between runs, or a crontab line (minute hour day month weekday, UTC).
    rewards_sync_seconds: float = 10.0
    webhook_redelivery_seconds: float = 10.0
    settlement_cron: str = "0 2 1 * *"
    points_expiry_cron: str = "0 3 * * *"
    retention_purge_cron: str = "30 3 * * *"
    match_key_rotation_cron: str = "0 4 * * *"
    signing_key_rotation_cron: str = "0 5 * * 1"
    # Rows re-keyed or re-sealed per transaction by match_key_rotation.
    key_rotation_batch: int = 5000


class RewardSettings(msgspec.Struct, forbid_unknown_fields=True):
    """Coalition rewards: the point's value for settlement, periods, expiry, retention."""

    point_value_minor: int = 1
    currency: str = "EUR"
    settlement_period: str = "month"
    expiry_days: int = 730
    feed_retention_days: int = 90
    sync_batch: int = 5000


class PartnershipSettings(msgspec.Struct, forbid_unknown_fields=True):
    default_min_audience: int = 50
    floor_min_audience: int = 10


class UploadSettings(msgspec.Struct, forbid_unknown_fields=True):
    """Bulk identifier uploads (``POST /v1/identifiers/uploads``)."""

    max_bytes: int = 4 * 1024**3
    # A gzip body is inflated while it arrives (and thrown away): past either limit, 413.
    max_inflated_bytes: int = 16 * 1024**3
    max_compression_ratio: int = 100
    spool_bytes_per_partner: int = 8 * 1024**3
    spool_dir: str = ""
    refused_limit: float = 0.01
    batch_rows: int = 20_000
    # Staged rows written per apply transaction (a slice): SQLite's write lock is held that long.
    apply_slice_rows: int = 10_000
    # PostgreSQL: a partner's first load (it holds no records yet) writes this many slices at
    # once, each on a connection of its own (one backend writing them used one core).
    first_load_connections: int = 2
    max_error_rows: int = 100_000
    poll_seconds: float = 1.0
    lease_seconds: float = 120.0
    max_attempts: int = 3
    parse_processes: int = 2
    # How much lower the parsing processes' CPU priority is than the hub's (0: the same).
    parse_nice: int = 10
    process_in_serve: bool = True
    process_in_worker: bool = True
    erasure_hold_minutes: float = 120.0
    # Uploads processed at once per process, each of another partner (one lane per partner).
    lanes: int = 2


class MatchingSettings(msgspec.Struct, forbid_unknown_fields=True):
    """The matching engine, its array cache and the privacy rules' bookkeeping."""

    cache_dir: str = ""
    cache_partners: int = 16
    maintenance_seconds: float = 5.0
    dask_scheduler: str = ""
    partition_bits: int = 4
    max_breakdown_answers: int = 1000
    # Partners one overlap matrix covers at most (its pairs grow with the square).
    matrix_max_partners: int = 200
    # Offer results: per-person caps of the points and amount sums (their noise sensitivity).
    results_points_cap: int = 10_000
    results_amount_cap_minor: int = 100_000


class LoggingSettings(msgspec.Struct, forbid_unknown_fields=True):
    level: str = "INFO"
    json: bool = True
    access_log: bool = True
    # An event loop that does not come round for this long is logged with where it was
    # (hub.core.stalls); 0: not watched.
    stall_seconds: float = 0.5


class Settings(msgspec.Struct, forbid_unknown_fields=True):
    server: ServerSettings = msgspec.field(default_factory=ServerSettings)
    database: DatabaseSettings = msgspec.field(default_factory=DatabaseSettings)
    keyring: KeyringSettings = msgspec.field(default_factory=KeyringSettings)
    oauth: OAuthSettings = msgspec.field(default_factory=OAuthSettings)
    limits: LimitSettings = msgspec.field(default_factory=LimitSettings)
    webhooks: WebhookSettings = msgspec.field(default_factory=WebhookSettings)
    partnerships: PartnershipSettings = msgspec.field(default_factory=PartnershipSettings)
    uploads: UploadSettings = msgspec.field(default_factory=UploadSettings)
    matching: MatchingSettings = msgspec.field(default_factory=MatchingSettings)
    jobs: JobSettings = msgspec.field(default_factory=JobSettings)
    rewards: RewardSettings = msgspec.field(default_factory=RewardSettings)
    logging: LoggingSettings = msgspec.field(default_factory=LoggingSettings)

    def __post_init__(self) -> None:
        if not self.oauth.issuer:
            self.oauth.issuer = served_address(self.server.host, self.server.port)

    @property
    def data_dir(self) -> Path:
        return Path(self.server.data_dir)

    @property
    def database_url(self) -> str:
        """The configured database URL, or the embedded SQLite file under the data dir."""
        if self.database.url:
            return self.database.url
        return f"sqlite:///{self.data_dir / 'hub.db'}"

    @property
    def spool_dir(self) -> Path:
        """Where bulk upload bodies wait to be processed."""
        return Path(self.uploads.spool_dir) if self.uploads.spool_dir else self.data_dir / "uploads"

    @property
    def array_dir(self) -> Path:
        """Where the matching engine keeps each partner's arrays."""
        return (
            Path(self.matching.cache_dir) if self.matching.cache_dir else self.data_dir / "arrays"
        )

    @property
    def keyring_file(self) -> Path:
        return Path(self.keyring.file) if self.keyring.file else self.data_dir / "keyring.json"


class SettingsError(ValueError):
    """The configuration is invalid; the message names the file or variable."""


def served_address(host: str, port: int) -> str:
    """The URL the hub answers on when bound to ``host``:``port`` -- the default issuer.
    A wildcard bind (0.0.0.0, ::) answers on loopback too; behind a proxy or on a public
    name, set ``oauth.issuer``."""
    if not host or _is_unspecified(host):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def _is_unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False  # a name


# Numbers that count things which must exist: 0 would stop the hub (or divide by it).
AT_LEAST_ONE = {
    "server.port",
    "server.workers",
    "server.max_json_body_bytes",
    "database.pool_size",
    "oauth.access_token_ttl_seconds",
    "oauth.failed_auth_limit",
    "oauth.failed_auth_limit_per_address",
    "oauth.failed_auth_window_seconds",
    "limits.requests_per_minute",
    "limits.burst",
    "webhooks.batch_items",
    "webhooks.max_attempts",
    "jobs.key_rotation_batch",
    "rewards.sync_batch",
    "uploads.max_bytes",
    "uploads.spool_bytes_per_partner",
    "uploads.batch_rows",
    "uploads.apply_slice_rows",
    "uploads.first_load_connections",
    "uploads.max_attempts",
}
AT_MOST = {"server.port": 65535, "uploads.refused_limit": 1}


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SettingsError(f"cannot read configuration file {path}: {exc}") from exc


def _field_types() -> dict[str, dict[str, Any]]:
    return {
        f.name: {g.name: g.type for g in msgspec.structs.fields(f.type)}
        for f in msgspec.structs.fields(Settings)
    }


def _env_value(var: str, setting: str, value: str, kind: Any) -> Any:
    """One variable's value as its setting's type; the error names the variable."""
    text: Any = value
    if getattr(kind, "__origin__", None) is list:
        text = [item.strip() for item in value.split(",") if item.strip()]
    try:
        # Environment values are strings; strict=False lets "8000" become an int.
        return msgspec.convert(text, kind, strict=False)
    except msgspec.ValidationError as exc:
        raise SettingsError(f"{var}={value!r} ({setting}) is not valid: {exc}") from None


def _env_overrides(environ: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The settings the variables set, and which variable set each (``section.field``)."""
    types = _field_types()
    overrides: dict[str, dict[str, Any]] = {}
    sources: dict[str, str] = {}
    for var, value in environ.items():
        if var in ENV_ALIASES:
            target: tuple[str, str] | None = ENV_ALIASES[var]
        elif var.startswith("HUB_"):
            target = _target(var[4:].lower(), types)
        else:
            continue
        if target is None:
            continue
        section, key = target
        kind = types[section][key]
        overrides.setdefault(section, {})[key] = _env_value(var, f"{section}.{key}", value, kind)
        sources[f"{section}.{key}"] = var
    return overrides, sources


def _target(rest: str, types: dict[str, dict[str, Any]]) -> tuple[str, str] | None:
    for section, fields in types.items():
        prefix = section + "_"
        if rest.startswith(prefix) and rest[len(prefix) :] in fields:
            return section, rest[len(prefix) :]
    return None


def _check_ranges(settings: Settings, sources: dict[str, str]) -> None:
    """Refuse negative numbers (and zeros where something must exist), naming the culprit."""
    for section in msgspec.structs.fields(Settings):
        values = getattr(settings, section.name)
        for field in msgspec.structs.fields(values):
            value = getattr(values, field.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            name = f"{section.name}.{field.name}"
            low = 1 if name in AT_LEAST_ONE else 0
            high = AT_MOST.get(name)
            if value >= low and (high is None or value <= high):
                continue
            wanted = f"at least {low}" if high is None else f"between {low} and {high}"
            where = (
                f"{sources[name]}={value!r} ({name})"
                if name in sources
                else f"{name} = {value!r} (configuration file)"
            )
            raise SettingsError(f"{where} is not valid: it must be {wanted}")
    for entry in settings.server.forwarded_allow_ips:
        if entry == "*":
            continue
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            where = sources.get("server.forwarded_allow_ips", "server.forwarded_allow_ips")
            raise SettingsError(
                f"{where}: {entry!r} is not an IP address or network (e.g. 10.0.0.5, "
                "10.0.0.0/24) or '*'"
            ) from None


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Load settings from the default TOML, ``HUB_CONFIG`` and ``HUB_*`` variables."""
    env = dict(os.environ if environ is None else environ)
    raw = _read_toml(CONFIG_DIR / "default.toml")
    extra = env.get("HUB_CONFIG")
    if extra:
        raw = _merge(raw, _read_toml(Path(extra)))
    try:
        msgspec.convert(raw, Settings)  # the files alone: an error here is theirs
    except msgspec.ValidationError as exc:
        files = f"config/default.toml{f' or {extra}' if extra else ''}"
        raise SettingsError(f"invalid configuration in {files}: {exc}") from None
    overrides, sources = _env_overrides(env)
    # The files' values, not a converted Settings: a derived default (the issuer) must
    # follow what the variables change.
    settings = msgspec.convert(_merge(raw, overrides), Settings)
    _check_ranges(settings, sources)
    return settings
