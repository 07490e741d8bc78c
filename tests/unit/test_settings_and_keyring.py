"""Settings loading and the keyring file, without a server."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from hub.core.keyring import KeyringError, load_keyring
from hub.settings import SettingsError, load_settings


def test_environment_overrides_files() -> None:
    settings = load_settings(
        {
            "HUB_DATABASE_URL": "postgresql://db/hub",
            "HUB_SERVER_PORT": "9001",
            "HUB_OAUTH_ACCESS_TOKEN_TTL_SECONDS": "60",
            "HUB_WEBHOOKS_ALLOW_LOOPBACK_HTTP": "true",
            "HUB_KEYRING": '{"format": 1}',
        }
    )
    assert settings.database_url == "postgresql://db/hub"
    assert settings.server.port == 9001
    assert settings.oauth.access_token_ttl_seconds == 60
    assert settings.webhooks.allow_loopback_http is True
    assert settings.keyring.inline == '{"format": 1}'


def test_the_embedded_default_is_sqlite_under_the_data_dir() -> None:
    settings = load_settings({"HUB_SERVER_DATA_DIR": "/srv/hub"})
    assert settings.database_url == "sqlite:////srv/hub/hub.db"
    assert settings.keyring_file == Path("/srv/hub/keyring.json")


def test_a_config_file_overlays_the_defaults(tmp_path: Path) -> None:
    extra = tmp_path / "site.toml"
    extra.write_text('[oauth]\nissuer = "https://hub.example"\n')
    settings = load_settings({"HUB_CONFIG": str(extra)})
    assert settings.oauth.issuer == "https://hub.example"
    assert settings.oauth.resource == "urn:coalition-hub:api"


@pytest.mark.parametrize(
    ("environ", "fragment"),
    [
        ({"HUB_SERVER_PORT": "eighty"}, "port"),
        ({"HUB_CONFIG": "/no/such/file.toml"}, "/no/such/file.toml"),
    ],
)
def test_bad_configuration_names_the_culprit(environ: dict[str, str], fragment: str) -> None:
    with pytest.raises(SettingsError, match=fragment):
        load_settings(environ)


def test_the_keyring_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "var" / "keyring.json"
    first = load_keyring(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    second = load_keyring(path)
    assert second.active_signing().kid == first.active_signing().kid
    data = json.loads(path.read_text())
    assert {"signing", "audit", "match", "data"} <= set(data)
    assert [p.name for p in path.parent.iterdir()] == ["keyring.json"]  # no temp files left


def test_a_missing_keyring_is_an_error_when_not_creating(tmp_path: Path) -> None:
    with pytest.raises(KeyringError, match="restore a backup"):
        load_keyring(tmp_path / "absent.json", create=False)


def test_rotation_keeps_old_keys_until_their_tokens_expire(tmp_path: Path) -> None:
    keyring = load_keyring(tmp_path / "k.json")
    old = keyring.active_signing().kid
    with keyring.editing():
        rotation = keyring.rotate_signing(grace_seconds=900)
    assert rotation.retired == [old]
    assert rotation.removed == []
    reloaded = load_keyring(tmp_path / "k.json", create=False)
    assert reloaded.active_signing().kid == rotation.new_kid != old
    kids = {k["kid"] for k in reloaded.public_jwks["keys"]}
    assert kids == {old, rotation.new_kid}
    assert all("d" not in k for k in reloaded.public_jwks["keys"])  # public parts only


def test_an_inline_keyring_wins_over_the_file(tmp_path: Path) -> None:
    file_ring = load_keyring(tmp_path / "k.json")
    inline = load_keyring(tmp_path / "other.json", inline=file_ring.to_json())
    assert inline.active_signing().kid == file_ring.active_signing().kid
    assert not (tmp_path / "other.json").exists()
    with pytest.raises(KeyringError):
        inline.save()
