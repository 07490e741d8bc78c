"""DataFrames in and out of files: a customer file read into a frame (CSV, NDJSON, Parquet,
Excel), and a records frame written as the hub's upload CSV, in chunks, gzip-compressed.
Needs the kit's ``pandas`` extra."""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from partners.kit.files import ATTR_PREFIX
from partners.kit.frames import RECORD_COLUMNS

__all__ = ["gzip_chunks", "read_table", "upload_csv_chunks"]


def read_table(path: str | Path, **options: Any) -> pd.DataFrame:
    """A customer file as a DataFrame of strings: CSV, NDJSON, Parquet or Excel (``.gz``
    allowed for the text formats), chosen by the file's extension."""
    name = str(path).lower()
    stem = name.removesuffix(".gz")
    if stem.endswith((".parquet", ".pq")):
        return pd.read_parquet(path, **options)
    if stem.endswith((".xlsx", ".xlsm", ".xls")):
        return pd.read_excel(path, dtype=str, **options)
    if stem.endswith((".ndjson", ".jsonl", ".json")):
        return pd.read_json(path, lines=True, dtype=False, **options)
    return pd.read_csv(path, dtype=str, keep_default_na=False, **options)


def upload_csv_chunks(records: pd.DataFrame, rows_per_chunk: int = 100_000) -> Iterator[bytes]:
    """The records frame as the hub's upload CSV (consents joined by ``|``, ``attr.<name>``
    columns, empty cells for missing values), in chunks."""
    columns = [c for c in records.columns if c in RECORD_COLUMNS or c.startswith(ATTR_PREFIX)]
    if not {"id_type", "id_hash", "customer_ref"} <= set(columns):
        raise ValueError(
            "the frame is not a records frame: it needs id_type, id_hash, customer_ref"
        )
    for start in range(0, max(len(records), 1), rows_per_chunk):
        buffer = io.StringIO()
        records.iloc[start : start + rows_per_chunk].to_csv(
            buffer, columns=columns, index=False, header=start == 0, lineterminator="\n"
        )
        yield buffer.getvalue().encode()


def gzip_chunks(chunks: Iterator[bytes], level: int = 1) -> Iterator[bytes]:
    """``chunks`` compressed as one gzip stream (level 1: the network, not the CPU, should be
    what an upload waits for)."""
    compressor = gzip.GzipFile(fileobj=(sink := io.BytesIO()), mode="wb", compresslevel=level)
    for chunk in chunks:
        compressor.write(chunk)
        if sink.tell():
            yield sink.getvalue()
            sink.seek(0)
            sink.truncate()
    compressor.close()
    yield sink.getvalue()
