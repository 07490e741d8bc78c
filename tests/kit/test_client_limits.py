"""The kit's HubClient against a live hub with a tight rate limit and two-second tokens: 429
answers are waited out for their Retry-After and retried (a creating POST under its
Idempotency-Key is applied once), and a token that expired at the hub is renewed before use."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from partners.kit.client import HubClient
from partners.kit.errors import RateLimited
from tests.conftest import Hub, launch_hub
from tests.kit.client_helpers import brand, customers

PER_MINUTE, BURST, TOKEN_SECONDS = 60, 3, 2


@pytest.fixture(scope="module")
def hub(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    with launch_hub(
        backend,
        tmp_path_factory.mktemp(f"kit-limits-{backend}"),
        HUB_LIMITS_REQUESTS_PER_MINUTE=str(PER_MINUTE),
        HUB_LIMITS_BURST=str(BURST),
        HUB_OAUTH_ACCESS_TOKEN_TTL_SECONDS=str(TOKEN_SECONDS),
    ) as running:
        yield running


@pytest.fixture(scope="module")
def admin(hub: Hub) -> Iterator[HubClient]:
    """The admin's own calls are rate limited too: through the kit, they wait."""
    with HubClient(hub.url, hub.admin_id, hub.admin_secret, progress=False) as kit:
        yield kit


class Waits:
    """The client's sleep: records each wait, then really waits (the hub's bucket refills)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.seconds.append(seconds)
        time.sleep(seconds)


def test_429_answers_are_waited_out_for_their_retry_after(hub: Hub, admin: HubClient) -> None:
    waits = Waits()
    airline = brand(hub, "airline", admin, sleep=waits)
    seen = [airline.kit.me()["partner"]["id"] for _ in range(BURST + 3)]
    assert seen == [airline.id] * (BURST + 3)
    assert waits.seconds, "the burst was never exceeded: the test proves nothing"
    assert all(w >= 1 for w in waits.seconds)  # the hub's Retry-After, in whole seconds


def test_without_retries_left_the_429_is_raised_with_its_retry_after(
    hub: Hub, admin: HubClient
) -> None:
    airline = brand(hub, "airline", admin, max_retries=0)
    for _ in range(BURST):
        airline.kit.me()
    with pytest.raises(RateLimited) as limited:
        airline.kit.me()
    assert limited.value.status == 429
    assert limited.value.retry_after is not None
    assert limited.value.retry_after >= 1
    assert limited.value.fix


def test_an_upload_retried_after_429_is_applied_once(hub: Hub, admin: HubClient) -> None:
    waits = Waits()
    airline = brand(hub, "airline", admin, sleep=waits)
    for _ in range(BURST):
        airline.kit.me()  # the bucket is empty: the upload's POST meets a 429 first
    done = airline.kit.upload(customers("u", 0, 8))
    assert (done.status, done.accepted) == ("completed", 8)
    assert waits.seconds
    uploads = list(airline.kit.pages("/v1/identifiers/uploads"))
    assert [u["id"] for u in uploads] == [done.id]


def test_a_token_expired_at_the_hub_is_renewed_before_the_next_call(
    hub: Hub, admin: HubClient
) -> None:
    airline = brand(hub, "airline", admin, token_leeway=0)
    airline.kit.me()
    first = airline.kit.token
    assert first is not None
    fetched = airline.kit.token_fetches
    time.sleep(max(0.0, first["expires_at"] - time.time()) + 0.5)  # let it expire for real
    assert airline.kit.me()["partner"]["id"] == airline.id
    assert airline.kit.token_fetches == fetched + 1
    assert airline.kit.token["access_token"] != first["access_token"]  # type: ignore[index]
