"""The ``hub`` command: serve, worker, db upgrade, admin (bootstrap, partners, clients,
partnerships, keys, audit). Tables for people, ``--json`` for scripts; errors as one line and a
non-zero exit.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import click
import msgspec
from rich.console import Console
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.core.audit import Actor
from hub.core.db import create_hub_async_engine, is_sqlite, writing
from hub.core.errors import HubError
from hub.core.keyring import KeyringError, load_keyring
from hub.core.secrets import SecretHasher
from hub.settings import Settings, SettingsError, load_settings

T = TypeVar("T")
console = Console()
err_console = Console(stderr=True)
CLI_ACTOR = Actor(name="cli:admin")


class CliError(click.ClickException):
    def show(self, file: Any = None) -> None:
        err_console.print(f"[bold red]error:[/] {self.message}", highlight=False)


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        raise CliError(str(exc)) from exc


@asynccontextmanager
async def _session(settings: Settings) -> AsyncIterator[AsyncSession]:
    """One transaction for one command: committed if it succeeds, rolled back otherwise."""
    engine = create_hub_async_engine(settings.database_url)
    try:
        with writing():
            async with async_sessionmaker(engine, expire_on_commit=False)() as session:
                yield session
                await session.commit()
    finally:
        await engine.dispose()


def _run(coro_factory: Callable[[AsyncSession], Awaitable[T]]) -> T:
    settings = _settings()

    async def main() -> T:
        async with _session(settings) as session:
            return await coro_factory(session)

    try:
        return asyncio.run(main())
    except HubError as exc:
        raise CliError(f"{exc.detail} ({exc.fix})") from exc
    except KeyringError as exc:
        raise CliError(str(exc)) from exc


def _emit(data: Any, as_json: bool, columns: Sequence[str] | None = None, title: str = "") -> None:
    builtins = msgspec.to_builtins(data)
    if as_json:
        click.echo(json.dumps(builtins, indent=2, sort_keys=True))
        return
    rows = builtins if isinstance(builtins, list) else [builtins]
    if not rows:
        console.print(f"(no {title or 'rows'})")
        return
    columns = columns or list(rows[0])
    table = Table(title=title or None)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*[_cell(row.get(c)) for c in columns])
    console.print(table)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


@click.group()
def main() -> None:
    """Coalition hub: the service, its database and its administration."""


# -- serve ----------------------------------------------------------------------------------
@main.command()
@click.option("--host", default=None, help="Bind address (default from config).")
@click.option("--port", type=int, default=None, help="Port (default from config).")
@click.option("--workers", type=int, default=None, help="Worker processes.")
@click.option("--no-worker", is_flag=True, help="Leave scheduled jobs to a separate `hub worker`.")
def serve(host: str | None, port: int | None, workers: int | None, no_worker: bool) -> None:
    """Run the hub. On the embedded SQLite default it creates and migrates the database."""
    import uvicorn

    from hub.migrate import upgrade

    settings = _settings()
    try:
        load_keyring(settings.keyring_file, settings.keyring.inline)  # created before workers fork
    except KeyringError as exc:
        raise CliError(str(exc)) from exc
    if is_sqlite(settings.database_url):
        upgrade(settings.database_url)
    if no_worker:
        # uvicorn builds the app from the factory, which reads the settings again.
        os.environ["HUB_JOBS_RUN_IN_SERVE"] = "false"
    uvicorn.run(
        "hub.app:create_app",
        factory=True,
        host=host or settings.server.host,
        port=port or settings.server.port,
        workers=workers or settings.server.workers,
        access_log=False,
        log_level=settings.logging.level.lower(),
    )


# -- worker ---------------------------------------------------------------------------------
@main.command()
def worker() -> None:
    """Run the scheduled jobs until SIGTERM or SIGINT (a run in progress gets a few seconds to
    finish, else the next worker resumes it from its checkpoint)."""
    from hub.core.logging import configure_logging
    from hub.jobs.scheduler import run_worker
    from hub.migrate import upgrade

    settings = _settings()
    configure_logging(settings.logging.level, settings.logging.json)
    try:
        keyring = load_keyring(settings.keyring_file, settings.keyring.inline)
    except KeyringError as exc:
        raise CliError(str(exc)) from exc
    if is_sqlite(settings.database_url):
        upgrade(settings.database_url)
    asyncio.run(run_worker(settings, keyring))


# -- db -------------------------------------------------------------------------------------
@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply every migration (safe to run again)."""
    from hub.migrate import current, upgrade

    settings = _settings()
    try:
        upgrade(settings.database_url)
    except Exception as exc:
        raise CliError(f"migration failed: {exc}") from exc
    click.echo(f"database at revision {current(settings.database_url)}")


# -- admin ----------------------------------------------------------------------------------
@main.group()
def admin() -> None:
    """Coalition administration."""


def _hasher(settings: Settings) -> SecretHasher:
    return SecretHasher(settings.oauth.secret_hash_time_cost, settings.oauth.secret_hash_memory_kib)


@admin.command()
@click.option("--name", default="coalition-admin", help="Name of the admin client.")
@json_option
def bootstrap(name: str, as_json: bool) -> None:
    """Create a coalition-admin client and print its id and secret (shown once)."""
    from partners.clients.schemas import ClientCreate
    from partners.clients.service import ClientService

    settings = _settings()
    load_keyring(settings.keyring_file, settings.keyring.inline)

    async def create(session: AsyncSession) -> Any:
        service = ClientService(session, _hasher(settings))
        return await service.create(None, ClientCreate(name=name, scopes=["admin"]), CLI_ACTOR)

    created = _run(create)
    out = {"client_id": created.client_id, "client_secret": created.client_secret}
    if as_json:
        click.echo(json.dumps(out))
    else:
        console.print(f"client_id:     {out['client_id']}\nclient_secret: {out['client_secret']}")
        console.print("[yellow]The secret is shown only now; store it safely.[/]")


# -- demo -----------------------------------------------------------------------------------
@main.command()
@click.option(
    "--customers",
    type=click.IntRange(min=1000),
    default=200_000,
    show_default=True,
    help="Customers of each brand.",
)
@click.option("--seed", type=int, default=42, show_default=True, help="Seed of the synthetic data.")
@json_option
def demo(customers: int, seed: int, as_json: bool) -> None:
    """Build a demo coalition with synthetic customers in the configured database, and print
    what to open and the credentials to use. Safe to run again (the data is reused; new
    credentials are printed)."""
    from hub.demo import DemoOptions, render_summary, run_demo

    settings = _settings()
    try:
        summary = run_demo(settings, DemoOptions(customers=customers, seed=seed), err_console)
    except HubError as exc:
        raise CliError(f"{exc.detail} ({exc.fix})") from exc
    except KeyringError as exc:
        raise CliError(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    render_summary(summary, console)


from hub import cli_admin, cli_hash, cli_keys  # noqa: E402  (register their sub-commands)

__all__ = ["admin", "cli_admin", "cli_hash", "cli_keys", "main"]

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
