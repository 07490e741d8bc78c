"""Every reader of identifier records goes through the one current-records rule.

A bulk upload being applied writes rows readers must not see yet, and leaves retired rows
behind until it is tidied: a query that filters records by partner alone would count them.
This test reads the code: outside the modules that write records in every generation on
purpose, no query may select records by partner without ``current(...)``.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("hub", "partners", "matching")
# The modules that write every generation on purpose (see partners/identifiers/records.py):
# the rule itself, the apply and its generations, erasure and consent updates (which must
# reach an upload's rows too) and key rotation (which re-keys every row).
WRITERS = {
    "partners/identifiers/records.py",
    "partners/identifiers/service.py",
    "partners/identifiers/rotation.py",
    "partners/identifiers/uploads/apply.py",
    "partners/identifiers/uploads/generation.py",
}
BY_PARTNER = re.compile(r"RECORDS\.c\.partner_id\s*(==|\.in_\()")
RAW_SQL = re.compile(r"(FROM|JOIN|UPDATE)\s+identifier_records\b", re.IGNORECASE)


def modules() -> list[Path]:
    return [
        path
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if "migrations" not in path.parts
    ]


def test_readers_of_records_use_the_current_rule() -> None:
    offenders = []
    readers = 0
    for path in modules():
        name = path.relative_to(ROOT).as_posix()
        source = path.read_text()
        if name in WRITERS or "RECORDS" not in source:
            continue
        if "identifier" not in source.lower():
            continue
        readers += 1
        lines = source.splitlines()
        for number, line in enumerate(lines, start=1):
            # A partner filter is fine beside the rule itself (in the same where clause).
            near = "\n".join(lines[max(number - 4, 0) : number + 3])
            if RAW_SQL.search(line) or (BY_PARTNER.search(line) and "current(" not in near):
                offenders.append(f"{name}:{number}: {line.strip()}")
    assert readers >= 6, "the scan found too few readers: has the code moved?"
    assert not offenders, "records read without partners.identifiers.records.current:\n" + (
        "\n".join(offenders)
    )


def test_the_guard_catches_a_reader_by_partner_alone() -> None:
    assert BY_PARTNER.search("select(RECORDS.c.match_key).where(RECORDS.c.partner_id == p)")
    assert BY_PARTNER.search("RECORDS.c.partner_id.in_(sorted(partners))")
    assert RAW_SQL.search("SELECT count(*) FROM identifier_records WHERE partner_id = :p")
    assert not BY_PARTNER.search("select(RECORDS.c.match_key).where(current(RECORDS, p))")


# A lookup of records by match key goes through ``with_keys``, which names the id type too:
# the records' key is (partner, id type, match key, generation), and without the id type
# PostgreSQL cannot seek in it and reads every record instead (issue 19's soak: the rewards
# events' lookup of their members' records was the database's top CPU cost).
BY_KEY = re.compile(r"RECORDS\.c\.match_key\.in_\(")
# Deliberate: this delete reads every row of the pending generation anyway (it runs only when
# an erasure came in while the upload was applied) and its keys are a subquery.
BY_KEY_ALLOWED = {("partners/identifiers/uploads/generation.py", "RECORDS.c.match_key.in_(keys)")}


def test_lookups_of_records_by_match_key_name_the_id_type() -> None:
    offenders = []
    lookups = 0
    for path in modules():
        name = path.relative_to(ROOT).as_posix()
        source = path.read_text()
        lookups += source.count("with_keys(RECORDS")
        for number, line in enumerate(source.splitlines(), start=1):
            allowed = any(name == n and text in line for n, text in BY_KEY_ALLOWED)
            if BY_KEY.search(line) and not allowed:
                offenders.append(f"{name}:{number}: {line.strip()}")
    assert not offenders, (
        "records looked up by match key without the id type "
        "(use partners.identifiers.records.with_keys):\n" + "\n".join(offenders)
    )
    assert lookups >= 4, "the scan found too few lookups by key: has the code moved?"
