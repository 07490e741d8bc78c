"""``HubClient``: the hub's API for a brand's code, on authlib's OAuth 2.0 client.

Tokens (client credentials, RFC 6749 §4.4) are fetched on first use and renewed by authlib
before they expire; a token the hub refuses anyway (revoked, or the hub's clock ahead) is
renewed once and the request sent again. The client authenticates with its secret
(``client_secret_basic``) or with a private key (``private_key_jwt``, RFC 7523: a PEM or JWK
file whose public half the coalition registered).

Every creating POST carries an ``Idempotency-Key`` (the same one on each retry), so 429 and
503 answers are retried after their ``Retry-After`` without risk of applying anything twice;
GETs are retried the same way. Refusals are raised as :mod:`partners.kit.errors` classes with
the problem detail. Lists are iterators that follow the cursors.

    from partners.kit import HubClient
    with HubClient.from_env() as hub:              # HUB_URL, HUB_CLIENT_ID, HUB_CLIENT_SECRET
        print(hub.overlap(partnership_id, by=["self.tier"]).to_pandas())
"""

from __future__ import annotations

import json
import os
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from authlib.deprecate import AuthlibDeprecationWarning

with warnings.catch_warnings():
    # authlib 1.9 warns, on every import, that its httpx integration will move to the
    # "httpx2" package; it runs on httpx itself meanwhile. Only that announcement is hidden
    # (the filter is set after authlib.deprecate's own "always" one, so it wins).
    warnings.filterwarnings(
        "ignore", message="The httpx module is deprecated", category=AuthlibDeprecationWarning
    )
    from authlib.integrations.httpx_client import OAuth2Client, OAuthError
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from joserfc import jwk

from partners.kit.errors import AuthenticationFailed, HubError, error_from_response, retry_after
from partners.kit.models import (
    AudienceChanges,
    Balance,
    Feed,
    OfferResults,
    Overlap,
    Settlement,
    Upload,
    frame_of,
)

if TYPE_CHECKING:
    import pandas as pd

    from partners.kit.uploads import UploadSource

__all__ = ["HubClient"]

RETRIED_STATUSES = (429, 503)
SECRET_BASIC = "client_secret_basic"  # noqa: S105 (a method's name, RFC 7591)
MAX_RECORDS_PER_REQUEST = 10_000
MAX_EVENTS_PER_REQUEST = 1_000


def load_private_key(path: str | Path) -> tuple[Any, str]:
    """A private key file (PEM, or a JWK as JSON) and the JWS algorithm its type signs with."""
    data = Path(path).read_bytes()
    key: Any
    if data.lstrip().startswith(b"{"):
        key = jwk.import_key(json.loads(data))
    else:
        key = None
        for kind in (jwk.RSAKey, jwk.ECKey, jwk.OKPKey):
            try:
                key = kind.import_key(data)
                break
            except (ValueError, TypeError):
                continue
        if key is None:
            raise ValueError(f"{path}: not a PEM or JWK private key (RSA, EC or Ed25519)")
    if not key.is_private:
        raise ValueError(f"{path}: this is a public key; the client signs with the private one")
    algorithm = {"RSA": "RS256", "EC": "ES256", "OKP": "EdDSA"}[key.key_type]
    return key, str(key.get("alg") or algorithm)


class HubClient:
    """A partner's (or an admin's) session with the hub. Use it as a context manager, or
    call :meth:`close`."""

    def __init__(
        self,
        url: str,
        client_id: str,
        client_secret: str | None = None,
        *,
        private_key: str | Path | None = None,
        scope: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 5,
        max_wait: float = 60.0,
        token_leeway: int = 30,
        progress: bool | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if (client_secret is None) == (private_key is None):
            raise ValueError("give the client's secret or its private key file, not both")
        self.url = url.rstrip("/")
        self.max_retries = max_retries
        self.max_wait = max_wait
        self.progress = progress
        self.token_fetches = 0
        self._sleep = sleep
        token_endpoint = f"{self.url}/oauth/token"
        options: dict[str, Any] = {
            "scope": scope,
            "timeout": timeout,
            "token_endpoint": token_endpoint,
            "grant_type": "client_credentials",
            "update_token": self._count_token,
            # A token is renewed this many seconds before it expires.
            "leeway": token_leeway,
        }
        if private_key is not None:
            key, algorithm = load_private_key(private_key)
            # The assertion's audience is the token endpoint the hub announces (RFC 7523 §3).
            signer = PrivateKeyJWT(self._announced_token_endpoint(timeout), alg=algorithm)
            self._oauth = OAuth2Client(client_id, key, token_endpoint_auth_method=signer, **options)
            self._oauth.register_client_auth_method(signer)
        else:
            self._oauth = OAuth2Client(
                client_id,
                client_secret,
                token_endpoint_auth_method=SECRET_BASIC,
                **options,
            )

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **options: Any) -> HubClient:
        """``HUB_URL``, ``HUB_CLIENT_ID`` and ``HUB_CLIENT_SECRET`` (or ``HUB_CLIENT_KEY_FILE``,
        a private key for private_key_jwt); ``HUB_SCOPE`` optionally narrows the token."""
        env = os.environ if environ is None else environ
        missing = [name for name in ("HUB_URL", "HUB_CLIENT_ID") if not env.get(name)]
        if not env.get("HUB_CLIENT_SECRET") and not env.get("HUB_CLIENT_KEY_FILE"):
            missing.append("HUB_CLIENT_SECRET (or HUB_CLIENT_KEY_FILE)")
        if missing:
            raise ValueError("set " + ", ".join(missing) + " to reach the hub")
        return cls(
            env["HUB_URL"],
            env["HUB_CLIENT_ID"],
            env.get("HUB_CLIENT_SECRET") or None,
            private_key=None if env.get("HUB_CLIENT_SECRET") else env["HUB_CLIENT_KEY_FILE"],
            scope=env.get("HUB_SCOPE") or None,
            **options,
        )

    def __enter__(self) -> HubClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._oauth.close()

    # -- tokens ---------------------------------------------------------------------------
    def _announced_token_endpoint(self, timeout: float) -> str:
        try:
            metadata = httpx.get(
                f"{self.url}/.well-known/oauth-authorization-server", timeout=timeout
            ).json()
            return str(metadata["token_endpoint"])
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return f"{self.url}/oauth/token"

    def _count_token(self, token: dict[str, Any], **_: Any) -> None:
        self.token_fetches += 1

    def fetch_token(self) -> dict[str, Any]:
        """A new access token now (requests fetch one by themselves when needed)."""
        try:
            token: dict[str, Any] = self._oauth.fetch_token(grant_type="client_credentials")
        except OAuthError as exc:
            raise AuthenticationFailed(
                400 if exc.error != "invalid_client" else 401,
                exc.error or "token refused",
                exc.description or "the token endpoint refused the client's credentials",
                fix="Check HUB_CLIENT_ID and the secret or key file the coalition gave you.",
            ) from exc
        self.token_fetches += 1
        return token

    @property
    def token(self) -> dict[str, Any] | None:
        return dict(self._oauth.token) if self._oauth.token else None

    def expire_token(self) -> None:
        """Mark the current token expired, so the next request renews it first."""
        if self._oauth.token:
            self._oauth.token["expires_at"] = int(time.time()) - 1

    # -- requests -------------------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        content: Callable[[], Iterable[bytes]] | None = None,
        headers: dict[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> httpx.Response:
        """Send a request and return its success response; raise the problem otherwise.

        ``content`` is a factory of the body's chunks, called again for each attempt.
        POSTs are retried only with an Idempotency-Key; ``idempotency_key="auto"`` makes one.
        """
        headers = dict(headers or {})
        if idempotency_key == "auto":
            idempotency_key = str(uuid.uuid4())
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        retriable = method in ("GET", "HEAD") or idempotency_key is not None
        if self._oauth.token is None:
            self.fetch_token()
        renewed = False
        attempt = 0
        while True:
            try:
                response: httpx.Response = self._oauth.request(
                    method,
                    self.url + path,
                    params={k: v for k, v in (params or {}).items() if v is not None},
                    json=json,
                    content=content() if content is not None else None,
                    headers=headers,
                )
            except OAuthError as exc:  # renewing an expired token failed
                raise AuthenticationFailed(
                    401, exc.error or "token refused", exc.description or str(exc)
                ) from exc
            except httpx.TransportError:
                if not retriable or attempt >= self.max_retries:
                    raise
                attempt += 1
                self._sleep(min(self.max_wait, 0.5 * 2**attempt))
                continue
            if response.status_code == 401 and not renewed and _token_refused(response):
                renewed = True  # revoked or expired early: one new token, one more try
                self.fetch_token()
                continue
            if response.status_code in RETRIED_STATUSES and retriable:
                wait = retry_after(response)
                if attempt < self.max_retries and (wait is None or wait <= self.max_wait):
                    attempt += 1
                    self._sleep(wait if wait is not None else min(self.max_wait, 2.0**attempt))
                    continue
            if response.is_success:
                return response
            raise error_from_response(response)

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params).json()

    def post(self, path: str, body: Any = None, *, creates: bool = True) -> Any:
        """POST JSON; ``creates`` adds an Idempotency-Key (so retries are safe)."""
        key = "auto" if creates else None
        return self.request("POST", path, json=body, idempotency_key=key).json()

    def pages(self, path: str, *, limit: int | None = None, **params: Any) -> Iterator[Any]:
        """Every item of a cursor-paginated list, page after page."""
        cursor: str | None = None
        while True:
            page = self.get(path, **params, limit=limit, cursor=cursor)
            yield from page["items"]
            cursor = page.get("next_cursor")
            if not cursor or not page["items"] or page.get("has_more") is False:
                return

    # -- who am I -------------------------------------------------------------------------
    def me(self) -> dict[str, Any]:
        return dict(self.get("/v1/me"))

    # -- identifiers ----------------------------------------------------------------------
    def send_records(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``POST /v1/identifiers`` in requests of at most 10,000 records (each all or
        nothing); the answers, in order."""
        return [
            self.post("/v1/identifiers", {"records": records[i : i + MAX_RECORDS_PER_REQUEST]})
            for i in range(0, len(records), MAX_RECORDS_PER_REQUEST)
        ]

    def upload(
        self,
        source: UploadSource,
        *,
        mode: str = "upsert",
        wait: bool = True,
        allow_refused: bool = False,
        timeout: float = 3600.0,
        **columns: Any,
    ) -> Upload:
        """Send a file or a DataFrame as a bulk upload; see :func:`partners.kit.uploads.upload`."""
        from partners.kit.uploads import upload

        return upload(
            self,
            source,
            mode=mode,
            wait=wait,
            allow_refused=allow_refused,
            timeout=timeout,
            **columns,
        )

    def upload_status(self, upload_id: str) -> Upload:
        return Upload.of(self.get(f"/v1/identifiers/uploads/{upload_id}"))

    def upload_errors(self, upload_id: str) -> Iterator[dict[str, Any]]:
        """The per-row error report: ``row``, ``field``, ``reason``."""
        return self.pages(f"/v1/identifiers/uploads/{upload_id}/errors", limit=500)

    def update_consents(self, updates: list[dict[str, Any]]) -> dict[str, Any]:
        return dict(self.post("/v1/identifiers/consents", {"updates": updates}))

    def erase(
        self, *, customer_refs: list[str] | None = None, id_hashes: list[str] | None = None
    ) -> dict[str, Any]:
        body = {"customer_refs": customer_refs} if customer_refs else {"id_hashes": id_hashes}
        return dict(self.post("/v1/identifiers/erase", body))

    # -- matching -------------------------------------------------------------------------
    def overlap(
        self, partnership_id: str, purpose: str = "analytics", by: Iterable[str] | None = None
    ) -> Overlap:
        """How many customers you share, by segment (``by=["self.tier", "partner.city"]``);
        suppressed cells have ``count`` None."""
        return Overlap.of(
            self.get(
                f"/v1/partnerships/{partnership_id}/overlap",
                purpose=purpose,
                by=",".join(by) if by else None,
            )
        )

    def offers(self) -> Iterator[dict[str, Any]]:
        return self.pages("/v1/offers")

    def audience(self, offer_id: str, *, page_size: int | None = None) -> Iterator[str]:
        """Your own customer_refs in an active offer's audience."""
        for item in self.pages(f"/v1/offers/{offer_id}/audience", limit=page_size):
            yield str(item["customer_ref"])

    def audience_frame(self, offer_id: str, *, page_size: int | None = None) -> pd.DataFrame:
        return frame_of(
            ({"customer_ref": ref} for ref in self.audience(offer_id, page_size=page_size)),
            ["customer_ref"],
        )

    def audience_changes(
        self, offer_id: str, cursor: str | None = None, *, page_size: int | None = None
    ) -> AudienceChanges:
        """Everyone who left your audience since ``cursor`` (all pages), and the cursor to
        keep for next time."""
        items, cursor = self._since(f"/v1/offers/{offer_id}/audience/changes", cursor, page_size)
        return AudienceChanges(items, cursor)

    def offer_results(self, offer_id: str, by: str | None = None) -> OfferResults:
        """Measured lift per side (``by="self.tier"`` for segments)."""
        return OfferResults(self.get(f"/v1/offers/{offer_id}/results", by=by))

    # -- rewards --------------------------------------------------------------------------
    def send_events(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``POST /v1/rewards/events`` in requests of at most 1,000 events (each all or
        nothing; a replayed event_id returns its first result)."""
        return [
            self.post("/v1/rewards/events", {"events": events[i : i + MAX_EVENTS_PER_REQUEST]})
            for i in range(0, len(events), MAX_EVENTS_PER_REQUEST)
        ]

    def feed(self, cursor: str | None = None, *, page_size: int | None = None) -> Feed:
        """Coalition activity of your members since ``cursor`` (all pages ready now)."""
        items, cursor = self._since("/v1/rewards/feed", cursor, page_size)
        return Feed(items, cursor)

    def balances(
        self,
        *,
        customer_ref: str | None = None,
        id_type: str | None = None,
        id_hash: str | None = None,
    ) -> Balance:
        """A member's points as you may know them, by your customer_ref or by digest."""
        return Balance.of(
            self.get(
                "/v1/rewards/balances",
                customer_ref=customer_ref,
                id_type=id_type,
                id_hash=id_hash,
            )
        )

    def balances_frame(self, customer_refs: Iterable[str]) -> pd.DataFrame:
        """Balances of many members: one row each (members you do not hold are left out)."""
        rows = []
        for ref in customer_refs:
            try:
                balance = self.balances(customer_ref=ref)
            except HubError as exc:
                if exc.status == 404:
                    continue
                raise
            rows.append({"customer_ref": ref, **balance.raw})
        return frame_of(rows, ["customer_ref", "points", "local_points", "coalition_points"])

    def settlements(self, *, page_size: int | None = None) -> Iterator[Settlement]:
        for item in self.pages("/v1/rewards/settlements", limit=page_size):
            yield Settlement.of(item)

    def settlement(self, settlement_id: int) -> Settlement:
        """One statement, its lines naming both partners."""
        return Settlement.of(self.get(f"/v1/rewards/settlements/{settlement_id}"))

    def settlement_csv(self, settlement_id: int) -> str:
        """The statement as the hub's CSV export (for finance)."""
        return self.request(
            "GET", f"/v1/rewards/settlements/{settlement_id}", headers={"Accept": "text/csv"}
        ).text

    def settlements_frame(self) -> pd.DataFrame:
        """Every line of every statement you may see, one row each."""
        pandas = __import__("pandas")
        frames = [s.to_pandas() for s in self.settlements() if s.lines]
        return pandas.concat(frames, ignore_index=True) if frames else frame_of([])

    # -- helpers --------------------------------------------------------------------------
    def _since(
        self, path: str, cursor: str | None, page_size: int | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Every item after ``cursor`` on an always-cursored list, and the last cursor."""
        items: list[dict[str, Any]] = []
        while True:
            page = self.get(path, cursor=cursor, limit=page_size)
            items += page["items"]
            cursor = page.get("next_cursor") or cursor
            if not page["items"] or not page.get("has_more"):
                return items, cursor


def _token_refused(response: httpx.Response) -> bool:
    challenge = response.headers.get("www-authenticate", "")
    return "invalid_token" in challenge or not challenge
