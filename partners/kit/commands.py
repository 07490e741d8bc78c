"""What ``hubkit hash|upload|status`` and ``hub hash|upload|status`` do: one implementation,
two command lines (``partners.kit.cli`` with argparse, ``hub.cli_kit`` with click).

Nothing here prints or logs a raw value: refused rows are reported by row number, field and
reason. Failures are :class:`CommandError` (one line, exit status 1).
"""

from __future__ import annotations

import csv
import gzip
import os
import sys
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from typing import IO, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from partners.kit.client import HubClient
from partners.kit.errors import HubError
from partners.kit.files import (
    CSV,
    NDJSON,
    ByteCounter,
    HashReport,
    RowError,
    UnreadableInput,
    detect_format,
    hash_stream,
    open_text,
    text_reader,
    undecodable_message,
)
from partners.kit.models import Upload
from partners.kit.normalize import BASE64

__all__ = ["CommandError", "hash_file", "show_status", "upload_file"]

TABLE_FORMATS = ("parquet", "excel")
INCOMPLETE = "nothing after that point was hashed: {output} is incomplete"
SHOWN_ERRORS = 20


class CommandError(Exception):
    """A one-line failure of a command (exit status 1)."""


def input_format_of(name: str) -> str:
    lowered = name.lower().removesuffix(".gz")
    if lowered.endswith((".parquet", ".pq")):
        return "parquet"
    if lowered.endswith((".xlsx", ".xlsm", ".xls")):
        return "excel"
    return detect_format(name)


# -- hash ------------------------------------------------------------------------------------
@dataclass
class HashOptions:
    source: str
    output: str = "-"
    input_format: str | None = None
    output_format: str | None = None
    encoding: str = BASE64
    errors_path: str | None = None
    quiet: bool = False
    allow_refused: bool = False


def hash_file(options: HashOptions, console: Console) -> HashReport:
    """Hash a customer file (CSV and NDJSON row by row in constant memory; Parquet and Excel
    as a DataFrame) into the hub's upload shape; raise :class:`CommandError` when rows were
    refused (unless allowed) or the input cannot be read."""
    source, output = options.source, options.output
    input_format = options.input_format or input_format_of(source)
    output_format = options.output_format or (
        detect_format(output)
        if output != "-"
        else (CSV if input_format in TABLE_FORMATS else input_format)
    )
    shown = 0
    with ExitStack() as stack:
        errors_writer = None
        if options.errors_path:
            errors_file = stack.enter_context(
                open(options.errors_path, "w", newline="", encoding="utf-8")
            )
            errors_writer = csv.writer(errors_file)
            errors_writer.writerow(["row", "field", "reason"])

        def on_error(error: RowError) -> None:
            nonlocal shown
            if errors_writer:
                errors_writer.writerow([error.row, error.field, error.reason])
            if shown < SHOWN_ERRORS:
                console.print(
                    f"row {error.row}: {error.field}: {error.reason}",
                    highlight=False,
                    soft_wrap=True,
                )
                shown += 1

        if input_format in TABLE_FORMATS:
            report = _hash_table(source, output, output_format, options.encoding, on_error)
        else:
            report = _hash_text(options, input_format, output_format, on_error, console)
    _summarise(report, shown, options, console)
    return report


def _hash_text(
    options: HashOptions,
    input_format: str,
    output_format: str,
    on_error: Callable[[RowError], None],
    console: Console,
) -> HashReport:
    source, output = options.source, options.output
    show_progress = not options.quiet and console.is_terminal
    counter = None
    try:
        with Progress(
            TextColumn("hashing"),
            BarColumn(),
            MofNCompleteColumn() if source == "-" else TextColumn("{task.percentage:>3.0f}%"),
            TimeElapsedColumn(),
            console=console,
            disable=not show_progress,
        ) as progress:
            size = os.path.getsize(source) if source != "-" else None
            task = progress.add_task("hash", total=size)
            src, counter = _open_source(source, lambda n: progress.advance(task, n))
            dst = open_text(output, "w")
            try:
                return hash_stream(
                    src,
                    dst,
                    input_format=input_format,
                    output_format=output_format,
                    encoding=options.encoding,
                    on_error=on_error,
                    on_row=(lambda: progress.advance(task, 1)) if source == "-" else None,
                )
            finally:
                if dst is not sys.stdout:
                    dst.close()
                if src is not sys.stdin:
                    src.close()
    except UnreadableInput as exc:
        raise CommandError(f"{source}: {exc} ({INCOMPLETE.format(output=output)})") from None
    except UnicodeDecodeError as exc:
        where = undecodable_message(exc, counter) if counter else "it is not UTF-8"
        raise CommandError(f"{source}: {where} ({INCOMPLETE.format(output=output)})") from None
    except (OSError, EOFError) as exc:
        raise CommandError(f"cannot read {source} or write {output}: {_os_reason(exc)}") from exc


def _hash_table(
    source: str,
    output: str,
    output_format: str,
    encoding: str,
    on_error: Callable[[RowError], None],
) -> HashReport:
    from partners.kit.frame_files import read_table, upload_csv_chunks
    from partners.kit.frames import hash_frame

    try:
        frame = read_table(source)
    except (OSError, ValueError, ImportError) as exc:
        raise CommandError(f"cannot read {source}: {_os_reason(exc)}") from exc
    records, refused = hash_frame(frame, encoding=encoding)
    positions = {label: n for n, label in enumerate(frame.index, start=1)}
    for row in refused.itertuples(index=False):
        on_error(RowError(positions[row.row], str(row.field), str(row.reason)))
    stream = open_text(output, "w")
    try:
        if output_format == NDJSON:
            _write_ndjson(records, stream)
        else:
            for chunk in upload_csv_chunks(records):
                stream.write(chunk.decode())
    finally:
        if stream is not sys.stdout:
            stream.close()
    report = HashReport(rows_read=len(frame), rows_refused=len(refused))
    report.rows_hashed = report.rows_read - report.rows_refused
    report.records_written = len(records)
    return report


def _write_ndjson(records: Any, stream: IO[str]) -> None:
    import json

    attributes = [c for c in records.columns if c.startswith("attr.")]
    for values in records.to_dict("records"):  # (itertuples would rename "attr.*")
        record: dict[str, Any] = {
            "id_type": values["id_type"],
            "id_hash": values["id_hash"],
            "customer_ref": values["customer_ref"],
            "consents": [c for c in str(values["consents"] or "").split("|") if c],
        }
        given = {
            a.removeprefix("attr."): str(values[a])
            for a in attributes
            if isinstance(values.get(a), str) and values[a]
        }
        if given:
            record["attributes"] = given
        stream.write(json.dumps(record, separators=(",", ":")) + "\n")


def _summarise(report: HashReport, shown: int, options: HashOptions, console: Console) -> None:
    if report.rows_refused > shown:
        console.print(f"... {report.rows_refused - shown} more refused rows", highlight=False)
    if report.ignored_columns:
        console.print(
            "ignored columns (not hashed, not written): "
            + ", ".join(sorted(report.ignored_columns)),
            highlight=False,
        )
    console.print(
        f"rows hashed: {report.rows_hashed}, rows refused: {report.rows_refused}, "
        f"records written: {report.records_written}",
        highlight=False,
    )
    if report.rows_refused and not options.allow_refused:
        listed = (
            f" (listed in {options.errors_path})"
            if options.errors_path
            else " (--errors FILE lists them)"
        )
        raise CommandError(
            f"{report.rows_refused} of {report.rows_read} rows were refused{listed}; the "
            f"output holds the other rows. Fix the refused rows, or pass --allow-refused to "
            "accept the output without them (exit status 0)"
        )


def _os_reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


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


# -- upload and status ---------------------------------------------------------------------------
def _client(env: Mapping[str, str] | None, progress: bool | None) -> HubClient:

    try:
        return HubClient.from_env(dict(env) if env is not None else None, progress=progress)
    except (ValueError, OSError) as exc:
        raise CommandError(str(exc)) from None


def upload_file(
    source: str,
    console: Console,
    *,
    mode: str = "upsert",
    wait: bool = True,
    errors_path: str | None = None,
    allow_refused: bool = False,
    quiet: bool = False,
    env: Mapping[str, str] | None = None,
) -> Upload:
    """Send ``source`` (hashing it first unless it holds ``id_hash``), wait, print the
    outcome and write the error report; raise :class:`CommandError` unless it completed."""
    from partners.kit.uploads import RowsRefused

    with _client(env, False if quiet else None) as client:
        try:
            outcome: Upload = client.upload(
                source, mode=mode, wait=wait, allow_refused=allow_refused
            )
        except RowsRefused as exc:
            for error in exc.refused[:SHOWN_ERRORS]:
                console.print(
                    f"row {error['row']}: {error['field']}: {error['reason']}", highlight=False
                )
            if errors_path:
                from partners.kit.uploads import write_errors

                write_errors(exc.refused, errors_path)
            raise CommandError(f"{exc} -- nothing was sent") from None
        except HubError as exc:
            raise CommandError(f"the hub refused the upload: {exc}") from None
        except OSError as exc:
            raise CommandError(f"cannot read {source}: {_os_reason(exc)}") from None
        _report(outcome, console, errors_path)
    return outcome


def show_status(
    upload_id: str,
    console: Console,
    *,
    errors_path: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Upload:
    """Print an upload's status (and write its error report); raise :class:`CommandError`
    when it failed."""
    with _client(env, False) as client:
        try:
            status = client.upload_status(upload_id)
            errors = (
                list(client.upload_errors(upload_id))
                if status.refused or status.status == "failed"
                else []
            )
        except HubError as exc:
            raise CommandError(str(exc)) from None
        outcome = Upload.of(status.raw, errors)
        _report(outcome, console, errors_path)
    return outcome


def _report(outcome: Upload, console: Console, errors_path: str | None) -> None:
    raw = outcome.raw
    console.print(
        f"upload {outcome.id}: {outcome.status} -- rows read {outcome.rows_read}, accepted "
        f"{outcome.accepted}, refused {outcome.refused}"
        + (
            f", created {raw.get('created', 0)}, matched {raw.get('matched', 0)}, "
            f"removed {raw.get('removed', 0)}"
            if outcome.ok
            else ""
        ),
        highlight=False,
    )
    if outcome.errors:
        for error in outcome.errors[:SHOWN_ERRORS]:
            console.print(
                f"row {error.get('row')}: {error.get('field')}: {error.get('reason')}",
                highlight=False,
                soft_wrap=True,
            )
        if errors_path:
            from partners.kit.uploads import write_errors

            write_errors(outcome.errors, errors_path)
            console.print(f"error report written to {errors_path}", highlight=False)
    if outcome.status == "failed":
        raise CommandError(f"upload {outcome.id} failed: {outcome.error or 'see the error report'}")
