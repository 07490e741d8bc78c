"""Reading an upload body row by row: NDJSON or CSV, gzip or plain, into checked records.

Constant memory: rows are read a line at a time and handed on in batches. Every row goes
through the same checks as ``POST /v1/identifiers`` (:func:`check_record`); NDJSON rows first
try a typed decoder that does most of those checks in C, and any row it does not accept is
checked again the slow way, which says exactly what is wrong. A bad row becomes a row error,
never a failed upload; only a body that cannot be read on (a broken gzip stream, a CSV header
the hub does not know, text that is not UTF-8) fails the upload.
"""

from __future__ import annotations

import binascii
import csv
import gzip
import io
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Annotated, Any, Literal, TypeVar, cast

import msgspec

from partners.identifiers.models import CONSENT_BITS, ID_TYPE_CODES, MAX_ATTRIBUTES
from partners.identifiers.uploads.models import CSV
from partners.identifiers.validation import (
    ATTRIBUTE_NAME,
    MAX_ATTRIBUTE_VALUE,
    MAX_REF,
    RecordError,
    check_record,
)
from partners.kit import InvalidIdentifier, parse_digest
from partners.kit.contact import looks_like_contact
from partners.kit.files import shown_name

MAX_LINE_BYTES = 64 * 1024
CSV_COLUMNS = ("id_type", "id_hash", "customer_ref", "consents")
ATTR_PREFIX = "attr."


class UnreadableBody(Exception):
    """The body cannot be read past some point; the upload fails with this reason."""


# An accepted row: (id type code, digest, customer_ref, consent mask, attributes as the JSON
# text that is stored, or None).
AcceptedRecord = tuple[int, bytes, str, int, str | None]


@dataclass(slots=True)
class RefusedRow:
    """What could be read of a refused row: in ``replace`` mode that person keeps their
    records (by customer_ref, and by key where the digest was readable)."""

    row: int
    customer_ref: str | None
    id_type: int | None
    digest: bytes | None


@dataclass
class Batch:
    records: list[tuple[int, AcceptedRecord]] = field(default_factory=list)
    errors: list[RecordError] = field(default_factory=list)
    refused: list[RefusedRow] = field(default_factory=list)
    rows_read: int = 0


class _TypedRow(msgspec.Struct, forbid_unknown_fields=True):
    """The fast path's shape; anything it refuses is re-checked by :func:`check_record`.

    Consents and attributes are kept as raw JSON: a file repeats a few sets of them, and
    each distinct text is checked once (see :func:`_consents_of`, :func:`_attributes_of`).
    """

    id_type: Literal["email", "phone"]
    id_hash: str
    customer_ref: Annotated[str, msgspec.Meta(max_length=MAX_REF)]
    consents: msgspec.Raw = msgspec.Raw(b"[]")
    attributes: msgspec.Raw = msgspec.Raw(b"null")


_typed = msgspec.json.Decoder(_TypedRow)
_any = msgspec.json.Decoder()
_consent_list = msgspec.json.Decoder(list[Literal["analytics", "joint_offers", "rewards_sharing"]])
_attribute_map = msgspec.json.Decoder(
    Annotated[dict[str, str | int | float], msgspec.Meta(max_length=MAX_ATTRIBUTES)] | None
)
_json = msgspec.json.Encoder()
# The raw JSON texts of consents and attributes that passed, with what they give. Only short
# texts, and only accepted ones (a refused text may hold a pasted address: it is never kept).
# A file repeats a few sets of them; when one holds more distinct texts than the cache, the
# cache starts over: at most 10,000 texts of at most 256 bytes per process.
_CACHE_TEXT_MAX = 256
_CACHE_MAX = 10_000
_masks: dict[bytes, int] = {}
_attribute_texts: dict[bytes, str | None] = {}
_BAD = (False, None)


def _remember(cache: dict[bytes, Any], raw: bytes, value: Any) -> None:
    if len(raw) <= _CACHE_TEXT_MAX:
        if len(cache) >= _CACHE_MAX:
            cache.clear()
        cache[raw] = value


def _consents_of(raw: bytes) -> int | None:
    """The consent mask of a raw JSON list of purposes, or None when it is not one."""
    mask = _masks.get(raw)
    if mask is not None:
        return mask
    try:
        purposes: list[Any] = _consent_list.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    mask = 0
    for purpose in purposes:
        mask |= CONSENT_BITS[purpose]
    _remember(_masks, raw, mask)
    return mask


def _attributes_of(raw: bytes) -> tuple[bool, str | None]:
    """(True, the attributes as stored JSON, or None when there are none) for raw JSON
    attributes that pass the checks; (False, None) when the slow path must look at them."""
    if raw in _attribute_texts:
        return True, _attribute_texts[raw]
    try:
        result = _checked_attributes(_attribute_map.decode(raw))
    except (msgspec.ValidationError, msgspec.DecodeError):
        return _BAD
    if result[0]:
        _remember(_attribute_texts, raw, result[1])
    return result


def _checked_attributes(attributes: dict[str, str | int | float] | None) -> tuple[bool, str | None]:
    if not attributes:
        return True, None
    clean: dict[str, str] = {}
    for name, value in attributes.items():
        text = value if isinstance(value, str) else str(value)
        if not ATTRIBUTE_NAME.match(name) or len(text) > MAX_ATTRIBUTE_VALUE:
            return _BAD
        if looks_like_contact(text) or looks_like_contact(name):
            return _BAD
        clean[name] = text
    return True, _json.encode(clean).decode()


def _plain_ref(ref: str) -> bool:
    """Whether a customer_ref is certainly no email or phone number: ASCII letters and digits
    only (no '@', separator, sign or look-alike; digits alone are a loyalty number, never a
    phone). Anything else takes the full check."""
    return ref.isascii() and ref.isalnum()


def _fast(line: bytes) -> AcceptedRecord | None:
    """The record, when the typed decoder and the cheap checks accept the line whole."""
    try:
        row = _typed.decode(line)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    id_hash = row.id_hash
    if len(id_hash) == 44 and id_hash[43] == "=" and id_hash.isascii():
        # parse_digest's base64 case, inline: strict alphabet, padding only at the end.
        try:
            digest = binascii.a2b_base64(id_hash.encode(), strict_mode=True)
        except binascii.Error:
            return None
        if len(digest) != 32:
            return None
    else:
        try:
            digest = parse_digest(id_hash)
        except InvalidIdentifier:
            return None
    ref = row.customer_ref
    if not _plain_ref(ref):
        ref = ref.strip()
        if not ref or looks_like_contact(ref):
            return None
    mask = _consents_of(bytes(row.consents))
    if mask is None:
        return None
    ok, attributes = _attributes_of(bytes(row.attributes))
    if not ok:
        return None
    return ID_TYPE_CODES[row.id_type], digest, ref, mask, attributes


def _refused(row: int, raw: Any) -> RefusedRow:
    """Whatever identifies the person of a refused row (never reported, only protected)."""
    if not isinstance(raw, dict):
        return RefusedRow(row, None, None, None)
    ref = raw.get("customer_ref")
    ref = ref.strip() if isinstance(ref, str) and 0 < len(ref.strip()) <= MAX_REF else None
    kind = raw.get("id_type")
    id_type = ID_TYPE_CODES.get(kind) if isinstance(kind, str) else None
    digest = None
    if isinstance(raw.get("id_hash"), str):
        try:
            digest = parse_digest(raw["id_hash"])
        except InvalidIdentifier:
            digest = None
    return RefusedRow(row, ref, id_type, digest)


def _check(row: int, raw: Any, batch: Batch) -> None:
    record = check_record(row, raw, batch.errors)
    if record is None:
        batch.refused.append(_refused(row, raw))
    else:
        attributes = None if record.attributes is None else _json.encode(record.attributes)
        batch.records.append(
            (
                row,
                (
                    record.id_type,
                    record.digest,
                    record.customer_ref,
                    record.consents,
                    None if attributes is None else attributes.decode(),
                ),
            )
        )


READ_BYTES = MAX_LINE_BYTES
LineChunk = tuple[int, bytes]  # (number of the first line, whole lines)


def ndjson_chunks(stream: IO[bytes], batch_rows: int) -> Iterator[LineChunk]:
    """The body's whole lines, at least ``batch_rows`` a chunk (the last one may hold fewer),
    unchecked and unsplit, for :func:`check_lines`, which may run in another process.

    The body is read in blocks and cut at line ends; lines are only counted here. A line of
    ``MAX_LINE_BYTES`` or more is never held whole (once what is pending of it reaches the
    limit, the rest is skipped): :func:`check_lines` refuses it by its length.
    """
    first, lines = 1, 0
    parts: list[bytes] = []
    tail = b""  # the line in progress
    skipping = False  # tail is the cut start of an over-long line: drop the rest of it
    while piece := stream.read(READ_BYTES):
        if skipping:
            end = piece.find(b"\n")
            if end < 0:
                continue
            parts.append(tail + b"\n")
            lines += 1
            tail, skipping, piece = b"", False, piece[end + 1 :]
        end = piece.rfind(b"\n")
        if end < 0:
            tail += piece
        else:
            block = tail + piece[: end + 1]
            parts.append(block)
            lines += block.count(b"\n")
            tail = piece[end + 1 :]
        if len(tail) >= MAX_LINE_BYTES:
            tail, skipping = tail[:MAX_LINE_BYTES], True
        if lines >= batch_rows:
            yield first, b"".join(parts)
            first, lines, parts = first + lines, 0, []
    if tail:
        parts.append(tail)
    yield first, b"".join(parts)


def check_lines(chunk: LineChunk) -> Batch:
    """Check a block of NDJSON lines; blank lines are skipped (and numbered)."""
    first, block = chunk
    lines = block.split(b"\n")
    if block.endswith(b"\n") or not block:
        lines.pop()
    batch = Batch()
    for number, line in enumerate(lines, start=first):
        if len(line) >= MAX_LINE_BYTES:
            batch.rows_read += 1
            batch.errors.append(
                RecordError(number, "", f"the line is longer than {MAX_LINE_BYTES} bytes")
            )
            batch.refused.append(RefusedRow(number, None, None, None))
        elif line.strip():
            batch.rows_read += 1
            record = _fast(line)
            if record is not None:
                batch.records.append((number, record))
            else:
                try:
                    raw = _any.decode(line)
                except msgspec.DecodeError as exc:
                    batch.errors.append(RecordError(number, "", f"not valid JSON: {exc}"))
                    batch.refused.append(RefusedRow(number, None, None, None))
                else:
                    _check(number, raw, batch)
    return batch


def _ndjson_batches(stream: IO[bytes], batch_rows: int) -> Iterator[Batch]:
    for chunk in ndjson_chunks(stream, batch_rows):
        yield check_lines(chunk)


def _csv_header(header: list[str]) -> tuple[dict[str, int], dict[str, int]]:
    fields: dict[str, int] = {}
    attributes: dict[str, int] = {}
    for position, name in enumerate(header):
        name = name.strip()
        if name in CSV_COLUMNS and name not in fields:
            fields[name] = position
        elif name.startswith(ATTR_PREFIX) and name[len(ATTR_PREFIX) :] not in attributes:
            attributes[name[len(ATTR_PREFIX) :]] = position
        else:
            raise UnreadableBody(
                f"the CSV header has an unknown or repeated column "
                f"({shown_name(name)}); a CSV upload has the columns "
                f"{', '.join(CSV_COLUMNS)} and attr.<name> columns"
            )
    missing = [name for name in ("id_type", "id_hash", "customer_ref") if name not in fields]
    if missing:
        raise UnreadableBody(f"the CSV header lacks the column(s) {', '.join(missing)}")
    return fields, attributes


def _csv_batches(stream: IO[bytes], batch_rows: int) -> Iterator[Batch]:
    text = io.TextIOWrapper(stream, encoding="utf-8", newline="")
    reader = csv.reader(text)
    batch = Batch()
    try:
        header = next(reader, None)
        if header is None:
            yield batch
            return
        fields, attributes = _csv_header(header)
        width = len(header)
        for number, cells in enumerate(reader, start=1):
            if not cells:
                continue
            batch.rows_read += 1
            if len(cells) != width:
                batch.errors.append(
                    RecordError(number, "", f"expected {width} fields, found {len(cells)}")
                )
                batch.refused.append(RefusedRow(number, None, None, None))
            else:
                raw: dict[str, Any] = {name: cells[at] for name, at in fields.items()}
                consents = raw.get("consents", "")
                raw["consents"] = [c.strip() for c in consents.split("|")] if consents else []
                attrs = {name: cells[at] for name, at in attributes.items() if cells[at] != ""}
                if attrs:
                    raw["attributes"] = attrs
                _check(number, raw, batch)
            if batch.rows_read >= batch_rows:
                yield batch
                batch = Batch()
    except UnicodeDecodeError as exc:
        raise UnreadableBody(
            f"the CSV is not UTF-8 text (after row {batch.rows_read}); save it as UTF-8"
        ) from exc
    except csv.Error as exc:
        raise UnreadableBody(f"the CSV cannot be parsed: {exc}") from exc
    finally:
        text.detach()
    yield batch


def read_batches(
    stream: IO[bytes], fmt: str, *, compressed: bool, batch_rows: int
) -> Iterator[Batch]:
    """Batches of checked rows of an upload body.

    Raises :class:`UnreadableBody` when the body cannot be read on; batches already yielded
    stay valid, but an upload must be applied whole or not at all, so the caller discards them.
    """
    reader = _csv_batches if fmt == CSV else _ndjson_batches
    return _readable(reader, stream, compressed, batch_rows)


def read_ndjson_chunks(
    stream: IO[bytes], *, compressed: bool, batch_rows: int
) -> Iterator[LineChunk]:
    """Unchecked chunks of an NDJSON body's lines; errors as :func:`read_batches`."""
    return _readable(ndjson_chunks, stream, compressed, batch_rows)


T = TypeVar("T")


def _readable(
    reader: Callable[[IO[bytes], int], Iterator[T]],
    stream: IO[bytes],
    compressed: bool,
    batch_rows: int,
) -> Iterator[T]:
    source = cast(IO[bytes], gzip.GzipFile(fileobj=stream, mode="rb")) if compressed else stream
    try:
        yield from reader(source, batch_rows)
    except EOFError as exc:
        raise UnreadableBody(
            "the gzip stream ends before its end marker (the file was cut short); "
            "send the whole file again"
        ) from exc
    except (gzip.BadGzipFile, zlib.error, OSError) as exc:
        raise UnreadableBody(f"the body is not a valid gzip stream ({exc}); send it again") from exc
