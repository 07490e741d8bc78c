"""An embedded database busy past the writer's wait (a large upload being applied holds
SQLite's write lock) is a 503 problem with Retry-After, and nothing is written."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Hub, launch_hub, table_counts


@pytest.fixture(scope="module")
def impatient_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    with launch_hub(
        "sqlite",
        tmp_path_factory.mktemp("busy"),
        HUB_DATABASE_SQLITE_BUSY_TIMEOUT_MS="200",
    ) as running:
        yield running


def test_a_writer_kept_waiting_gets_503_and_nothing_changes(impatient_hub: Hub) -> None:
    hub = impatient_hub
    before = table_counts(hub.database_url)
    holder = sqlite3.connect(Path(hub.database_url.split("///", 1)[1]), isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # as the apply of a large upload does
        response = hub.as_admin("POST", "/v1/partners", json={"name": "x", "category": "hotel"})
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "5"
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "busy" in response.json()["detail"]
    assert table_counts(hub.database_url) == before
    again = hub.as_admin("POST", "/v1/partners", json={"name": "x", "category": "hotel"})
    assert again.status_code == 201
