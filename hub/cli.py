"""The ``hub`` command: serve, worker, db upgrade, admin (bootstrap, partners, clients,
partnerships, keys, audit, users), demo, and the partner side's hash, upload and status.
Tables for people, ``--json`` for scripts; errors as one line and a non-zero exit.

This module puts the commands together; what they share is in ``hub.cli_common``, which
imports none of them, so the ``hub/cli*.py`` modules import each other without a cycle.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import click
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from hub import cli_admin, cli_keys, cli_kit
from hub.cli_common import (
    CLI_ACTOR,
    CliError,
    cli_settings,
    console,
    database_problem,
    err_console,
    json_option,
    require_migrated,
    run_in_session,
    secret_hasher,
)
from hub.core.db import is_sqlite
from hub.core.errors import HubError
from hub.core.keyring import KeyringError, load_keyring
from hub.settings import Settings

CONTEXT = {"help_option_names": ["-h", "--help"]}


def _version() -> str:
    try:
        return version("coalition-hub")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "unknown"


@click.group(context_settings=CONTEXT)
@click.version_option(_version(), "-V", "--version", prog_name="hub")
def main() -> None:
    """Coalition hub: the service, its database and its administration."""


def _prepare_database(settings: Settings) -> None:
    """The embedded SQLite database is created and migrated here; any other must have been
    migrated with ``hub db upgrade`` (one line saying so otherwise)."""
    from hub.migrate import upgrade

    if not is_sqlite(settings.database_url):
        require_migrated(settings.database_url)
        return
    try:
        upgrade(settings.database_url)
    except (SQLAlchemyError, OSError) as exc:
        raise CliError(database_problem(exc, settings.database_url)) from None


def _load_keyring(settings: Settings) -> Any:
    try:
        return load_keyring(settings.keyring_file, settings.keyring.inline)
    except KeyringError as exc:
        raise CliError(str(exc)) from exc


# -- serve ----------------------------------------------------------------------------------
@main.command()
@click.option("--host", default=None, help="Bind address (default from config).")
@click.option(
    "--port", type=click.IntRange(1, 65535), default=None, help="Port (default from config)."
)
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Worker processes.")
@click.option("--no-worker", is_flag=True, help="Leave scheduled jobs to a separate `hub worker`.")
def serve(host: str | None, port: int | None, workers: int | None, no_worker: bool) -> None:
    """Run the hub. On the embedded SQLite default it creates and migrates the database."""
    import uvicorn

    from hub.app import server_options
    from hub.core.logging import configure_logging

    # uvicorn builds the app from the factory, which reads the settings again: what the
    # options say goes through the environment (the default issuer follows --host/--port).
    for variable, value in (
        ("HUB_SERVER_HOST", host),
        ("HUB_SERVER_PORT", port),
        ("HUB_JOBS_RUN_IN_SERVE", "false" if no_worker else None),
    ):
        if value is not None:
            os.environ[variable] = str(value)
    settings = cli_settings()
    configure_logging(settings.logging.level, settings.logging.json)
    _load_keyring(settings)  # created before workers fork
    _prepare_database(settings)
    uvicorn.run(
        "hub.app:create_app",
        factory=True,
        host=settings.server.host,
        port=settings.server.port,
        workers=workers or settings.server.workers,
        access_log=False,
        log_level=settings.logging.level.lower(),
        log_config=None,  # uvicorn's loggers go through the hub's JSON logging
        **server_options(settings),
    )


# -- worker ---------------------------------------------------------------------------------
@main.command()
def worker() -> None:
    """Run the scheduled jobs, and process bulk uploads (unless uploads.process_in_worker is
    false), until SIGTERM or SIGINT (a run in progress gets a few seconds to finish, else the
    next worker resumes it from its checkpoint; an upload resumes once its lease runs out)."""
    from hub.core.logging import configure_logging
    from hub.core.memory import tune_allocator
    from hub.jobs.scheduler import run_worker

    tune_allocator()
    settings = cli_settings()
    configure_logging(settings.logging.level, settings.logging.json)
    keyring = _load_keyring(settings)
    _prepare_database(settings)
    asyncio.run(run_worker(settings, keyring))


# -- db -------------------------------------------------------------------------------------
@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply every migration (safe to run again)."""
    from hub.migrate import current, upgrade

    settings = cli_settings()
    try:
        upgrade(settings.database_url)
        revision = current(settings.database_url)
    except (SQLAlchemyError, OSError) as exc:
        raise CliError(
            f"migration failed: {database_problem(exc, settings.database_url)}"
        ) from None
    click.echo(f"database at revision {revision}")


# -- admin ----------------------------------------------------------------------------------
@main.group()
def admin() -> None:
    """Coalition administration."""


@admin.command()
@click.option("--name", default="coalition-admin", help="Name of the admin client.")
@json_option
def bootstrap(name: str, as_json: bool) -> None:
    """Create a coalition-admin client and print its id and secret (shown once)."""
    from partners.clients.schemas import ClientCreate
    from partners.clients.service import ClientService

    settings = cli_settings()
    require_migrated(settings.database_url)  # before the keyring: nothing created for nothing
    _load_keyring(settings)

    async def create(session: AsyncSession) -> Any:
        service = ClientService(session, secret_hasher(settings))
        return await service.create(None, ClientCreate(name=name, scopes=["admin"]), CLI_ACTOR)

    created = run_in_session(create)
    out = {"client_id": created.client_id, "client_secret": created.client_secret}
    if as_json:
        click.echo(json.dumps(out))
    else:
        console.print(f"client_id:     {out['client_id']}\nclient_secret: {out['client_secret']}")
        console.print("[yellow]The secret is shown only now; store it safely.[/]")


for _group in cli_admin.GROUPS:
    admin.add_command(_group)
admin.add_command(cli_keys.keys)
for _command in cli_kit.COMMANDS:
    main.add_command(_command)


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

    settings = cli_settings()
    try:
        summary = run_demo(settings, DemoOptions(customers=customers, seed=seed), err_console)
    except HubError as exc:
        raise CliError(f"{exc.detail} ({exc.fix})") from exc
    except KeyringError as exc:
        raise CliError(str(exc)) from exc
    except SQLAlchemyError as exc:
        raise CliError(database_problem(exc, settings.database_url)) from None
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    render_summary(summary, console)


__all__ = ["admin", "main"]

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
