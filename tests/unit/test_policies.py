"""Small policies with their own rules: webhook URLs, cursors, rate limits, secrets."""

from __future__ import annotations

import pytest

from hub.core.auth import ClientRateLimiter
from hub.core.errors import BadRequest, InvalidInput, TooManyRequests
from hub.core.pagination import decode_cursor, encode_cursor
from hub.core.secrets import SecretHasher, new_client_secret
from hub.core.webhook_urls import check_webhook_url


@pytest.mark.parametrize(
    "url",
    [
        "https://203.0.113.10/hook",  # documentation range is not global
        "https://10.0.0.1/hook",
        "https://172.16.5.5/hook",
        "https://100.64.0.1/hook",  # carrier-grade NAT
        "https://[fd00::1]/hook",
        "https://[::ffff:10.0.0.1]/hook",
        "https://localhost/hook",
        "http://8.8.8.8/hook",
        "https://0.0.0.0/hook",
        "https://[64:ff9b::a9fe:a9fe]/hook",  # NAT64 of 169.254.169.254
        "https://[2002:a9fe:a9fe::1]/hook",  # 6to4 of 169.254.169.254
        "https://[::ffff:169.254.169.254]/hook",
    ],
)
def test_non_public_or_insecure_webhooks_are_refused(url: str) -> None:
    with pytest.raises(InvalidInput):
        check_webhook_url(url, allow_loopback_http=False)


def test_public_https_webhooks_are_allowed() -> None:
    assert check_webhook_url("https://8.8.8.8/hook", allow_loopback_http=False)


def test_loopback_http_only_where_allowed() -> None:
    assert check_webhook_url("http://127.0.0.1:8080/h", allow_loopback_http=True)
    assert check_webhook_url("http://localhost:8080/h", allow_loopback_http=True)
    with pytest.raises(InvalidInput):
        check_webhook_url("http://127.0.0.1:8080/h", allow_loopback_http=False)


def test_cursors_round_trip_and_reject_garbage() -> None:
    assert decode_cursor(encode_cursor(42), int) == 42
    with pytest.raises(BadRequest):
        decode_cursor("bm90LWpzb24", int)
    with pytest.raises(BadRequest):
        decode_cursor(encode_cursor("abc"), int)


def test_the_rate_limiter_allows_the_burst_then_refuses_with_a_wait() -> None:
    limiter = ClientRateLimiter(per_minute=60, burst=3)
    for _ in range(3):
        limiter.check("a")
    with pytest.raises(TooManyRequests) as refused:
        limiter.check("a")
    assert refused.value.headers["Retry-After"] == "1"
    limiter.check("b")  # another client has its own bucket


def test_secrets_verify_only_against_their_hash() -> None:
    hasher = SecretHasher(time_cost=1, memory_kib=1024)
    secret = new_client_secret()
    stored = hasher.hash(secret)
    assert stored.startswith("$argon2id$")
    assert secret not in stored
    assert hasher.verify(stored, secret)
    assert not hasher.verify(stored, secret + "x")
    assert not hasher.verify("not-a-hash", secret)
