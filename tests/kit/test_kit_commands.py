"""The kit's webhook check against the hub's own signer, and `hub hash` / `hubkit hash` on
Parquet and Excel files (the DataFrame path), with refused rows named by row, never by value."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from hub.cli import main as hub_main
from partners.kit import hash_identifier
from partners.kit.cli import main as hubkit_main
from partners.kit.frames import hash_frame
from partners.kit.webhooks import InvalidWebhook, verify_webhook
from partners.webhooks.signing import new_secret, signed_headers


def test_the_kit_verifies_what_the_hub_signs_and_nothing_else() -> None:
    secret = new_secret()
    body = json.dumps({"items": [{"kind": "earn", "points": 5}]})
    now = datetime.now(UTC)
    headers = signed_headers(secret, "msg_1", now, body)
    assert verify_webhook(secret, headers, body.encode()) == json.loads(body)
    upper = {k.upper(): v for k, v in headers.items()}  # header names in any case
    assert verify_webhook(secret, upper, body.encode()) == json.loads(body)
    with pytest.raises(InvalidWebhook, match="no signature"):
        verify_webhook(secret, headers, body.replace("5", "50").encode())
    with pytest.raises(InvalidWebhook, match="no signature"):
        verify_webhook(new_secret(), headers, body.encode())
    old = signed_headers(secret, "msg_1", now - timedelta(minutes=10), body)
    with pytest.raises(InvalidWebhook, match="tolerance"):
        verify_webhook(secret, old, body.encode())
    with pytest.raises(InvalidWebhook, match="headers"):
        verify_webhook(secret, {}, body.encode())


CUSTOMERS = pd.DataFrame(
    {
        "customer_ref": ["c1", "c2", "c3"],
        "email": [" Jane.Doe+x@GMAIL.com ", "broken", "b@example.org"],
        "phone": ["", "", "+14155552671"],
        "consents": ["analytics", "analytics", "analytics|joint_offers"],
        "attr.tier": ["gold", "silver", "gold"],
    }
)


@pytest.mark.parametrize("name", ["customers.parquet", "customers.xlsx"])
def test_hub_hash_reads_parquet_and_excel(tmp_path: Path, name: str) -> None:
    source = tmp_path / name
    if name.endswith(".parquet"):
        CUSTOMERS.to_parquet(source)
    else:
        CUSTOMERS.to_excel(source, index=False)
    output, errors = tmp_path / "hashed.csv", tmp_path / "refused.csv"
    result = CliRunner().invoke(
        hub_main, ["hash", str(source), "-o", str(output), "--errors", str(errors)]
    )
    assert result.exit_code == 1  # a row was refused
    assert "row 2: email: an email address needs an '@'" in result.output
    assert "broken" not in result.output
    written = pd.read_csv(output, dtype=str, keep_default_na=False)
    assert written.to_dict("records") == [
        {
            "id_type": "email",
            "id_hash": hash_identifier("email", "janedoe@gmail.com"),
            "customer_ref": "c1",
            "consents": "analytics",
            "attr.tier": "gold",
        },
        {
            "id_type": "email",
            "id_hash": hash_identifier("email", "b@example.org"),
            "customer_ref": "c3",
            "consents": "analytics|joint_offers",
            "attr.tier": "gold",
        },
        {
            "id_type": "phone",
            "id_hash": hash_identifier("phone", "+14155552671"),
            "customer_ref": "c3",
            "consents": "analytics|joint_offers",
            "attr.tier": "gold",
        },
    ]
    assert errors.read_text().splitlines() == [
        "row,field,reason",
        "2,email,an email address needs an '@'",
    ]


def test_hubkit_hash_writes_ndjson_from_parquet(tmp_path: Path) -> None:
    CUSTOMERS.to_parquet(tmp_path / "c.parquet")
    code = hubkit_main(
        [
            "hash",
            str(tmp_path / "c.parquet"),
            "-o",
            str(tmp_path / "out.ndjson"),
            "--quiet",
            "--allow-refused",
        ]
    )
    assert code == 0
    lines = [json.loads(line) for line in (tmp_path / "out.ndjson").read_text().splitlines()]
    expected = hash_frame(CUSTOMERS).records
    assert [line["id_hash"] for line in lines] == list(expected["id_hash"])
    assert lines[0] == {
        "id_type": "email",
        "id_hash": hash_identifier("email", "janedoe@gmail.com"),
        "customer_ref": "c1",
        "consents": ["analytics"],
        "attributes": {"tier": "gold"},
    }


def test_hubkit_upload_without_credentials_says_what_to_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("HUB_URL", "HUB_CLIENT_ID", "HUB_CLIENT_SECRET", "HUB_CLIENT_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    CUSTOMERS.to_csv(tmp_path / "c.csv", index=False)
    assert hubkit_main(["upload", str(tmp_path / "c.csv")]) == 1
    assert "set HUB_URL, HUB_CLIENT_ID, HUB_CLIENT_SECRET" in capsys.readouterr().err
