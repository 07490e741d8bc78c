"""Spooling an upload body: a gzip body is inflated on the way, only to be measured, and the
lines that hold no record are counted (the row reader skips them)."""

from __future__ import annotations

import asyncio
import gzip
import io
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.core.errors import BadRequest, PayloadTooLarge
from partners.identifiers.uploads.measure import (
    RATIO_CHECKED_FROM,
    BlankLineCounter,
    InflatedSizeGauge,
    InflateLimits,
)
from partners.identifiers.uploads.models import CSV, NDJSON
from partners.identifiers.uploads.rows import MAX_LINE_BYTES, read_batches
from partners.identifiers.uploads.spool import SpooledBody, spool

LIMITS = InflateLimits(max_bytes=1 << 30, max_ratio=100)


def record_lines(rows: int) -> bytes:
    """NDJSON as brands send it: a digest and a reference per row, repeated keys."""
    return b"".join(
        b'{"id_type": "email", "id_hash": "%064x", "customer_ref": "c%d", '
        b'"consents": ["analytics", "joint_offers"]}\n' % (n * 2654435761, n)
        for n in range(rows)
    )


async def chunks_of(body: bytes, size: int = 65_536) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def spool_gzip(body: bytes, tmp_path: Path, limits: InflateLimits = LIMITS) -> SpooledBody:
    return asyncio.run(
        spool(
            chunks_of(body),
            tmp_path,
            limit=1 << 40,
            gzip=limits,
            limit_reason="too big",
            receive_seconds=60,
        )
    )


def feed_blank_lines(gauge: InflatedSizeGauge, megabytes: int) -> None:
    deflater = zlib.compressobj(9, zlib.DEFLATED, 31)
    sent = 0
    for _ in range(megabytes):
        piece = deflater.compress(b"\n" * (1 << 20))
        sent += len(piece)
        gauge.feed(piece, sent)


def test_a_bomb_is_refused_within_its_first_megabytes() -> None:
    gauge = InflatedSizeGauge(LIMITS)
    with pytest.raises(PayloadTooLarge, match="inflates more than 100-fold"):
        feed_blank_lines(gauge, 400)  # 400 MB of blank lines, ~400 KB of gzip
    assert gauge.inflated <= RATIO_CHECKED_FROM + (2 << 20)


def test_a_refused_bomb_leaves_no_file(tmp_path: Path) -> None:
    bomb = gzip.compress(b"\n" * (64 << 20))
    with pytest.raises(PayloadTooLarge):
        spool_gzip(bomb, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_inflated_size_is_limited_whatever_the_ratio(tmp_path: Path) -> None:
    body = gzip.compress(record_lines(20_000))
    with pytest.raises(PayloadTooLarge, match="inflates to more than 1,000,000 bytes"):
        spool_gzip(body, tmp_path, InflateLimits(max_bytes=1_000_000, max_ratio=100))


def test_records_that_compress_well_are_kept_whole(tmp_path: Path) -> None:
    # Past the point where the ratio is checked: real records inflate a few times, not 100.
    plain = record_lines(120_000)
    assert len(plain) > RATIO_CHECKED_FROM
    body = gzip.compress(plain)
    spooled = spool_gzip(body, tmp_path)
    assert spooled.path.read_bytes() == body  # spooled as sent; the processor inflates it


def test_several_members_and_zero_padding_are_read_as_gzip_reads_them(tmp_path: Path) -> None:
    body = gzip.compress(b"a\n") + gzip.compress(b"b\n") + b"\x00" * 100
    with gzip.GzipFile(fileobj=io.BytesIO(body)) as processor_reads:
        assert processor_reads.read() == b"a\nb\n"
    gauge = InflatedSizeGauge(LIMITS)
    gauge.feed(body, len(body))
    assert gauge.inflated == 4


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (gzip.compress(b"a\n") + b"not gzip", "not a valid gzip stream"),
        (gzip.compress(b"a\n")[:10] + b"\x07" * 64, "not a valid gzip stream"),
        (gzip.compress(record_lines(100))[:-20], "ends before its end marker"),
    ],
    ids=["trailing garbage", "a reserved block type", "cut short"],
)
def test_a_broken_gzip_stream_is_a_bad_request(tmp_path: Path, body: bytes, reason: str) -> None:
    with pytest.raises(BadRequest, match=reason):
        spool_gzip(body, tmp_path)
    assert list(tmp_path.iterdir()) == []


BLANKS = [
    b"",
    b"\n",
    b"  \t\n",
    b"\r\n",
    b" " * (MAX_LINE_BYTES + 10) + b"\n",  # too long to be blank: a refused row
    b"{}\n",
    b"\x0c\n",
]


@settings(deadline=None)
@given(st.lists(st.sampled_from(BLANKS), max_size=30), st.integers(1, 70_000))
def test_blank_ndjson_lines_are_counted_as_the_row_reader_skips_them(
    lines: list[bytes], chunk: int
) -> None:
    body = b"".join(lines) + b"  "  # and a blank last line without its line end
    counter = BlankLineCounter(NDJSON)
    for start in range(0, len(body), chunk):
        counter.feed(body[start : start + chunk])
    batches = list(read_batches(io.BytesIO(body), NDJSON, compressed=False, batch_rows=7))
    rows_read = sum(batch.rows_read for batch in batches)
    assert counter.finish() == body.count(b"\n") + 1 - rows_read


@given(st.lists(st.sampled_from([b"\n", b"\r\n", b"a,b,c\n", b" \n"]), max_size=30))
def test_empty_csv_lines_are_counted_as_the_row_reader_skips_them(lines: list[bytes]) -> None:
    body = b"id_type,id_hash,customer_ref\n" + b"".join(lines)
    counter = BlankLineCounter(CSV)
    for start in range(0, len(body), 3):
        counter.feed(body[start : start + 3])
    batches = list(read_batches(io.BytesIO(body), CSV, compressed=False, batch_rows=7))
    rows_read = sum(batch.rows_read for batch in batches)
    assert counter.finish() == len(lines) - rows_read


def test_a_body_already_buffered_lets_other_requests_run_between_its_chunks(
    tmp_path: Path,
) -> None:
    """Chunks the server has buffered come without a pause: the spool lets the event loop go
    round between them, so another request of the process is not held until the whole body
    is inflated, counted and written."""
    body = gzip.compress(record_lines(20_000))
    chunks = (len(body) + 8_191) // 8_192
    assert chunks >= 10
    ticks_while_spooling: list[int] = []

    async def run() -> SpooledBody:
        ticks = 0
        done = False

        async def other_request() -> None:
            nonlocal ticks
            while not done:
                ticks += 1
                await asyncio.sleep(0)

        other = asyncio.create_task(other_request())
        await asyncio.sleep(0)  # it has started
        try:
            spooled = await spool(
                chunks_of(body, 8_192),
                tmp_path,
                limit=1 << 40,
                gzip=LIMITS,
                limit_reason="too big",
                receive_seconds=60,
                lines=BlankLineCounter(NDJSON),
            )
            ticks_while_spooling.append(ticks)
        finally:
            done = True
            await other
        return spooled

    spooled = asyncio.run(run())
    spooled.lock.close()
    # It went round once a chunk at least (without the pauses: once, before the spool began).
    assert ticks_while_spooling[0] >= chunks
    assert spooled.size == len(body)
