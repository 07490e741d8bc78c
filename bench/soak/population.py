"""The synthetic customers every brand holds, and the gzip NDJSON files they are uploaded in.

Person ``i`` has the same email digest at every brand (so brands overlap) and a brand's own
``customer_ref``. The first half of the population is *stable*: consented to every purpose at
every brand, never changed, never erased; the harness redeems only there, and the audit
expects every one of their events in every other brand's feed. The second half is *volatile*:
its ``rewards_sharing`` consent is switched off and on during the run (withdrawals reach the
feeds). People past the population appear only in the bulk uploads.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
from pathlib import Path

import msgspec

ALL = ["analytics", "joint_offers", "rewards_sharing"]
NO_SHARING = ["analytics", "joint_offers"]
TIERS = ("blue", "silver", "gold", "platinum")
CITIES = ("paris", "lyon", "berlin", "madrid", "rome", "lisbon")


def digest(i: int) -> str:
    """Person ``i``'s email digest as a brand sends it (base64 SHA-256, hashed on its side)."""
    raw = hashlib.sha256(f"soak{i}@example.org".encode()).digest()
    return base64.b64encode(raw).decode()


def churn_digest(brand: str, n: int) -> str:
    """A person enrolled and erased at one brand only (the erasure traffic)."""
    raw = hashlib.sha256(f"churn-{brand}-{n}@example.org".encode()).digest()
    return base64.b64encode(raw).decode()


def ref(brand: str, i: int) -> str:
    return f"{brand}-{i:08d}"


def is_stable(i: int, population: int) -> bool:
    return i < population // 2


def record(brand: str, i: int) -> dict[str, object]:
    return {
        "id_type": "email",
        "id_hash": digest(i),
        "customer_ref": ref(brand, i),
        "consents": ALL,
        "attributes": {"tier": TIERS[i % len(TIERS)], "city": CITIES[i % len(CITIES)]},
    }


def upload_file(directory: Path, brand: str, rows: int) -> Path:
    """gzip NDJSON of people 0..rows-1 at ``brand`` (written once, then reused)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"soak-{brand}-{rows}.ndjson.gz"
    if path.exists():
        return path
    encoder = msgspec.json.Encoder()
    partial = path.with_suffix(".part")
    with gzip.open(partial, "wb", compresslevel=3) as out:
        for start in range(0, rows, 10_000):
            lines = [
                encoder.encode(record(brand, i)) for i in range(start, min(rows, start + 10_000))
            ]
            out.write(b"\n".join(lines) + b"\n")
    partial.replace(path)
    return path
