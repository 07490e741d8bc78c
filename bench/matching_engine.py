"""The matching engine's overlap against DuckDB joining the same 128-bit keys ("Matching engine").

Two sides of N people with one random 128-bit key each; a share (`--overlap`, default 30 %) of
B's keys are A's; each record carries the purpose with probability 0.8. Measured in the same
run, each case in its own subprocess so that its peak RSS is its own:

  engine        `engine.overlap` on presorted sides (sorting happens at ingest: reported, not
                timed); median of `--repeat` runs after one warm-up run (JIT, page faults)
  partitioned   `partitioned.match_partitioned(bits=4)` in process, same method
  duckdb        count(*) of the join on UHUGEINT keys with both consents carrying the purpose,
                tables already in DuckDB memory (loading not timed), 2 threads (the machine)

    .venv/bin/python bench/matching_engine.py [--rows 10000000] [--overlap 0.3] [--repeat 3]
    .venv/bin/python bench/matching_engine.py --scaling      # 1M and 10M, t(10M) / t(1M)

Targets: engine / duckdb <= 0.5, engine peak RSS < 2 GB at 10M x 10M, t(10M) / t(1M) <= 11.
Writes bench/results/matching_engine-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
ANALYTICS = 1
CASES = ("engine", "partitioned", "duckdb")

Columns = dict[str, NDArray[Any]]
# The 128-bit key as one UHUGEINT column, built from the two uint64 halves.
CREATE_A = "CREATE TABLE a AS SELECT (hi::UHUGEINT << 64) | lo::UHUGEINT AS k, consent FROM arrays"
CREATE_B = "CREATE TABLE b AS SELECT (hi::UHUGEINT << 64) | lo::UHUGEINT AS k, consent FROM arrays"


def generate(rows: int, overlap: float, seed: int = 7) -> tuple[Columns, Columns]:
    """Unsorted record columns of both sides (one key per person; person i is record i)."""
    rng = np.random.default_rng(seed)
    a = {
        "hi": rng.integers(0, 2**64, rows, dtype=np.uint64, endpoint=False),
        "lo": rng.integers(0, 2**64, rows, dtype=np.uint64, endpoint=False),
    }
    b = {
        "hi": rng.integers(0, 2**64, rows, dtype=np.uint64, endpoint=False),
        "lo": rng.integers(0, 2**64, rows, dtype=np.uint64, endpoint=False),
    }
    shared = int(rows * overlap)
    from_a = rng.choice(rows, shared, replace=False)
    into_b = rng.choice(rows, shared, replace=False)
    b["hi"][into_b] = a["hi"][from_a]
    b["lo"][into_b] = a["lo"][from_a]
    for side in (a, b):
        carries = rng.random(rows) < 0.8
        other = rng.integers(0, 4, rows, dtype=np.uint8) << np.uint8(1)  # other purposes
        side["consent"] = other | carries.astype(np.uint8)
    return a, b


def timed(run: Callable[[], int], repeat: int) -> tuple[float, int]:
    result = run()  # warm-up: JIT compile (or load from cache), first-touch page faults
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        again = run()
        times.append(time.perf_counter() - start)
        assert again == result
    return statistics.median(times), result


def measure_engine(rows: int, overlap: float, repeat: int, partitioned: bool) -> dict[str, Any]:
    from matching import engine
    from matching.partitioned import match_partitioned

    a_cols, b_cols = generate(rows, overlap)
    start = time.perf_counter()
    sides = [
        engine.make_side(c["hi"], c["lo"], np.arange(rows, dtype=np.int32), c["consent"], rows)
        for c in (a_cols, b_cols)
    ]
    sort_s = time.perf_counter() - start
    del a_cols, b_cols
    a, b = sides
    if partitioned:
        seconds, result = timed(lambda: match_partitioned(a, b, ANALYTICS, bits=4).count, repeat)
    else:
        seconds, result = timed(lambda: engine.overlap(a, b, ANALYTICS), repeat)
    return {"seconds": seconds, "result": result, "sort_seconds": sort_s}


def measure_duckdb(rows: int, overlap: float, repeat: int) -> dict[str, Any]:
    import duckdb

    a_cols, b_cols = generate(rows, overlap)
    con = duckdb.connect()
    con.execute("SET threads = 2")
    start = time.perf_counter()
    for table, columns in ((CREATE_A, a_cols), (CREATE_B, b_cols)):
        con.register("arrays", columns)
        con.execute(table)
        con.unregister("arrays")
    load_s = time.perf_counter() - start
    del a_cols, b_cols
    query = (
        "SELECT count(*) FROM a JOIN b ON a.k = b.k WHERE a.consent & 1 = 1 AND b.consent & 1 = 1"
    )

    def run() -> int:
        row = con.execute(query).fetchone()
        assert row is not None
        return int(row[0])

    seconds, result = timed(run, repeat)
    return {"seconds": seconds, "result": result, "load_seconds": load_s}


def measure(case: str, rows: int, overlap: float, repeat: int) -> dict[str, Any]:
    if case == "duckdb":
        found = measure_duckdb(rows, overlap, repeat)
    else:
        found = measure_engine(rows, overlap, repeat, partitioned=case == "partitioned")
    # ru_maxrss is in KiB on Linux: the peak of this process, data generation included.
    found["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"case": case, "rows": rows, **found}


def in_subprocess(case: str, rows: int, overlap: float, repeat: int) -> dict[str, Any]:
    command = [sys.executable, __file__, "--only", case, "--rows", str(rows)]
    command += ["--overlap", str(overlap), "--repeat", str(repeat)]
    output = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT)
    found: dict[str, Any] = json.loads(output.stdout.strip().splitlines()[-1])
    return found


def report(results: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| rows per side | case | median | result | peak RSS | not timed |",
        "|---:|---|---:|---:|---:|---|",
    ]
    for r in results:
        extra = (
            f"sort {r['sort_seconds']:.2f} s" if "sort_seconds" in r else
            f"load {r['load_seconds']:.2f} s"
        )  # fmt: skip
        lines.append(
            f"| {r['rows']:,} | {r['case']} | {r['seconds'] * 1000:.0f} ms | {r['result']:,}"
            f" | {r['peak_rss_mb']:.0f} MB | {extra} |"
        )
    by = {(r["rows"], r["case"]): r for r in results}
    for rows in sorted({r["rows"] for r in results}):
        engine_s, duck_s = by[rows, "engine"]["seconds"], by[rows, "duckdb"]["seconds"]
        assert by[rows, "engine"]["result"] == by[rows, "duckdb"]["result"], "results differ"
        lines.append(f"\n{rows:,} rows: engine / duckdb = {engine_s / duck_s:.2f} (target <= 0.5)")
    sizes = sorted({r["rows"] for r in results})
    if len(sizes) == 2:
        for case in CASES:
            ratio = by[sizes[1], case]["seconds"] / by[sizes[0], case]["seconds"]
            lines.append(f"{case}: t({sizes[1]:,}) / t({sizes[0]:,}) = {ratio:.1f}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--overlap", type=float, default=0.3)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--scaling", action="store_true", help="run 1M and 10M rows")
    parser.add_argument("--only", choices=CASES, help="measure one case in this process")
    args = parser.parse_args()
    if args.only:
        print(json.dumps(measure(args.only, args.rows, args.overlap, args.repeat)))
        return
    sizes = [1_000_000, 10_000_000] if args.scaling else [args.rows]
    results = []
    for rows in sizes:
        for case in CASES:
            results.append(in_subprocess(case, rows, args.overlap, args.repeat))
            print(json.dumps(results[-1]), flush=True)
    lines = report(results)
    print("\n".join(lines))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"matching_engine-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"args": vars(args), "results": results}, indent=2))


if __name__ == "__main__":
    main()
