"""``hub hash``, ``hub upload`` and ``hub status``: the partner side of the exchange, the same
code as the kit's own ``hubkit`` command (:mod:`partners.kit.commands`), under click.

``hub hash`` normalises and hashes a customer file (CSV, NDJSON, Parquet or Excel) with a
progress bar; ``hub upload`` sends one (hashing it first unless it is already hashed), waits
and prints the outcome and the error report; ``hub status`` shows an upload. Credentials come
from ``HUB_URL``, ``HUB_CLIENT_ID`` and ``HUB_CLIENT_SECRET`` (or ``HUB_CLIENT_KEY_FILE``).
Nothing here ever prints or logs a raw value."""

from __future__ import annotations

import click

from hub.cli_common import CliError, err_console
from partners.kit import BASE64, HEX
from partners.kit.commands import (
    CommandError,
    HashOptions,
    hash_file,
    show_status,
    upload_file,
)
from partners.kit.files import CSV, NDJSON

INPUT_FORMATS = [CSV, NDJSON, "parquet", "excel"]


@click.command("hash")
@click.argument("source", type=click.Path(dir_okay=False, allow_dash=True))
@click.option(
    "-o",
    "--output",
    default="-",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="Where to write the hashed records (default stdout; .gz compresses).",
)
@click.option("--input-format", type=click.Choice(INPUT_FORMATS), help="Default: by extension.")
@click.option("--output-format", type=click.Choice([CSV, NDJSON]), help="Default: by extension.")
@click.option(
    "--encoding",
    type=click.Choice([BASE64, HEX]),
    default=BASE64,
    show_default=True,
    help="How digests are written (UID2 uses base64).",
)
@click.option(
    "--errors",
    "errors_path",
    type=click.Path(dir_okay=False),
    help="Write refused rows (row, field, reason) to this CSV file.",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option(
    "--allow-refused",
    is_flag=True,
    help="Exit 0 even when rows were refused (the output then lacks them).",
)
def hash_command(
    source: str,
    output: str,
    input_format: str | None,
    output_format: str | None,
    encoding: str,
    errors_path: str | None,
    quiet: bool,
    allow_refused: bool,
) -> None:
    """Normalise and hash the emails and phone numbers of a customer file (CSV, NDJSON,
    Parquet or Excel).

    Input columns: customer_ref, email and/or phone (raw), consents (joined by '|'), and
    attr.<name> attributes; other columns are dropped. The output is ready for
    POST /v1/identifiers/uploads: one record per identifier, digests only.

    Exits 1 when rows were refused (unless --allow-refused) or the input cannot be read on
    (an unclosed CSV quote names its line, bytes that are not UTF-8 their offset).
    """
    options = HashOptions(
        source, output, input_format, output_format, encoding, errors_path, quiet, allow_refused
    )
    try:
        hash_file(options, err_console)
    except CommandError as exc:
        raise CliError(str(exc)) from None


@click.command("upload")
@click.argument("source", type=click.Path(dir_okay=False, exists=True))
@click.option(
    "--mode",
    type=click.Choice(["upsert", "replace"]),
    default="upsert",
    show_default=True,
    help="replace also removes your records the file no longer holds.",
)
@click.option("--no-wait", is_flag=True, help="Print the upload's id and return at once.")
@click.option(
    "--errors",
    "errors_path",
    type=click.Path(dir_okay=False),
    help="Write the error report (row, field, reason) to this CSV file.",
)
@click.option("--allow-refused", is_flag=True, help="Send the rows the kit could hash.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def upload_command(
    source: str,
    mode: str,
    no_wait: bool,
    errors_path: str | None,
    allow_refused: bool,
    quiet: bool,
) -> None:
    """Send a customer file to the hub (hashing it first unless it holds id_hash), wait for
    it to be applied and print the outcome. Exits 1 when the upload failed."""
    try:
        upload_file(
            source,
            err_console,
            mode=mode,
            wait=not no_wait,
            errors_path=errors_path,
            allow_refused=allow_refused,
            quiet=quiet,
        )
    except CommandError as exc:
        raise CliError(str(exc)) from None


@click.command("status")
@click.argument("upload_id")
@click.option(
    "--errors",
    "errors_path",
    type=click.Path(dir_okay=False),
    help="Write the error report (row, field, reason) to this CSV file.",
)
def status_command(upload_id: str, errors_path: str | None) -> None:
    """Show an upload's status and counts. Exits 1 when it failed."""
    try:
        show_status(upload_id, err_console, errors_path=errors_path)
    except CommandError as exc:
        raise CliError(str(exc)) from None


COMMANDS = (hash_command, upload_command, status_command)
