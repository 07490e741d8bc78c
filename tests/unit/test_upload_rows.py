"""The bulk reader's fast path (typed decoder, cached consent and attribute checks) must
accept exactly what the full check accepts, and give the same record."""

from __future__ import annotations

import base64
import hashlib
import io
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from partners.identifiers.uploads.rows import MAX_LINE_BYTES, check_lines, ndjson_chunks
from partners.identifiers.validation import RecordError, check_record

DIGEST = hashlib.sha256(b"someone@example.org").digest()
ID_HASHES = (
    base64.b64encode(DIGEST).decode(),
    DIGEST.hex(),
    DIGEST.hex().upper(),
    base64.b64encode(DIGEST[:31]).decode(),  # 44 characters, 31 bytes
    base64.b64encode(DIGEST).decode().replace("=", "-"),
    "someone@example.org",
    "+33612345678",
    "",
    "é" * 44,
    DIGEST.hex()[:63],
)
REFS = (
    "C000123",
    " C000123 ",
    "cust-9",
    "123456789",
    "+33 6 12 34 56 78",
    "a@b.co",
    "",
    "  ",
    "x" * 200,
    "x" * 201,
    "Ünïcode1",
    "12345",
    "1234567890123456789",
    "415.555.2671",
    "john\uff20example.com",
    "415\u200b555\u200b2671",
    "\uff43\uff10\uff10\uff11",
    "j o h n [at] example [dot] com",
)
NAMES = (
    "tier",
    "city",
    "1bad",
    "a" * 64,
    "a" * 65,
    "",
    "x.y-z_1",
    "tier\n",
    "john_at_example_dot_com",
)
VALUES: tuple[Any, ...] = (
    "gold",
    5,
    2.5,
    True,
    None,
    "a@b.com",
    "x" * 100,
    "x" * 101,
    "+33612345678",
    "",
    [1],
    "j o h n @ e x a m p l e . c o m",
    "(415) 555-2671",
    "Meet us @ the lounge",
    "4155552671",
)
PURPOSES = ("analytics", "joint_offers", "rewards_sharing", "bogus", 1)
MISSING = object()

ID_TYPE = st.sampled_from(("email", "phone", "fax", 3, None))
ID_HASH = st.sampled_from(ID_HASHES) | st.just(None)
REF = st.sampled_from(REFS) | st.just(7)
CONSENTS = st.lists(st.sampled_from(PURPOSES), max_size=4) | st.sampled_from(
    (None, "analytics", {})
)
ATTRIBUTES = (
    st.dictionaries(st.sampled_from(NAMES), st.sampled_from(VALUES), max_size=4)
    | st.integers(19, 22).map(lambda n: {f"k{i}": "v" for i in range(n)})
    | st.sampled_from((None, [], "tier"))
)
# Half the records have every field but one drawn from valid values only, so that the fast
# path's acceptance is exercised as often as its refusals.
VALID = {
    "id_type": st.sampled_from(("email", "phone")),
    "id_hash": st.sampled_from(ID_HASHES[:3]),
    "customer_ref": st.sampled_from(REFS[:3]),
    "consents": st.lists(st.sampled_from(PURPOSES[:3]), max_size=3),
    "attributes": st.dictionaries(st.sampled_from(NAMES[:2]), st.sampled_from(VALUES[:3])),
}
ANY = {
    "id_type": ID_TYPE,
    "id_hash": ID_HASH,
    "customer_ref": REF,
    "consents": CONSENTS,
    "attributes": ATTRIBUTES,
}


@st.composite
def records(draw: st.DrawFn) -> dict[str, Any]:
    if draw(st.booleans()):
        return draw(st.fixed_dictionaries({}, optional={**ANY, "extra": st.just("x")}))
    odd = draw(st.sampled_from(sorted(ANY)))
    fields = {name: ANY[name] if name == odd else strategy for name, strategy in VALID.items()}
    record = draw(st.fixed_dictionaries(fields))
    if draw(st.booleans()):
        del record[odd]
    return record


@settings(max_examples=600)
@given(st.lists(records(), min_size=1, max_size=5))
def test_the_fast_path_accepts_what_the_full_check_accepts(rows: list[dict[str, Any]]) -> None:
    lines = [msgspec.json.encode(row) + b"\n" for row in rows]
    batch = check_lines((1, b"".join(lines)))
    expected = []
    for number, row in enumerate(rows, start=1):
        record = check_record(number, row, [])
        if record is not None:
            attributes = record.attributes
            text = None if attributes is None else msgspec.json.encode(attributes).decode()
            expected.append(
                (
                    number,
                    (record.id_type, record.digest, record.customer_ref, record.consents, text),
                )
            )
    assert batch.records == expected
    assert [r.row for r in batch.refused] == sorted(
        {n for n in range(1, len(rows) + 1)} - {n for n, _ in expected}
    )
    assert batch.rows_read == len(rows)


def test_a_refused_row_says_why_whatever_path_saw_it_first() -> None:
    good = {
        "id_type": "email",
        "id_hash": ID_HASHES[0],
        "customer_ref": "C1",
        "attributes": {"tier": "gold"},
    }
    bad = {**good, "attributes": {"tier": "someone@example.org"}}
    batch = check_lines((1, b"\n".join(msgspec.json.encode(r) for r in (good, bad, good, bad))))
    assert [n for n, _ in batch.records] == [1, 3]
    errors: list[RecordError] = []
    check_record(2, bad, errors)
    assert [(e.index, e.field) for e in batch.errors] == [(2, "attributes"), (4, "attributes")]
    assert batch.errors[0].reason == errors[0].reason
    assert "someone" not in repr(batch.errors)


def lines_of(body: bytes, batch_rows: int) -> list[tuple[int, bytes]]:
    """(line number, line as check_lines sees it) over every chunk, checking that chunks
    follow one another and hold at least batch_rows lines (but the last)."""
    seen: list[tuple[int, bytes]] = []
    chunks = list(ndjson_chunks(io.BytesIO(body), batch_rows))
    for position, (first, block) in enumerate(chunks):
        lines = block.split(b"\n")
        if block.endswith(b"\n") or not block:
            lines.pop()
        assert first == len(seen) + 1
        if position < len(chunks) - 1:
            assert len(lines) >= batch_rows
        # A line over the limit is never held whole: at most the limit and one read.
        assert all(len(line) < 2 * MAX_LINE_BYTES for line in lines)
        seen.extend(
            (number, line if len(line) < MAX_LINE_BYTES else LONG)
            for number, line in enumerate(lines, start=first)
        )
    return seen


LONG = b"(refused: over the limit)"


LINE = st.sampled_from((0, 1, 5, MAX_LINE_BYTES - 1, MAX_LINE_BYTES, MAX_LINE_BYTES + 1, 200_000))


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(LINE, st.sampled_from((b"\n", b"\r\n"))), max_size=12),
    st.booleans(),
    st.integers(1, 5),
)
def test_chunks_keep_every_line_in_order_and_cut_long_ones(
    shape: list[tuple[int, bytes]], final_newline: bool, batch_rows: int
) -> None:
    lines = [bytes([97 + i % 26]) * size for i, (size, _) in enumerate(shape)]
    body = b"".join(line + end for line, (_, end) in zip(lines, shape, strict=True))
    if shape and not final_newline:
        body = body.removesuffix(shape[-1][1])
    expected = []
    for number, (line, (_, end)) in enumerate(zip(lines, shape, strict=True), start=1):
        last = number == len(lines)
        text = line + (b"\r" if end == b"\r\n" and not (last and not final_newline) else b"")
        expected.append((number, text if len(text) < MAX_LINE_BYTES else LONG))
    if expected and not final_newline and not expected[-1][1]:
        expected.pop()  # an empty last line without its newline is no line at all
    assert lines_of(body, batch_rows) == expected


def test_a_long_line_is_refused_by_its_length_and_the_next_one_read() -> None:
    good = msgspec.json.encode({"id_type": "email", "id_hash": ID_HASHES[0], "customer_ref": "C1"})
    body = good + b"\n" + b"x" * 300_000 + b"\n" + good.replace(b"C1", b"C2") + b"\n"
    batch = check_lines(next(ndjson_chunks(io.BytesIO(body), 10)))
    assert [n for n, _ in batch.records] == [1, 3]
    assert [(e.index, e.reason) for e in batch.errors] == [
        (2, f"the line is longer than {MAX_LINE_BYTES} bytes")
    ]


def test_an_attribute_name_with_a_trailing_newline_is_refused() -> None:
    errors: list[RecordError] = []
    record = {"id_type": "email", "id_hash": ID_HASHES[0], "customer_ref": "C1"}
    assert check_record(1, {**record, "attributes": {"tier\n": "gold"}}, errors) is None
    assert [e.field for e in errors] == ["attributes"]
    assert check_record(2, {**record, "attributes": {"tier": "gold"}}, []) is not None


def test_refused_texts_are_not_kept_in_the_fast_path_caches() -> None:
    from partners.identifiers.uploads import rows

    pasted = {
        "id_type": "email",
        "id_hash": ID_HASHES[0],
        "customer_ref": "C1",
        "attributes": {"contact": "someone@example.org"},
    }
    check_lines((1, msgspec.json.encode(pasted)))
    assert not [raw for raw in rows._attribute_texts if b"someone" in raw]
