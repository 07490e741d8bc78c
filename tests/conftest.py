"""Fixtures: a real hub (uvicorn on a loopback port) per test module and database backend.

Every module runs against SQLite, and against PostgreSQL too when HUB_TEST_POSTGRES_URL is set
(CI sets it). Tests talk HTTP to the live server with real OAuth tokens.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import uvicorn
from litestar import Litestar
from sqlalchemy.engine import make_url

from hub.app import create_app, server_options
from hub.migrate import upgrade
from hub.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
PG_URL = os.environ.get("HUB_TEST_POSTGRES_URL")
BACKENDS = ["sqlite", "postgres"] if PG_URL else ["sqlite"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def create_pg_database() -> str:
    assert PG_URL
    name = f"hub_test_{uuid.uuid4().hex[:12]}"
    admin = make_url(PG_URL).set(drivername="postgresql")
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin.set(database=name).render_as_string(hide_password=False)


def drop_pg_database(url: str) -> None:
    parsed = make_url(url)
    admin = parsed.set(database=make_url(PG_URL or url).database)
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)')


def make_database(backend: str, tmp: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp / 'hub.db'}"
    return create_pg_database()


def hub_settings(database_url: str, data_dir: Path, **env: str) -> Settings:
    environ = {
        "HUB_CONFIG": str(ROOT / "config" / "test.toml"),
        "HUB_DATABASE_URL": database_url,
        "HUB_SERVER_DATA_DIR": str(data_dir),
        **env,
    }
    return load_settings(environ)


class LiveServer:
    """A hub app served by uvicorn in a thread, on a free loopback port."""

    def __init__(self, app: Litestar, port: int) -> None:
        self.app = app
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="on",
            **server_options(app.state.settings),  # proxy headers as `hub serve` has them
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the hub did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def start_hub(database_url: str, data_dir: Path, **env: str) -> LiveServer:
    port = free_port()
    env.setdefault("HUB_OAUTH_ISSUER", f"http://127.0.0.1:{port}")
    settings = hub_settings(database_url, data_dir, **env)
    return LiveServer(create_app(settings), port).start()


@dataclass
class Hub:
    """One running hub and helpers to act on it as the admin or as partners."""

    server: LiveServer
    database_url: str
    data_dir: Path
    admin_id: str
    admin_secret: str
    http: httpx.Client = field(init=False)
    _admin_token: str | None = None

    def __post_init__(self) -> None:
        self.http = httpx.Client(base_url=self.server.url, timeout=30)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def app(self) -> Litestar:
        return self.server.app

    def token(self, client_id: str, secret: str, scope: str | None = None) -> str:
        data = {"grant_type": "client_credentials"}
        if scope:
            data["scope"] = scope
        response = self.http.post("/oauth/token", data=data, auth=(client_id, secret))
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    def admin_headers(self) -> dict[str, str]:
        if self._admin_token is None:
            self._admin_token = self.token(self.admin_id, self.admin_secret)
        return {"Authorization": f"Bearer {self._admin_token}"}

    def as_admin(self, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {**kw.pop("headers", {}), **self.admin_headers()}
        return self.http.request(method, path, headers=headers, **kw)

    def create_partner(self, category: str = "airline", **extra: Any) -> dict[str, Any]:
        body = {"name": f"{category}-{uuid.uuid4().hex[:8]}", "category": category, **extra}
        response = self.as_admin("POST", "/v1/partners", json=body)
        assert response.status_code == 201, response.text
        return dict(response.json())

    def create_client(
        self,
        partner_id: str,
        scopes: list[str] | None = None,
        auth_method: str = "client_secret_basic",
        jwks: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": "integration",
            "scopes": scopes or ["overlap:read", "identifiers:write"],
            "auth_method": auth_method,
        }
        if jwks is not None:
            body["jwks"] = jwks
        response = self.as_admin("POST", f"/v1/partners/{partner_id}/clients", json=body)
        assert response.status_code == 201, response.text
        return dict(response.json())

    def partner_with_token(
        self, category: str = "airline", scopes: list[str] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
        partner = self.create_partner(category)
        client = self.create_client(partner["id"], scopes)
        token = self.token(client["client_id"], client["client_secret"])
        return partner, client, {"Authorization": f"Bearer {token}"}


def bootstrap_admin(database_url: str, data_dir: Path) -> tuple[str, str]:
    """The same code path as `hub admin bootstrap`, run in-process."""
    from click.testing import CliRunner

    from hub.cli import main

    env = {
        "HUB_CONFIG": str(ROOT / "config" / "test.toml"),
        "HUB_DATABASE_URL": database_url,
        "HUB_SERVER_DATA_DIR": str(data_dir),
    }
    result = CliRunner(env=env).invoke(main, ["admin", "bootstrap", "--json"])
    assert result.exit_code == 0, result.output
    import json

    out = json.loads(result.output)
    return out["client_id"], out["client_secret"]


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@contextmanager
def launch_hub(backend: str, data_dir: Path, **env: str) -> Iterator[Hub]:
    """A migrated database, a bootstrapped admin client and a live server."""
    database_url = make_database(backend, data_dir)
    upgrade(database_url)
    admin_id, admin_secret = bootstrap_admin(database_url, data_dir)
    server = start_hub(database_url, data_dir, **env)
    hub = Hub(server, database_url, data_dir, admin_id, admin_secret)
    hub.admin_headers()  # token issued up front, so "nothing written" checks see no audit row
    try:
        yield hub
    finally:
        hub.http.close()
        server.stop()
        if backend == "postgres":
            drop_pg_database(database_url)


@pytest.fixture(scope="module")
def hub(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    with launch_hub(backend, tmp_path_factory.mktemp(f"hub-{backend}")) as running:
        yield running


def table_counts(database_url: str) -> dict[str, int]:
    """Rows per table: compared before and after a refused request ("nothing written")."""
    from sqlalchemy import func, select

    from hub.core.db import create_hub_sync_engine
    from hub.models import metadata

    engine = create_hub_sync_engine(database_url)
    try:
        with engine.connect() as conn:
            return {
                name: int(conn.execute(select(func.count()).select_from(table)).scalar_one())
                for name, table in metadata.tables.items()
                if name not in {"oauth_auth_failures", "oauth_used_assertions"}
            }
    finally:
        engine.dispose()


def run_cli(hub: Hub, *args: str, env: dict[str, str] | None = None) -> Any:
    """Run `hub …` in-process (click's runner) against this hub's database and keyring."""
    from click.testing import CliRunner

    from hub.cli import main

    environ = {
        "HUB_CONFIG": str(ROOT / "config" / "test.toml"),
        "HUB_DATABASE_URL": hub.database_url,
        "HUB_SERVER_DATA_DIR": str(hub.data_dir),
        **(env or {}),
    }
    return CliRunner(env=environ).invoke(main, list(args), catch_exceptions=False)


def execute_sql(database_url: str, sql: str, **params: Any) -> Any:
    from sqlalchemy import create_engine, text

    from hub.core.db import normalise_url

    engine = create_engine(normalise_url(database_url))
    try:
        with engine.begin() as conn:
            result = conn.execute(text(sql), params)
            return result.all() if result.returns_rows else None
    finally:
        engine.dispose()
