"""`hub hash` throughput against a bare hashlib loop (identifier issue, benchmark 3).

Generates a synthetic customer CSV (customer_ref, email, phone, consents, attr.tier; each row
has an email and 60 % have a phone), then measures, on the same file in the same run:

  floor     a bare loop: csv.reader over the file, lower-case + strip the email, SHA-256 of
            email and phone, base64 -- no validation, no output
  kit       `hub hash FILE -o OUT --quiet` through the real CLI (subprocess), UID2 rules,
            validation, CSV output

    .venv/bin/python bench/hash_kit.py [--rows 10000000] [--keep]

Prints rows/s for both and the ratio; writes bench/results/hash_kit-<time>.json.
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DOMAINS = ["gmail.com", "example.org", "mail.example", "hotel.example", "Yahoo.com"]


def generate(path: Path, rows: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["customer_ref", "email", "phone", "consents", "attr.tier"])
        for i in range(rows):
            local = f"First.Last{i}+{rng.randrange(100)}" if i % 3 == 0 else f"user{i}"
            email = f" {local}@{DOMAINS[i % len(DOMAINS)]} "
            phone = f"+1{rng.randrange(10**9, 10**10)}" if rng.random() < 0.6 else ""
            tier = ("gold", "silver", "blue")[i % 3]
            writer.writerow([f"c{i}", email, phone, "analytics|joint_offers", tier])


def floor(path: Path) -> float:
    t0 = time.perf_counter()
    n = 0
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        next(reader)
        for row in reader:
            base64.b64encode(hashlib.sha256(row[1].strip().lower().encode()).digest())
            if row[2]:
                base64.b64encode(hashlib.sha256(row[2].encode()).digest())
            n += 1
    return time.perf_counter() - t0


def kit(path: Path, out: Path) -> tuple[float, str]:
    t0 = time.perf_counter()
    done = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "hub"), "hash", str(path), "-o", str(out), "--quiet"],
        capture_output=True,
        text=True,
        check=True,
    )
    return time.perf_counter() - t0, done.stderr.strip().splitlines()[-1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rows", type=int, default=10_000_000)
    p.add_argument("--keep", action="store_true", help="keep the generated files")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-hash-"))
    source, output = work / "customers.csv", work / "hashed.csv"
    t0 = time.perf_counter()
    generate(source, args.rows)
    print(f"generated {args.rows:,} rows in {time.perf_counter() - t0:.1f} s ({source})")
    floor_s = floor(source)
    kit_s, summary = kit(source, output)
    result = {
        "rows": args.rows,
        "floor_seconds": round(floor_s, 2),
        "floor_rows_per_s": round(args.rows / floor_s),
        "kit_seconds": round(kit_s, 2),
        "kit_rows_per_s": round(args.rows / kit_s),
        "kit_vs_floor": round(floor_s / kit_s, 3),
        "kit_summary": summary,
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
    }
    print(json.dumps(result, indent=2))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"hash_kit-{time.strftime('%Y%m%dT%H%M%S')}.json").write_text(json.dumps(result))
    if not args.keep:
        source.unlink()
        output.unlink()
        work.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
