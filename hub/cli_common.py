"""What every ``hub`` command shares: settings, one transaction per command, tables or JSON,
one-line errors, and the check that the database is there and migrated.

It imports none of the command modules (``hub.cli``, ``cli_admin``, ``cli_kit``,
``cli_keys``): they all import it, and ``hub.cli`` puts their commands together
(tests/unit/test_architecture.py keeps the ``hub/cli*.py`` imports free of cycles).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import click
import msgspec
from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.core.audit import Actor
from hub.core.db import create_hub_async_engine, is_sqlite, writing
from hub.core.errors import HubError
from hub.core.keyring import Keyring, KeyringError, load_keyring
from hub.core.secrets import SecretHasher
from hub.settings import Settings, SettingsError, load_settings

T = TypeVar("T")
console = Console()
err_console = Console(stderr=True)
CLI_ACTOR = Actor(name="cli:admin")
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


class CliError(click.ClickException):
    """A one-line error on stderr and exit status 1."""

    def show(self, file: Any = None) -> None:
        err_console.print(f"[bold red]error:[/] {self.message}", highlight=False, soft_wrap=True)


def cli_settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        raise CliError(str(exc)) from exc


def secret_hasher(settings: Settings) -> SecretHasher:
    return SecretHasher(settings.oauth.secret_hash_time_cost, settings.oauth.secret_hash_memory_kib)


def open_keyring() -> Keyring:
    """The existing keyring (never created here: a command must not invent keys)."""
    settings = cli_settings()
    try:
        return load_keyring(settings.keyring_file, settings.keyring.inline, create=False)
    except KeyringError as exc:
        raise CliError(str(exc)) from exc


# -- the database: there, reachable and migrated ---------------------------------------------
def shown_url(database_url: str) -> str:
    """The database URL without its password, for messages."""
    try:
        return make_url(database_url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a malformed URL is shown as the user gave it
        return database_url.split("@")[-1]


def database_problem(exc: BaseException, database_url: str) -> str:
    """One line saying why the database could not be used, and what to run."""
    first = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    reason = first[0] if first else type(exc).__name__
    lowered = reason.lower()
    if "no such table" in lowered or ("relation" in lowered and "does not exist" in lowered):
        return unmigrated_message(database_url)
    if "database" in lowered and "does not exist" in lowered:
        return (
            f"the database at {shown_url(database_url)} does not exist: create it (createdb), "
            "then run `hub db upgrade`"
        )
    return (
        f"the database at {shown_url(database_url)} cannot be used: {reason} "
        "(check HUB_DATABASE_URL and that the database server is running)"
    )


def unmigrated_message(database_url: str, revision: str | None = None) -> str:
    where = shown_url(database_url)
    state = "has no tables yet" if revision is None else f"is at revision {revision}"
    return f"the database at {where} {state}: run `hub db upgrade` first"


def require_migrated(database_url: str) -> None:
    """Raise a one-line :class:`CliError` unless the database exists, answers and is at the
    newest migration. A missing SQLite file is never created here."""
    from hub.migrate import current, head

    if is_sqlite(database_url):
        path = make_url(database_url).database
        if path and path != ":memory:" and not Path(path).exists():
            raise CliError(
                f"no database at {path}: run `hub db upgrade` (or `hub serve`, which creates "
                "the embedded SQLite database)"
            )
    try:
        revision = current(database_url)
    except (SQLAlchemyError, OSError) as exc:
        raise CliError(database_problem(exc, database_url)) from None
    if revision != head():
        raise CliError(unmigrated_message(database_url, revision))


# -- one transaction per command ---------------------------------------------------------------
@asynccontextmanager
async def cli_session(settings: Settings) -> AsyncIterator[AsyncSession]:
    """One transaction for one command: committed if it succeeds, rolled back otherwise."""
    require_migrated(settings.database_url)
    engine = create_hub_async_engine(settings.database_url)
    try:
        with writing():
            async with async_sessionmaker(engine, expire_on_commit=False)() as session:
                yield session
                await session.commit()
    finally:
        await engine.dispose()


def run_in_session(coro_factory: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run ``coro_factory(session)`` in one transaction; errors become one line."""
    settings = cli_settings()

    async def main() -> T:
        async with cli_session(settings) as session:
            return await coro_factory(session)

    return run_command(main(), settings)


def run_command(coro: Coroutine[Any, Any, T], settings: Settings) -> T:
    """``asyncio.run`` with the hub's errors, the keyring's and the database's as one line."""
    try:
        return asyncio.run(coro)
    except HubError as exc:
        raise CliError(f"{exc.detail} ({exc.fix})") from None
    except KeyringError as exc:
        raise CliError(str(exc)) from None
    except DBAPIError as exc:
        raise CliError(database_problem(exc, settings.database_url)) from None


# -- output ----------------------------------------------------------------------------------
def emit(data: Any, as_json: bool, columns: Sequence[str] | None = None, title: str = "") -> None:
    """JSON for scripts, or a table whose cells are never cut: a table wider than the
    terminal is printed at its full width, with a hint that ``--json`` exists."""
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
        table.add_column(column, no_wrap=True, overflow="ignore")
    for row in rows:
        table.add_row(*[_cell(row.get(c)) for c in columns])
    width = console.measure(table, options=console.options.update_width(10**6)).maximum
    if width <= console.width:
        console.print(table)
        return
    # Wider than the terminal: printed whole (the terminal may wrap lines, never a cell).
    Console(width=width, force_terminal=console.is_terminal).print(table, crop=False)
    err_console.print(
        "(the table is wider than the terminal; --json prints the same rows for scripts)",
        highlight=False,
    )


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)
