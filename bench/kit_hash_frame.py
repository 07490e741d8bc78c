"""`hash_frame` on a DataFrame against the kit's per-row path and a bare hashlib loop (issue 17).

One synthetic customer frame (customer_ref, email, phone on 60 % of rows, consents,
attr.tier; a third of the emails need UID2 work: gmail dots and +tags, upper case, spaces),
then, in the same process and run, each case on the same data:

  hash_frame   partners.kit.frames.hash_frame(frame): the records and the refused frames
  per_row      the kit's own per-identifier path with the same row checks, in a loop over the
               rows: files.parse_person(row) (reference, contact detector, consents,
               attributes) then hash_identifier(id_type, raw) for each identifier -- what
               `hub hash` runs per row, without its CSV reading and writing
  bare         a bare hashlib loop: strip + lower the email, SHA-256 and base64 of the email
               and the phone -- no UID2 rules, no checks, nothing kept

    .venv/bin/python bench/kit_hash_frame.py [--rows 1000000] [--repeat 3]

Each case runs --repeat times; the best time counts (the machine is shared). Prints rows/s,
hash_frame's speed-up over per_row (goal: at least 3x) and its ratio to bare; writes
bench/results/kit_hash_frame-<time>.json.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from partners.kit import hash_identifier  # noqa: E402
from partners.kit.files import InvalidRow, parse_person  # noqa: E402
from partners.kit.frames import hash_frame  # noqa: E402
from partners.kit.normalize import InvalidIdentifier  # noqa: E402

RESULTS = ROOT / "bench" / "results"
DOMAINS = ["gmail.com", "example.org", "mail.example", "hotel.example", "Yahoo.com"]


def customers(rows: int, seed: int = 7) -> pd.DataFrame:
    rng = random.Random(seed)
    emails, phones = [], []
    for i in range(rows):
        local = f"First.Last{i}+{rng.randrange(100)}" if i % 3 == 0 else f"user{i}"
        emails.append(f" {local}@{DOMAINS[i % len(DOMAINS)]} ")
        phones.append(f"+1{rng.randrange(10**9, 10**10)}" if rng.random() < 0.6 else "")
    return pd.DataFrame(
        {
            "customer_ref": [f"C-{i:09d}" for i in range(rows)],
            "email": emails,
            "phone": phones,
            "consents": "analytics|joint_offers",
            "attr.tier": [("gold", "silver", "blue")[i % 3] for i in range(rows)],
        }
    )


def per_row(rows: list[dict[str, Any]]) -> int:
    written = 0
    for row in rows:
        try:
            person = parse_person(row)
            for id_type, raw in person.identifiers:
                try:
                    hash_identifier(id_type, raw)
                except InvalidIdentifier as exc:
                    raise InvalidRow(id_type, exc.reason) from None
                written += 1
        except InvalidRow:
            continue
    return written


def bare(emails: list[str], phones: list[str]) -> int:
    written = 0
    for email, phone in zip(emails, phones, strict=True):
        base64.b64encode(hashlib.sha256(email.strip().lower().encode()).digest())
        written += 1
        if phone:
            base64.b64encode(hashlib.sha256(phone.encode()).digest())
            written += 1
    return written


def best(repeat: int, run: Any) -> tuple[float, float, Any]:
    """The best wall-clock and the best CPU time (all threads of the process) of ``repeat``
    runs, and the result. CPU time is the steadier measure on a shared machine."""
    walls, cpus, result = [], [], None
    for _ in range(repeat):
        started, cpu = time.perf_counter(), time.process_time()
        result = run()
        walls.append(time.perf_counter() - started)
        cpus.append(time.process_time() - cpu)
    return min(walls), min(cpus), result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    frame = customers(args.rows)
    rows = frame.to_dict("records")
    emails, phones = frame["email"].tolist(), frame["phone"].tolist()
    hash_frame(frame.head(100))  # imports and first-call set-up, not measured

    t_frame, c_frame, (records, refused) = best(args.repeat, lambda: hash_frame(frame))
    t_row, c_row, written = best(args.repeat, lambda: per_row(rows))
    t_bare, c_bare, bare_written = best(args.repeat, lambda: bare(emails, phones))
    assert len(records) == written == bare_written, (len(records), written, bare_written)
    assert refused.empty

    result = {
        "rows": args.rows,
        "records": len(records),
        "repeat": args.repeat,
        "seconds": {"hash_frame": t_frame, "per_row": t_row, "bare": t_bare},
        "cpu_seconds": {"hash_frame": c_frame, "per_row": c_row, "bare": c_bare},
        "cpu_speedup_over_per_row": c_row / c_frame,
        "cpu_ratio_to_bare": c_frame / c_bare,
        "rows_per_second": {
            "hash_frame": args.rows / t_frame,
            "per_row": args.rows / t_row,
            "bare": args.rows / t_bare,
        },
        "speedup_over_per_row": t_row / t_frame,
        "ratio_to_bare": t_frame / t_bare,
    }
    for case, seconds in result["seconds"].items():
        cpu = result["cpu_seconds"][case]
        print(
            f"{case:>10}: {seconds:7.2f} s wall {cpu:7.2f} s CPU "
            f"{args.rows / seconds:>12,.0f} rows/s"
        )
    print(
        f"hash_frame is {result['speedup_over_per_row']:.1f}x the per-row path by wall clock, "
        f"{result['cpu_speedup_over_per_row']:.1f}x by CPU (goal >= 3x); it takes "
        f"{result['ratio_to_bare']:.2f}x (CPU {result['cpu_ratio_to_bare']:.2f}x) the bare "
        "hashlib loop"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"kit_hash_frame-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2))
    return 0 if result["speedup_over_per_row"] >= 3 else 1


if __name__ == "__main__":
    sys.exit(main())
