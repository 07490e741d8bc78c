"""`HubClient.upload(frame)` end to end against `hub hash` + curl of the same data (issue 17).

A live `hub serve` (SQLite under a temp dir, or PostgreSQL with --backend postgres) and one
synthetic customer file of --rows raw rows (bench/kit_hash_frame.py's generator: an email on
every row, a phone on 60 %, consents, a tier). Each case uploads the same people for a new
partner (so both create every record) and is timed from its start until the hub reports the
upload completed, polling the status every 0.5 s in both cases:

  client     HubClient(...).upload(frame): hash_frame, CSV + gzip level 1 to a temp file,
             POST with Idempotency-Key, wait -- the DataFrame is already in memory, as in a
             brand's notebook
  cli_curl   `hub hash raw.csv -o hashed.csv.gz --quiet` (the per-row kit, gzip as the
             command writes it), then `curl --data-binary @hashed.csv.gz` to
             /v1/identifiers/uploads, then the same polling

    .venv/bin/python bench/kit_upload.py [--rows 1000000] [--backend sqlite|postgres] [--repeat 1]

Goal: the client is no slower than `hub hash` + curl. Writes bench/results/kit_upload-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.auth_layer import free_port  # noqa: E402
from bench.bulk_upload import create_database, drop_database, hub  # noqa: E402
from bench.kit_hash_frame import customers  # noqa: E402
from partners.kit.client import HubClient  # noqa: E402

RESULTS = ROOT / "bench" / "results"
VENV_BIN = Path(sys.executable).parent
POLL = 0.5


class Hub:
    def __init__(self, backend: str) -> None:
        self.data_dir = Path(tempfile.mkdtemp(prefix="bench-kit-"))
        self.database_url = (
            create_database() if backend == "postgres" else f"sqlite:///{self.data_dir}/hub.db"
        )
        self.backend = backend
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
        self.env.update(
            HUB_DATABASE_URL=self.database_url,
            HUB_SERVER_DATA_DIR=str(self.data_dir),
            HUB_OAUTH_ISSUER=self.url,
            HUB_LOGGING_ACCESS_LOG="false",
        )
        hub(self.env, "db", "upgrade")
        self.admin = json.loads(hub(self.env, "admin", "bootstrap", "--json"))
        self.server = subprocess.Popen(
            [str(VENV_BIN / "hub"), "serve", "--port", str(port)],
            env=self.env,
            stdout=(self.data_dir / "server.log").open("w"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.url}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or self.server.poll() is not None:
                raise RuntimeError((self.data_dir / "server.log").read_text())
            time.sleep(0.1)

    def partner_client(self, name: str) -> dict[str, str]:
        with HubClient(
            self.url, self.admin["client_id"], self.admin["client_secret"], progress=False
        ) as admin:
            partner = admin.post("/v1/partners", {"name": name, "category": "airline"})
            return dict(
                admin.post(
                    f"/v1/partners/{partner['id']}/clients",
                    {"name": "bench", "scopes": ["identifiers:write"]},
                )
            )

    def stop(self) -> None:
        self.server.terminate()
        self.server.wait(timeout=30)
        if self.backend == "postgres":
            drop_database(self.database_url)
        shutil.rmtree(self.data_dir, ignore_errors=True)


def server_seconds(status: dict[str, Any]) -> float:
    """From the upload's creation (its body received) to its end, by the hub's clock: the
    part both cases share, which the shared machine's load makes vary most."""
    created = datetime.fromisoformat(status["created_at"])
    return (datetime.fromisoformat(status["finished_at"]) - created).total_seconds()


def by_client(hub_: Hub, frame: Any, creds: dict[str, str]) -> dict[str, Any]:
    started = time.perf_counter()
    with HubClient(hub_.url, creds["client_id"], creds["client_secret"], progress=False) as kit:
        done = kit.upload(frame)
    seconds = time.perf_counter() - started
    assert done.status == "completed", done.raw
    return {
        "seconds": seconds,
        "server_seconds": server_seconds(done.raw),
        "accepted": done.accepted,
    }


def by_cli_and_curl(hub_: Hub, raw: Path, creds: dict[str, str]) -> dict[str, Any]:
    hashed = raw.with_suffix(".hashed.csv.gz")
    started = time.perf_counter()
    subprocess.run(
        [str(VENV_BIN / "hub"), "hash", str(raw), "-o", str(hashed), "--quiet"],
        env=hub_.env,
        check=True,
    )
    hashed_at = time.perf_counter()
    token = httpx.post(
        f"{hub_.url}/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(creds["client_id"], creds["client_secret"]),
    ).json()["access_token"]
    sent = subprocess.run(
        [
            "curl",
            "-sS",
            "--fail-with-body",
            "-X",
            "POST",
            f"{hub_.url}/v1/identifiers/uploads?mode=upsert",
            "-H",
            f"Authorization: Bearer {token}",
            "-H",
            "Content-Type: text/csv",
            "-H",
            "Content-Encoding: gzip",
            "--data-binary",
            f"@{hashed}",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    upload_id = json.loads(sent.stdout)["id"]
    sent_at = time.perf_counter()
    while True:
        status = httpx.get(
            f"{hub_.url}/v1/identifiers/uploads/{upload_id}",
            headers={"Authorization": f"Bearer {token}"},
        ).json()
        if status["status"] in ("completed", "failed"):
            break
        time.sleep(POLL)
    seconds = time.perf_counter() - started
    assert status["status"] == "completed", status
    hashed.unlink()
    return {
        "seconds": seconds,
        "server_seconds": server_seconds(status),
        "hash_seconds": hashed_at - started,
        "send_seconds": sent_at - hashed_at,
        "accepted": status["accepted"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    frame = customers(args.rows)
    work = Path(tempfile.mkdtemp(prefix="bench-kit-data-"))
    raw = work / "raw.csv"
    frame.to_csv(raw, index=False)
    hub_ = Hub(args.backend)
    rounds: list[dict[str, Any]] = []
    try:
        for n in range(args.repeat):
            # Alternate which case goes first, so neither always meets a warmer database.
            order = ["cli_curl", "client"] if n % 2 == 0 else ["client", "cli_curl"]
            result: dict[str, Any] = {}
            for case in order:
                creds = hub_.partner_client(f"bench-{case}-{n}")
                if case == "client":
                    result[case] = by_client(hub_, frame, creds)
                else:
                    result[case] = by_cli_and_curl(hub_, raw, creds)
                took = result[case]
                print(
                    f"round {n + 1} {case:>9}: {took['seconds']:7.1f} s, of which the hub "
                    f"processing the upload {took['server_seconds']:7.1f} s",
                    flush=True,
                )
            rounds.append(result)
    finally:
        hub_.stop()
        shutil.rmtree(work, ignore_errors=True)
    best = {case: min(r[case]["seconds"] for r in rounds) for case in ("client", "cli_curl")}
    summary = {
        "rows": args.rows,
        "backend": args.backend,
        "rounds": rounds,
        "best_seconds": best,
        "client_over_cli_curl": best["client"] / best["cli_curl"],
    }
    print(
        f"client {best['client']:.1f} s, hub hash + curl {best['cli_curl']:.1f} s: the client "
        f"takes {summary['client_over_cli_curl']:.2f}x the time (goal <= 1)"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"kit_upload-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(summary, indent=2))
    return 0 if summary["client_over_cli_curl"] <= 1 else 1


if __name__ == "__main__":
    sys.exit(main())
