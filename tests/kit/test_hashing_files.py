"""The kit on whole files: properties of normalisation, and no raw value in any output or log."""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.cli import main
from partners.kit import InvalidIdentifier, hash_identifier, normalize_email, normalize_phone
from partners.kit.files import NDJSON, RowError, hash_stream
from tests.kit.reference import reference_normalize_email

LOCAL = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="@\n\r"), min_size=1, max_size=20
)
DOMAIN = st.sampled_from(["gmail.com", "GMail.Com", "example.org", "hotel.example", "x.io"])
EMAILS = st.builds(lambda local, domain: f"{local}@{domain}", LOCAL, DOMAIN)
PHONES = st.text(alphabet="0123456789", min_size=10, max_size=15).map(lambda d: "+" + d)


@given(EMAILS)
def test_email_normalisation_is_idempotent(raw: str) -> None:
    try:
        once = normalize_email(raw)
    except InvalidIdentifier:
        return
    assert normalize_email(once) == once


@given(PHONES)
def test_phone_normalisation_is_idempotent(raw: str) -> None:
    assert normalize_phone(normalize_phone(raw)) == raw


@given(st.text(max_size=30))
def test_any_text_is_normalised_or_refused_never_anything_else(raw: str) -> None:
    for id_type in ("email", "phone"):
        try:
            digest = hash_identifier(id_type, raw)
        except InvalidIdentifier as refused:
            reason = refused.reason
            assert reason
            continue
        assert len(digest) == 44


def _people(emails: list[str], phones: list[str]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["customer_ref", "email", "phone", "consents", "attr.tier", "first_name"])
    for i, (email, phone) in enumerate(zip(emails, phones, strict=False)):
        writer.writerow([f"c{i}", email, phone, "analytics", "gold", "Secret Name"])
    return out.getvalue()


RAW_ROWS = st.lists(
    st.tuples(EMAILS, st.one_of(PHONES, st.sampled_from(["+1 415 555 0100", "4155550100"]))),
    min_size=1,
    max_size=20,
)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=60)
@given(RAW_ROWS)
def test_no_raw_value_survives_into_the_output_or_the_error_report(
    rows: list[tuple[str, str]],
) -> None:
    emails, phones = [r[0] for r in rows], [r[1] for r in rows]
    errors: list[RowError] = []
    out = io.StringIO()
    report = hash_stream(io.StringIO(_people(emails, phones)), out, on_error=errors.append)
    written = out.getvalue() + "".join(f"{e.row}{e.field}{e.reason}" for e in errors)
    for raw in [*emails, *phones]:
        if len(raw) >= 6:
            assert raw not in written
            assert raw.strip().lower() not in written.lower()
    assert "Secret Name" not in written
    assert report.rows_hashed + report.rows_refused == len(rows)
    assert report.ignored_columns == {"first_name"}


def test_hub_hash_streams_a_file_and_reports_only_counts_and_reasons(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = tmp_path / "customers.csv.gz"
    with gzip.open(source, "wt", newline="") as fh:
        fh.write(
            _people(
                ["Jane.Doe+promo@GMAIL.com", "no-at-sign.example", "bob@example.org"],
                ["+14155550100", "", "+1 (415) 555-0199"],
            )
        )
    output = tmp_path / "hashed.ndjson"
    errors = tmp_path / "errors.csv"
    caplog.set_level(logging.DEBUG)
    result = CliRunner().invoke(
        main, ["hash", str(source), "-o", str(output), "--errors", str(errors), "--quiet"]
    )
    assert result.exit_code == 1, result.output  # rows were refused: not a silent success
    assert "2 of 3 rows were refused (listed in" in result.output
    everything = result.output + output.read_text() + errors.read_text() + caplog.text
    for raw in ["Jane.Doe", "janedoe@gmail.com", "no-at-sign", "4155550100", "415) 555-0199"]:
        assert raw.lower() not in everything.lower()
    assert "rows hashed: 1, rows refused: 2, records written: 2" in result.output
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert records == [
        {
            "id_type": "email",
            "id_hash": hash_identifier("email", "janedoe@gmail.com"),
            "customer_ref": "c0",
            "consents": ["analytics"],
            "attributes": {"tier": "gold"},
        },
        {
            "id_type": "phone",
            "id_hash": hash_identifier("phone", "+14155550100"),
            "customer_ref": "c0",
            "consents": ["analytics"],
            "attributes": {"tier": "gold"},
        },
    ]
    assert list(csv.reader(errors.open())) == [
        ["row", "field", "reason"],
        ["2", "email", "an email address needs an '@'"],
        [
            "3",
            "phone",
            "a phone number in E.164 form has only digits after the '+' "
            "(no spaces, dashes or brackets)",
        ],
    ]


def test_ndjson_in_csv_out_and_malformed_lines_are_row_errors(tmp_path: Path) -> None:
    lines = [
        json.dumps({"customer_ref": "a1", "email": "a@example.org", "consents": ["analytics"]}),
        "{not json",
        json.dumps(["a", "list"]),
        json.dumps({"customer_ref": "jane@example.org", "email": "x@example.org"}),
        json.dumps({"customer_ref": "a2", "phone": "+447700900123", "consents": ["gambling"]}),
        json.dumps({"customer_ref": "a3", "phone": "+447700900123", "attributes": {"k": []}}),
    ]
    errors: list[RowError] = []
    out = io.StringIO()
    report = hash_stream(
        io.StringIO("\n".join(lines) + "\n"), out, input_format=NDJSON, on_error=errors.append
    )
    assert (report.rows_read, report.rows_hashed, report.rows_refused) == (6, 1, 5)
    assert [(e.row, e.field) for e in errors] == [
        (2, ""),
        (3, ""),
        (4, "customer_ref"),
        (5, "consents"),
        (6, "attributes.k"),
    ]
    assert out.getvalue().splitlines()[0] == "id_type,id_hash,customer_ref,consents"
    assert "jane@example.org" not in "".join(e.reason for e in errors)


ANY_EMAILISH = st.text(
    alphabet=st.sampled_from(list(" .+@aAzZ09éÉ\tgmail.com")) | st.characters(), max_size=30
)


@settings(max_examples=500)
@given(st.one_of(ANY_EMAILISH, EMAILS))
def test_the_kit_agrees_with_the_operators_parser_on_any_input(raw: str) -> None:
    try:
        expected: str | None = reference_normalize_email(raw)
    except InvalidIdentifier:
        expected = None
    try:
        actual: str | None = normalize_email(raw)
    except InvalidIdentifier:
        actual = None
    assert actual == expected


def test_ignored_column_names_are_named_unless_they_look_like_data() -> None:
    source = "customer_ref,email,first_name,jane@example.org\nc1,a@example.org,Jane,x\n"
    report = hash_stream(io.StringIO(source), io.StringIO())
    assert report.ignored_columns == {"first_name", "(a column whose name is not shown)"}


def _hash_cli(*args: str) -> Any:
    return CliRunner().invoke(main, ["hash", *args, "--quiet"])


def test_hub_hash_exits_zero_on_refused_rows_only_when_allowed(tmp_path: Path) -> None:
    source = tmp_path / "people.csv"
    source.write_text(_people(["ok@example.org", "not-an-email"], ["", ""]))
    refused = _hash_cli(str(source), "-o", str(tmp_path / "a.csv"))
    assert refused.exit_code == 1
    assert "--allow-refused" in refused.output
    allowed = _hash_cli(str(source), "-o", str(tmp_path / "b.csv"), "--allow-refused")
    assert allowed.exit_code == 0, allowed.output
    assert "rows hashed: 1, rows refused: 1" in allowed.output
    clean = tmp_path / "clean.csv"
    clean.write_text(_people(["ok@example.org"], [""]))
    assert _hash_cli(str(clean), "-o", str(tmp_path / "c.csv")).exit_code == 0


def test_an_unclosed_csv_quote_is_an_error_naming_its_line(tmp_path: Path) -> None:
    source = tmp_path / "people.csv"
    source.write_text(
        "customer_ref,email\nc1,one@example.org\nc2,two@example.org\n"
        'c3,"three@example.org\nc4,four@example.org\nc5,five@example.org\n'
    )
    result = _hash_cli(str(source), "-o", str(tmp_path / "out.csv"))
    assert result.exit_code == 1
    assert "line 4" in result.output
    assert "never closed" in result.output
    assert "incomplete" in result.output
    assert "Traceback" not in result.output
    assert "four@example.org" not in result.output  # no raw value in the message


@pytest.mark.parametrize("compressed", [False, True])
def test_undecodable_input_names_the_byte_offset(tmp_path: Path, compressed: bool) -> None:
    head = "customer_ref,email\n" + "".join(f"c{i},p{i}@example.org\n" for i in range(2000))
    body = head.encode() + b"cx,caf\xe9@example.org\n"
    offset = len(head.encode()) + len(b"cx,caf")
    source = tmp_path / ("people.csv.gz" if compressed else "people.csv")
    source.write_bytes(gzip.compress(body) if compressed else body)
    result = _hash_cli(str(source), "-o", str(tmp_path / "out.csv"))
    assert result.exit_code == 1
    assert f"offset {offset:,}" in result.output
    assert "0xe9" in result.output
    assert "not UTF-8" in result.output
