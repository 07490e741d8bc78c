"""What an operator sees from `hub`: one line saying what to run, never a traceback; a bad
variable named; the version and -h; tables that never cut an id; JSON logs from `hub serve`
and `hub worker` (uvicorn and APScheduler included); the issuer following --port; proxy
headers ignored unless a proxy is listed; `/` pointing to /schema and /admin."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from joserfc import jwt
from sqlalchemy.engine import make_url

from hub.cli import main
from hub.migrate import upgrade
from tests.conftest import (
    BACKENDS,
    ROOT,
    Hub,
    create_pg_database,
    drop_pg_database,
    free_port,
    run_cli,
)
from tests.e2e.serving import wait_until_ready

HUB = str(Path(sys.executable).with_name("hub"))
TEST_CONFIG = str(ROOT / "config" / "test.toml")


@pytest.fixture(params=BACKENDS)
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database that exists but was never migrated."""
    if request.param == "sqlite":
        path = tmp_path / "empty.db"
        path.touch()
        yield f"sqlite:///{path}"
        return
    url = create_pg_database()
    try:
        yield url
    finally:
        drop_pg_database(url)


def invoke(tmp_path: Path, *args: str, **env: str) -> object:
    environ = {"HUB_CONFIG": TEST_CONFIG, "HUB_SERVER_DATA_DIR": str(tmp_path), **env}
    return CliRunner(env=environ).invoke(main, list(args))


def one_line(result: object) -> str:
    output = result.output.strip()  # type: ignore[attr-defined]
    assert result.exit_code == 1, output  # type: ignore[attr-defined]
    assert "Traceback" not in output
    assert len(output.splitlines()) == 1, output
    return str(output)


@pytest.mark.parametrize(
    "command",
    [
        ["admin", "bootstrap"],
        ["admin", "partners", "list"],
        ["admin", "users", "list", "--json"],
        ["admin", "keys", "rotate-match-key"],
    ],
)
def test_a_missing_sqlite_database_is_one_line_saying_what_to_run(
    tmp_path: Path, command: list[str]
) -> None:
    line = one_line(invoke(tmp_path, *command))
    assert "no database at" in line
    assert "hub db upgrade" in line
    assert not (tmp_path / "hub.db").exists()  # nothing created on the way


def test_an_unmigrated_database_is_one_line_saying_what_to_run(
    tmp_path: Path, empty_database: str
) -> None:
    for command in (["admin", "bootstrap"], ["admin", "partners", "list"]):
        line = one_line(invoke(tmp_path, *command, HUB_DATABASE_URL=empty_database))
        assert "run `hub db upgrade` first" in line


def test_an_unreachable_database_is_one_line_and_hides_the_password(tmp_path: Path) -> None:
    url = f"postgresql://hub:s3cret-pw@127.0.0.1:{free_port()}/hub"
    line = one_line(invoke(tmp_path, "admin", "bootstrap", HUB_DATABASE_URL=url))
    assert "cannot be used" in line
    assert "HUB_DATABASE_URL" in line
    assert "s3cret-pw" not in line


def test_hub_serve_on_an_unmigrated_postgres_database_says_what_to_run(tmp_path: Path) -> None:
    if "postgres" not in BACKENDS:
        pytest.skip("needs HUB_TEST_POSTGRES_URL")
    url = create_pg_database()
    try:
        env = {**os.environ, "HUB_CONFIG": TEST_CONFIG, "HUB_DATABASE_URL": url}
        env["HUB_SERVER_DATA_DIR"] = str(tmp_path)
        done = subprocess.run(
            [HUB, "serve", "--port", str(free_port())],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        drop_pg_database(url)
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert "run `hub db upgrade` first" in done.stderr


def test_a_missing_postgres_database_says_to_create_it(tmp_path: Path) -> None:
    if "postgres" not in BACKENDS:
        pytest.skip("needs HUB_TEST_POSTGRES_URL")
    url = make_url(create_pg_database())
    drop_pg_database(url.render_as_string(hide_password=False))  # named, but gone
    missing = url.render_as_string(hide_password=False)
    line = one_line(invoke(tmp_path, "admin", "bootstrap", HUB_DATABASE_URL=missing))
    assert "does not exist: create it" in line
    assert "hub db upgrade" in line


def test_a_bad_environment_value_names_the_variable(tmp_path: Path) -> None:
    line = one_line(invoke(tmp_path, "admin", "partners", "list", HUB_LIMITS_BURST="-3"))
    assert "HUB_LIMITS_BURST" in line
    line = one_line(invoke(tmp_path, "admin", "partners", "list", HUB_SERVER_PORT="eighty"))
    assert "HUB_SERVER_PORT" in line


def test_version_and_short_help() -> None:
    version = CliRunner().invoke(main, ["--version"])
    assert version.exit_code == 0
    assert version.output.startswith("hub, version ")
    for args in (["-h"], ["admin", "-h"], ["admin", "partners", "list", "-h"]):
        helped = CliRunner().invoke(main, args)
        assert helped.exit_code == 0, args
        assert "Usage:" in helped.output


def test_tables_never_cut_ids(hub: Hub) -> None:
    partner = hub.create_partner(
        "airline", webhook_url="https://receiver.example.com/hooks/a-rather-long-path"
    )
    table = run_cli(hub, "admin", "partners", "list", env={"COLUMNS": "60"})
    assert table.exit_code == 0
    assert partner["id"] in table.output  # whole, on one line
    assert partner["name"] in table.output
    assert "--json" in table.output  # the hint that a script should use JSON


def _serve(database_url: str, data_dir: Path, port: int, **env: str) -> subprocess.Popen[str]:
    environ = {
        **os.environ,
        "HUB_CONFIG": TEST_CONFIG,
        "HUB_DATABASE_URL": database_url,
        "HUB_SERVER_DATA_DIR": str(data_dir),
        "HUB_OAUTH_ISSUER": "",  # test.toml names one: here the default is under test
        "HUB_LOGGING_LEVEL": "INFO",
        "HUB_LOGGING_ACCESS_LOG": "true",
        **env,
    }
    process = subprocess.Popen(
        [HUB, "serve", "--port", str(port)],
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return wait_until_ready(process, port, timeout=60)


@pytest.fixture(params=BACKENDS)
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Path, str]]:
    """A migrated database with an admin client, for `hub serve` subprocesses."""
    url = f"sqlite:///{tmp_path / 'hub.db'}" if request.param == "sqlite" else ""
    url = url or create_pg_database()
    upgrade(url)
    created = invoke(tmp_path, "admin", "bootstrap", "--json", HUB_DATABASE_URL=url)
    assert created.exit_code == 0, created.output  # type: ignore[attr-defined]
    try:
        yield url, tmp_path, created.output  # type: ignore[attr-defined]
    finally:
        if request.param == "postgres":
            drop_pg_database(url)


def _stop(process: subprocess.Popen[str]) -> list[str]:
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=30)
    return [line for line in (out + err).splitlines() if line.strip()]


def test_hub_serve_follows_its_port_ignores_proxy_headers_and_logs_only_json(
    served: tuple[str, Path, str],
) -> None:
    url, data_dir, admin = served
    credentials = json.loads(admin)
    port = free_port()
    process = _serve(url, data_dir, port)
    base = f"http://127.0.0.1:{port}"
    try:
        index = httpx.get(f"{base}/")
        assert index.status_code == 200
        assert {"/schema", "/admin"} <= set(index.json()["links"].values())
        token = httpx.post(
            f"{base}/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(credentials["client_id"], credentials["client_secret"]),
        ).json()["access_token"]
        claims = jwt.decode(token, _jwks(base)).claims
        assert claims["iss"] == base
        assert (
            httpx.get(f"{base}/.well-known/oauth-authorization-server").json()["token_endpoint"]
            == f"{base}/oauth/token"
        )
        # No proxy is listed: X-Forwarded-Proto cannot make the sign-in cookie think https.
        page = httpx.get(f"{base}/admin/sign-in", headers={"X-Forwarded-Proto": "https"})
        assert "secure" not in page.headers["set-cookie"].lower()
    finally:
        lines = _stop(process)
    records = [json.loads(line) for line in lines]  # every line is JSON
    loggers = {record.get("logger") for record in records}
    assert any(str(name).startswith("uvicorn") for name in loggers), lines


def _jwks(base: str) -> object:
    from joserfc.jwk import KeySet

    return KeySet.import_key_set(httpx.get(f"{base}/.well-known/jwks.json").json())


def test_hub_worker_logs_only_json_apscheduler_included(served: tuple[str, Path, str]) -> None:
    url, data_dir, _ = served
    environ = {
        **os.environ,
        "HUB_CONFIG": TEST_CONFIG,
        "HUB_DATABASE_URL": url,
        "HUB_SERVER_DATA_DIR": str(data_dir),
        "HUB_LOGGING_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
    }
    log = data_dir / "worker.log"
    with log.open("w") as out:
        process = subprocess.Popen([HUB, "worker"], env=environ, stdout=out, stderr=out)
        deadline = time.monotonic() + 60
        while "apscheduler" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is JSON
    assert any(str(r.get("logger", "")).startswith("apscheduler") for r in records), lines


def test_an_uncaught_exception_is_one_json_line(tmp_path: Path) -> None:
    script = (
        "from hub.core.logging import configure_logging\n"
        "configure_logging('INFO', True)\n"
        "import logging\n"
        "try:\n    1 / 0\nexcept ZeroDivisionError:\n"
        "    logging.getLogger('uvicorn.error').exception('in the ASGI app')\n"
        "raise RuntimeError('boom')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert done.returncode == 1
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]
    assert [r["level"] for r in records] == ["error", "critical"]
    assert "ZeroDivisionError" in records[0]["exception"]
    assert "RuntimeError: boom" in records[1]["exception"]


def test_shown_urls_hide_passwords() -> None:
    from hub.cli_common import shown_url

    shown = shown_url("postgresql://hub:pw@db/hub")
    assert "pw@" not in shown
    assert make_url(shown).host == "db"
