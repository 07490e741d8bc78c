"""Hash a brand's customer file, row by row, in constant memory.

Input: CSV with a header, or NDJSON (one object a line), optionally gzip (``.gz``). Each row
names a person: ``customer_ref`` (required), raw ``email`` and/or ``phone``, ``consents``
(CSV: joined by ``|``; NDJSON: a list) and attributes (CSV: ``attr.<name>`` columns; NDJSON:
an ``attributes`` object). Any other column is dropped (its name is reported, never its values).

A CSV is parsed strictly: a quote that is never closed (or stray text after a closing quote)
stops the run with :class:`UnreadableInput` naming the line, since every later row would be
read wrongly; undecodable bytes are named by their offset (:func:`undecodable_message`).

Output: the hub's upload shape (``POST /v1/identifiers/uploads``), one record per identifier:
``id_type, id_hash, customer_ref, consents, attr.*`` (CSV) or the same as JSON objects
(NDJSON). Only digests leave the kit: a row with an invalid identifier is refused whole, and
its error names the row, the field and the reason -- never the value.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any, cast

from partners.kit.contact import looks_like_contact
from partners.kit.normalize import BASE64, ID_TYPES, InvalidIdentifier, hash_identifier

CSV, NDJSON = "csv", "ndjson"
CONSENTS = ("analytics", "joint_offers", "rewards_sharing")
MAX_ATTRIBUTES = 20
ATTR_PREFIX = "attr."


@dataclass
class RowError:
    row: int  # 1 = the first data row (after a CSV header)
    field: str
    reason: str


@dataclass
class HashReport:
    rows_read: int = 0
    rows_hashed: int = 0
    rows_refused: int = 0
    records_written: int = 0
    ignored_columns: set[str] = field(default_factory=set)


class Person:
    """One input row, parsed: its raw identifiers stay inside this object."""

    __slots__ = ("attributes", "consents", "customer_ref", "identifiers")

    def __init__(self) -> None:
        self.customer_ref = ""
        self.identifiers: list[tuple[str, str]] = []
        self.consents: list[str] = []
        self.attributes: dict[str, str] = {}


_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_. -]{0,63}")


def shown_name(name: str) -> str:
    """A column name as it may be printed: a header cell could hold a pasted address."""
    if _PLAIN_NAME.fullmatch(name) and not looks_like_contact(name):
        return name
    return "(a column whose name is not shown)"


def detect_format(name: str) -> str:
    lowered = name.lower().removesuffix(".gz")
    if lowered.endswith((".ndjson", ".jsonl", ".json")):
        return NDJSON
    return CSV


def open_text(path: str, mode: str) -> IO[str]:
    """A text stream for ``path`` (``-`` = stdin/stdout), gzip-compressed when it ends in .gz."""
    if path == "-":
        return sys.stdin if "r" in mode else sys.stdout
    if path.endswith(".gz"):
        return cast(IO[str], gzip.open(path, mode[0] + "t", encoding="utf-8", newline=""))
    return open(path, mode[0], encoding="utf-8", newline="")


class UnreadableInput(ValueError):
    """The input cannot be read on (a broken CSV quote, bytes that are not UTF-8): what was
    written so far is incomplete. The message names the line or the byte offset."""


class ByteCounter:
    """A binary stream that counts the bytes read through it, so a decoding error can name
    its offset in the (decompressed) input."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.count += len(data)
        return data

    def read1(self, size: int = -1) -> bytes:
        read1 = getattr(self.raw, "read1", self.raw.read)
        data: bytes = read1(size)
        self.count += len(data)
        return data

    def readable(self) -> bool:
        return True

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)


def text_reader(raw: IO[bytes]) -> tuple[IO[str], ByteCounter]:
    """UTF-8 text over ``raw``, and the counter that locates a decoding error."""
    counter = ByteCounter(raw)
    return io.TextIOWrapper(cast(Any, counter), encoding="utf-8", newline=""), counter


def undecodable_message(exc: UnicodeDecodeError, counter: ByteCounter) -> str:
    """Where the first byte that is not UTF-8 is: the decoder saw ``exc.object``, which ends
    with the last byte read so far."""
    offset = counter.count - len(exc.object) + exc.start
    return (
        f"the byte at offset {offset:,} (0x{exc.object[exc.start]:02x}, counting from 0) is not "
        "UTF-8: save the file as UTF-8"
    )


def _csv_problem(exc: csv.Error, line: int) -> UnreadableInput:
    reason = str(exc)
    if "unexpected end of data" in reason:
        return UnreadableInput(
            f'line {line}: a quote (") opened on this line is never closed, so every later '
            "row would be read as part of it; close or remove it"
        )
    return UnreadableInput(f"line {line}: the CSV is malformed ({reason})")


def _rows_csv(
    reader: csv.DictReader[str], header: list[str], report: HashReport
) -> Iterator[tuple[int, dict[str, Any]]]:
    known = {"customer_ref", "consents", *ID_TYPES}
    report.ignored_columns.update(
        shown_name(name)
        for name in header
        if name not in known and not name.startswith(ATTR_PREFIX)
    )
    number = 0
    while True:
        line = reader.line_num + 1  # where the next record starts
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise _csv_problem(exc, line) from None
        number += 1
        if None in row:  # more cells than header columns
            yield number, {"__error__": "the row has more cells than the header has columns"}
        else:
            yield number, dict(row)


def _rows_ndjson(stream: IO[str], report: HashReport) -> Iterator[tuple[int, dict[str, Any]]]:
    known = {"customer_ref", "consents", "attributes", *ID_TYPES}
    number = 0
    for line in stream:
        if not line.strip():
            continue
        number += 1
        try:
            row = json.loads(line)
        except ValueError:
            yield number, {"__error__": "the line is not valid JSON"}
            continue
        if not isinstance(row, dict):
            yield number, {"__error__": "the line is not a JSON object"}
            continue
        report.ignored_columns.update(shown_name(k) for k in row if k not in known)
        yield number, row


def parse_person(row: dict[str, Any]) -> Person:
    """Validate one input row; raises (field, reason) as InvalidRow without echoing values."""
    if "__error__" in row:
        raise InvalidRow("", row["__error__"])
    person = Person()
    ref = row.get("customer_ref")
    if not isinstance(ref, str) or not ref.strip():
        raise InvalidRow("customer_ref", "customer_ref is required")
    if looks_like_contact(ref):
        raise InvalidRow(
            "customer_ref",
            "customer_ref looks like an email or phone number; use the brand's own "
            "pseudonymous customer id",
        )
    person.customer_ref = ref.strip()
    for id_type in ID_TYPES:
        raw = row.get(id_type)
        if raw is None or raw == "":
            continue
        if not isinstance(raw, str):
            raise InvalidRow(id_type, f"{id_type} must be a string")
        person.identifiers.append((id_type, raw))
    if not person.identifiers:
        raise InvalidRow("email", "the row has neither an email nor a phone number")
    consents = row.get("consents") or []
    if isinstance(consents, str):
        consents = [c.strip() for c in consents.split("|") if c.strip()]
    if not isinstance(consents, list) or not all(isinstance(c, str) for c in consents):
        raise InvalidRow("consents", "consents must be a list of purposes")
    unknown = sorted(set(consents) - set(CONSENTS))
    if unknown:
        raise InvalidRow("consents", f"unknown consent {unknown[0]!r}; use {', '.join(CONSENTS)}")
    person.consents = sorted(set(consents))
    attributes = row.get("attributes") or {
        k[len(ATTR_PREFIX) :]: v for k, v in row.items() if k and k.startswith(ATTR_PREFIX)
    }
    if not isinstance(attributes, dict):
        raise InvalidRow("attributes", "attributes must be an object of strings")
    for name, value in attributes.items():
        if looks_like_contact(str(name)):  # named by position only: the name is the leak
            raise InvalidRow("attributes", "an attribute name looks like an email or phone number")
        if value is None or value == "":
            continue
        if not isinstance(value, str | int | float | bool):
            raise InvalidRow(f"attributes.{name}", "an attribute value must be a string")
        text = str(value)
        if looks_like_contact(text):
            raise InvalidRow(f"attributes.{name}", "the value looks like an email or phone number")
        person.attributes[name] = text
    if len(person.attributes) > MAX_ATTRIBUTES:
        raise InvalidRow("attributes", f"at most {MAX_ATTRIBUTES} attributes per record")
    return person


class InvalidRow(Exception):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


class _Writer:
    def __init__(self, stream: IO[str], output_format: str) -> None:
        self.stream = stream
        self.format = output_format
        self.csv: Any = None
        self.attr_columns: list[str] | None = None

    def start(self, attr_columns: list[str]) -> None:
        """Fix the CSV output's attribute columns and write the header."""
        self.attr_columns = attr_columns
        if self.format == CSV:
            self.csv = csv.writer(self.stream, lineterminator="\n")
            self.csv.writerow(
                ["id_type", "id_hash", "customer_ref", "consents"]
                + [ATTR_PREFIX + a for a in attr_columns]
            )

    def write(self, record: dict[str, Any]) -> None:
        if self.format == NDJSON:
            self.stream.write(json.dumps(record, separators=(",", ":")) + "\n")
            return
        attributes = record.get("attributes", {})
        self.csv.writerow(
            [record["id_type"], record["id_hash"], record["customer_ref"]]
            + ["|".join(record["consents"])]
            + [attributes.get(a, "") for a in self.attr_columns or []]
        )


def hash_stream(
    source: IO[str],
    destination: IO[str],
    *,
    input_format: str = CSV,
    output_format: str = CSV,
    encoding: str = BASE64,
    on_error: Callable[[RowError], None] | None = None,
    on_row: Callable[[], None] | None = None,
) -> HashReport:
    """Hash every row of ``source`` into ``destination``; refused rows go to ``on_error``.

    CSV output has one column per attribute: those of a CSV input's header, or (NDJSON in,
    CSV out) those of the first row hashed; a later row with another attribute is refused.
    """
    report = HashReport()
    writer = _Writer(destination, output_format)
    if input_format == NDJSON:
        rows = _rows_ndjson(source, report)
    else:
        reader = csv.DictReader(source, strict=True)
        try:
            header = list(reader.fieldnames or [])
        except csv.Error as exc:
            raise _csv_problem(exc, 1) from None
        writer.start([c[len(ATTR_PREFIX) :] for c in header if c.startswith(ATTR_PREFIX)])
        rows = _rows_csv(reader, header, report)
    for number, row in rows:
        report.rows_read += 1
        if on_row is not None:
            on_row()
        try:
            person = parse_person(row)
            if writer.attr_columns is None:
                writer.start(sorted(person.attributes))
            elif output_format == CSV and not set(person.attributes) <= set(writer.attr_columns):
                extra = sorted(set(person.attributes) - set(writer.attr_columns))[0]
                raise InvalidRow(
                    f"attributes.{extra}",
                    "this attribute is not a column of the CSV output (set by the first row); "
                    "write NDJSON output instead",
                )
            records = [
                {
                    "id_type": id_type,
                    "id_hash": _hash(id_type, raw, encoding),
                    "customer_ref": person.customer_ref,
                    "consents": person.consents,
                    **({"attributes": person.attributes} if person.attributes else {}),
                }
                for id_type, raw in person.identifiers
            ]
        except InvalidRow as exc:
            report.rows_refused += 1
            if on_error is not None:
                on_error(RowError(number, exc.field, exc.reason))
            continue
        for record in records:
            writer.write(record)
            report.records_written += 1
        report.rows_hashed += 1
    if writer.attr_columns is None:
        writer.start([])
    return report


def _hash(id_type: str, raw: str, encoding: str) -> str:
    try:
        return hash_identifier(id_type, raw, encoding)
    except InvalidIdentifier as exc:
        raise InvalidRow(id_type, exc.reason) from None
