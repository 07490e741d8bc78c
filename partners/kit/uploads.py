"""Bulk uploads from a file or a DataFrame: hash if needed, stream gzip, wait, report.

The body always travels as gzip (level 1: compressing must not be slower than sending) under
an Idempotency-Key, so a retried POST is applied once. A raw file (raw ``email``/``phone``
columns) is hashed on this machine first -- CSV and NDJSON in constant memory through
:func:`partners.kit.files.hash_stream`, Parquet and Excel through :func:`hash_frame` -- and a
hashed one (an ``id_hash`` column) is sent as it is. Rows the kit refuses stop the upload
unless ``allow_refused``: the hub would otherwise count them as missing, and in ``replace``
mode remove those people's records.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)

from partners.kit.files import CSV, NDJSON, RowError, detect_format, hash_stream
from partners.kit.models import Upload

if TYPE_CHECKING:
    import pandas as pd

    from partners.kit.client import HubClient

__all__ = ["RowsRefused", "UploadSource", "upload"]

UploadSource = Union[str, Path, "pd.DataFrame"]
CHUNK = 1 << 20
MEDIA_TYPES = {CSV: "text/csv", NDJSON: "application/x-ndjson"}
TABLE_SUFFIXES = (".parquet", ".pq", ".xlsx", ".xlsm", ".xls")


class RowsRefused(ValueError):
    """The kit refused rows of the source before sending it; ``refused`` lists them
    (``row``, ``field``, ``reason``), never their values."""

    def __init__(self, refused: list[dict[str, Any]], total: int) -> None:
        super().__init__(
            f"{len(refused)} of {total} rows were refused before sending (see .refused); fix "
            "them, or pass allow_refused=True to send the other rows"
        )
        self.refused = refused


class _Body:
    """A gzip file on disk (kept for retries), its format and size."""

    def __init__(self, path: Path, fmt: str, owned: bool) -> None:
        self.path = path
        self.format = fmt
        self.owned = owned
        self.size = path.stat().st_size

    def chunks(self, advance: Callable[[int], None]) -> Iterator[bytes]:
        with self.path.open("rb") as stream:
            while chunk := stream.read(CHUNK):
                advance(len(chunk))
                yield chunk

    def discard(self) -> None:
        if self.owned:
            self.path.unlink(missing_ok=True)


def upload(
    client: HubClient,
    source: UploadSource,
    *,
    mode: str = "upsert",
    wait: bool = True,
    allow_refused: bool = False,
    timeout: float = 3600.0,
    poll_seconds: float = 0.5,
    **columns: Any,
) -> Upload:
    """Upload ``source`` (a path, or a DataFrame) in ``mode`` ``upsert`` or ``replace``.

    A DataFrame with an ``id_hash`` column is sent as records; any other is hashed with
    :func:`partners.kit.frames.hash_frame` (``columns`` are its column options). With
    ``wait`` the call returns the final status with its error report (``Upload.errors``);
    without, the status as accepted. Raises :class:`RowsRefused` when the kit refused rows
    (unless ``allow_refused``) and :class:`partners.kit.errors.HubError` when the hub
    refuses the request.
    """
    if mode not in ("upsert", "replace"):
        raise ValueError("mode is 'upsert' or 'replace'")
    body = _prepare(source, allow_refused, columns)
    try:
        with _progress(client) as progress:
            task = progress.add_task("sending", total=body.size)
            response = client.request(
                "POST",
                "/v1/identifiers/uploads",
                params={"mode": mode},
                content=lambda: body.chunks(lambda n: progress.advance(task, n)),
                headers={
                    "Content-Type": MEDIA_TYPES[body.format],
                    "Content-Encoding": "gzip",
                    # Announced, so the hub can refuse an oversized body before reading it.
                    "Content-Length": str(body.size),
                    # The hub may answer (429, 413) before reading the whole body: that
                    # connection is not reused for the retry.
                    "Connection": "close",
                },
                idempotency_key="auto",
            )
            status = Upload.of(response.json())
            if not wait:
                return status
            progress.update(task, description="processing", completed=0, total=None)
            status = _wait(client, status.id, timeout, poll_seconds)
    finally:
        body.discard()
    errors = list(client.upload_errors(status.id)) if status.refused or not status.ok else []
    return Upload.of(status.raw, errors)


def _wait(client: HubClient, upload_id: str, timeout: float, poll_seconds: float) -> Upload:
    deadline = time.monotonic() + timeout
    while True:
        status = client.upload_status(upload_id)
        if status.finished:
            return status
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"upload {upload_id} is still {status.status} after {timeout:.0f} s; follow it "
                f"with `hubkit status {upload_id}`"
            )
        client._sleep(poll_seconds)


def _progress(client: HubClient) -> Progress:
    console = Console(stderr=True)
    shown = client.progress if client.progress is not None else console.is_terminal
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not shown,
        transient=True,
    )


# -- the body ----------------------------------------------------------------------------------
def _prepare(source: UploadSource, allow_refused: bool, columns: dict[str, Any]) -> _Body:
    if not isinstance(source, str | Path):
        return _frame_body(source, allow_refused, columns)
    path = Path(source)
    if path.name.lower().endswith(TABLE_SUFFIXES):
        from partners.kit.frame_files import read_table

        return _frame_body(read_table(path), allow_refused, columns)
    fmt = detect_format(path.name)
    if _is_hashed(path, fmt):
        if path.name.endswith(".gz"):
            return _Body(path, fmt, owned=False)
        return _gzip_file(path, fmt)
    return _hash_file(path, fmt, allow_refused)


def _is_hashed(path: Path, fmt: str) -> bool:
    """Whether the file already holds records (an ``id_hash`` column or field)."""
    opener: Any = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", newline="") as stream:
        if fmt == CSV:
            header = next(csv.reader(stream), [])
            return "id_hash" in header
        for line in stream:
            if line.strip():
                try:
                    first = json.loads(line)
                except ValueError:
                    return False
                return isinstance(first, dict) and "id_hash" in first
    return False


def _temporary(suffix: str) -> Path:
    handle, name = tempfile.mkstemp(prefix="hubkit-", suffix=suffix)
    os.close(handle)  # mkstemp made it 0600: digests and references, this brand's eyes only
    return Path(name)


def _gzip_file(path: Path, fmt: str) -> _Body:
    target = _temporary(".gz")
    with path.open("rb") as source, gzip.open(target, "wb", compresslevel=1) as sink:
        shutil.copyfileobj(source, sink, CHUNK)
    return _Body(target, fmt, owned=True)


def _hash_file(path: Path, fmt: str, allow_refused: bool) -> _Body:
    refused: list[dict[str, Any]] = []

    def on_error(error: RowError) -> None:
        refused.append({"row": error.row, "field": error.field, "reason": error.reason})

    target = _temporary(".csv.gz")
    opener: Any = gzip.open if path.name.endswith(".gz") else open
    try:
        with (
            opener(path, "rt", encoding="utf-8", newline="") as source,
            gzip.open(target, "wt", encoding="utf-8", newline="", compresslevel=1) as sink,
        ):
            report = hash_stream(
                source, sink, input_format=fmt, output_format=CSV, on_error=on_error
            )
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    if refused and not allow_refused:
        target.unlink(missing_ok=True)
        raise RowsRefused(refused, report.rows_read)
    return _Body(target, CSV, owned=True)


def _frame_body(frame: pd.DataFrame, allow_refused: bool, columns: dict[str, Any]) -> _Body:
    from partners.kit.frame_files import gzip_chunks, upload_csv_chunks
    from partners.kit.frames import hash_frame

    if "id_hash" in frame.columns:
        records = frame
    else:
        records, refused = hash_frame(frame, **columns)
        if len(refused) and not allow_refused:
            raise RowsRefused(refused.to_dict("records"), len(frame))
    target = _temporary(".csv.gz")
    with target.open("wb") as sink:
        for chunk in gzip_chunks(upload_csv_chunks(records)):
            sink.write(chunk)
    return _Body(target, CSV, owned=True)


def write_errors(errors: Iterable[dict[str, Any]], path: str | None) -> None:
    """An error report as CSV (``row, field, reason``) to ``path`` (``-``: stdout)."""
    stream: Any = sys.stdout if path in (None, "-") else open(path, "w", newline="")  # noqa: SIM115
    try:
        writer = csv.writer(stream)
        writer.writerow(["row", "field", "reason"])
        for error in errors:
            writer.writerow([error.get("row"), error.get("field"), error.get("reason")])
    finally:
        if stream is not sys.stdout:
            stream.close()
