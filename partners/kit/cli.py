"""``hubkit``: the kit's own command (argparse, so the kit needs no CLI framework).

    hubkit hash customers.parquet -o hashed.csv.gz
    hubkit upload customers.csv --mode replace --errors report.csv
    hubkit status 0193...

The same code as ``hub hash|upload|status`` (:mod:`partners.kit.commands`). Exit status 1 on
a failure, with one line on stderr saying what to do.
"""

from __future__ import annotations

import argparse
import sys

from rich.console import Console

from partners.kit.commands import CommandError, HashOptions, hash_file, show_status, upload_file
from partners.kit.files import CSV, NDJSON
from partners.kit.normalize import BASE64, HEX

__all__ = ["main"]


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="hubkit", description="The coalition hub's partner toolkit."
    )
    commands = root.add_subparsers(dest="command", required=True)

    hashing = commands.add_parser("hash", help="normalise and hash a customer file")
    hashing.add_argument("source", help="CSV, NDJSON, Parquet or Excel file ('-': stdin)")
    hashing.add_argument("-o", "--output", default="-", help="output file (.gz compresses)")
    hashing.add_argument("--input-format", choices=[CSV, NDJSON, "parquet", "excel"])
    hashing.add_argument("--output-format", choices=[CSV, NDJSON])
    hashing.add_argument("--encoding", choices=[BASE64, HEX], default=BASE64)
    hashing.add_argument("--errors", dest="errors_path", help="refused rows to this CSV file")
    hashing.add_argument("--quiet", action="store_true", help="no progress bar")
    hashing.add_argument("--allow-refused", action="store_true")

    sending = commands.add_parser("upload", help="send a customer file to the hub and wait")
    sending.add_argument("source", help="raw or hashed CSV/NDJSON (.gz), Parquet or Excel")
    sending.add_argument("--mode", choices=["upsert", "replace"], default="upsert")
    sending.add_argument("--no-wait", action="store_true")
    sending.add_argument("--errors", dest="errors_path", help="the error report to this CSV")
    sending.add_argument("--allow-refused", action="store_true")
    sending.add_argument("--quiet", action="store_true", help="no progress bar")

    status = commands.add_parser("status", help="an upload's status and error report")
    status.add_argument("upload_id")
    status.add_argument("--errors", dest="errors_path", help="the error report to this CSV")
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    console = Console(stderr=True)
    try:
        if args.command == "hash":
            hash_file(
                HashOptions(
                    args.source,
                    args.output,
                    args.input_format,
                    args.output_format,
                    args.encoding,
                    args.errors_path,
                    args.quiet,
                    args.allow_refused,
                ),
                console,
            )
        elif args.command == "upload":
            upload_file(
                args.source,
                console,
                mode=args.mode,
                wait=not args.no_wait,
                errors_path=args.errors_path,
                allow_refused=args.allow_refused,
                quiet=args.quiet,
            )
        else:
            show_status(args.upload_id, console, errors_path=args.errors_path)
    except CommandError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
