"""``hub hash``: the partner side of the exchange. Normalises and hashes a customer file with
the kit (partners.kit), in constant memory, with a progress bar. Nothing here ever prints or
logs a raw value: refused rows are reported by row number, field and reason."""

from __future__ import annotations

import csv
import gzip
import os
import sys
from typing import IO, Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from hub.cli_common import CliError, err_console
from partners.kit import BASE64, HEX
from partners.kit.files import (
    CSV,
    NDJSON,
    ByteCounter,
    RowError,
    UnreadableInput,
    detect_format,
    hash_stream,
    open_text,
    text_reader,
    undecodable_message,
)


class _CountingReader:
    """Wraps the binary input to report bytes read (the progress bar's measure)."""

    def __init__(self, raw: IO[bytes], advance: Any) -> None:
        self.raw = raw
        self.advance = advance

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.advance(len(data))
        return data

    def read1(self, size: int = -1) -> bytes:
        data = self.raw.read1(size) if hasattr(self.raw, "read1") else self.raw.read(size)
        self.advance(len(data))
        return data

    def readable(self) -> bool:
        return True

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)


@click.command("hash")
@click.argument("source", type=click.Path(dir_okay=False, allow_dash=True))
@click.option(
    "-o",
    "--output",
    default="-",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="Where to write the hashed records (default stdout; .gz compresses).",
)
@click.option("--input-format", type=click.Choice([CSV, NDJSON]), help="Default: by extension.")
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
    """Normalise and hash the emails and phone numbers of a customer file (CSV or NDJSON).

    Input columns: customer_ref, email and/or phone (raw), consents (joined by '|'), and
    attr.<name> attributes; other columns are dropped. The output is ready for
    POST /v1/identifiers/uploads: one record per identifier, digests only.

    Exits 1 when rows were refused (unless --allow-refused) or the input cannot be read on
    (an unclosed CSV quote names its line, bytes that are not UTF-8 their offset).
    """
    input_format = input_format or detect_format(source)
    output_format = output_format or (detect_format(output) if output != "-" else input_format)
    shown = 0
    errors_file = open(errors_path, "w", newline="", encoding="utf-8") if errors_path else None  # noqa: SIM115
    errors_writer = csv.writer(errors_file) if errors_file else None
    if errors_writer:
        errors_writer.writerow(["row", "field", "reason"])

    def on_error(error: RowError) -> None:
        nonlocal shown
        if errors_writer:
            errors_writer.writerow([error.row, error.field, error.reason])
        if shown < 20:
            err_console.print(
                f"row {error.row}: {error.field}: {error.reason}", highlight=False, soft_wrap=True
            )
            shown += 1

    show_progress = not quiet and err_console.is_terminal
    counter = None
    try:
        with Progress(
            TextColumn("hashing"),
            BarColumn(),
            MofNCompleteColumn() if source == "-" else TextColumn("{task.percentage:>3.0f}%"),
            TimeElapsedColumn(),
            console=err_console,
            disable=not show_progress,
        ) as progress:
            size = os.path.getsize(source) if source != "-" else None
            task = progress.add_task("hash", total=size)
            src, counter = _open_source(source, lambda n: progress.advance(task, n))
            dst = open_text(output, "w")
            try:
                report = hash_stream(
                    src,
                    dst,
                    input_format=input_format,
                    output_format=output_format,
                    encoding=encoding,
                    on_error=on_error,
                    on_row=(lambda: progress.advance(task, 1)) if source == "-" else None,
                )
            finally:
                if dst is not sys.stdout:
                    dst.close()
                if src is not sys.stdin:
                    src.close()
    except UnreadableInput as exc:
        raise CliError(f"{source}: {exc} ({INCOMPLETE.format(output=output)})") from None
    except UnicodeDecodeError as exc:
        where = undecodable_message(exc, counter) if counter else "it is not UTF-8"
        raise CliError(f"{source}: {where} ({INCOMPLETE.format(output=output)})") from None
    except (OSError, EOFError) as exc:
        raise CliError(f"cannot read {source} or write {output}: {_os_reason(exc)}") from exc
    finally:
        if errors_file:
            errors_file.close()
    if report.rows_refused > shown:
        err_console.print(f"... {report.rows_refused - shown} more refused rows", highlight=False)
    if report.ignored_columns:
        err_console.print(
            "ignored columns (not hashed, not written): "
            + ", ".join(sorted(report.ignored_columns)),
            highlight=False,
        )
    err_console.print(
        f"rows hashed: {report.rows_hashed}, rows refused: {report.rows_refused}, "
        f"records written: {report.records_written}",
        highlight=False,
    )
    if report.rows_refused and not allow_refused:
        listed = f" (listed in {errors_path})" if errors_path else " (--errors FILE lists them)"
        raise CliError(
            f"{report.rows_refused} of {report.rows_read} rows were refused{listed}; the "
            f"output holds the other rows. Fix the refused rows, or pass --allow-refused to "
            "accept the output without them (exit status 0)"
        )


INCOMPLETE = "nothing after that point was hashed: {output} is incomplete"


def _os_reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or type(exc).__name__


def _open_source(source: str, advance: Any) -> tuple[IO[str], ByteCounter | None]:
    """The input as text (and the counter that locates a decoding error), counting
    compressed bytes for the progress bar."""
    if source == "-":
        stdin_bytes = getattr(sys.stdin, "buffer", None)
        if stdin_bytes is None:
            return sys.stdin, None
        return text_reader(stdin_bytes)
    raw: Any = _CountingReader(open(source, "rb"), advance)  # noqa: SIM115
    if source.endswith(".gz"):
        raw = gzip.GzipFile(fileobj=raw)
    return text_reader(raw)
