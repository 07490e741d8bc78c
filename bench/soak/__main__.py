"""``python -m bench.soak [--minutes N] [--smoke] [--preset full|reduced|smoke] [--set f=v]``

Exit code 0 when the run ends with no 5xx, every hub process alive and the consistency audit
passing; 1 otherwise. The report is printed and written as JSON (``--json``, default
bench/results/soak/soak-<preset>-<time>.json).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# Locust patches the standard library for gevent when imported: before httpx, psycopg and the
# rest of the harness are loaded.
import locust  # noqa: F401

from bench.soak.mix import PRESETS
from bench.soak.report import text
from bench.soak.run import Options, log, run, write


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=None, help="Length of the load (30).")
    parser.add_argument("--smoke", action="store_true", help="The smoke mix for 2 minutes.")
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None)
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="A PostgreSQL server where the run creates (and drops) its own database.",
    )
    parser.add_argument("--sample-seconds", type=float, default=None)
    parser.add_argument("--json", type=Path, default=None, help="Where to write the report.")
    parser.add_argument("--keep-db", action="store_true")
    parser.add_argument(
        "--hub-log-level",
        default="WARNING",
        help="The hub processes' log level (INFO: array builds, patches skipped...).",
    )
    args = parser.parse_args(argv)
    preset = args.preset or ("smoke" if args.smoke else "full")
    minutes = args.minutes if args.minutes is not None else (2.0 if args.smoke else 30.0)
    options = Options(
        minutes=minutes,
        preset=preset,
        mix=PRESETS[preset].with_overrides(args.set),
        pg_admin_url=args.pg_url,
        sample_seconds=args.sample_seconds or (20.0 if minutes < 5 else 15.0),
        keep_db=args.keep_db,
        hub_log_level=args.hub_log_level,
    )
    out = run(options)
    path = write(out, args.json)
    print(text(out))
    log(f"report: {path}")
    ok = out["audit"]["ok"] and out["status_5xx"] == 0 and out["processes_alive_throughout"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
