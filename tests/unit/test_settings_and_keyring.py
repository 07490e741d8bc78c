"""Settings loading and the keyring file, without a server."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest

from hub.core.keyring import KeyringError, KeyringReadOnly, load_keyring
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


def test_two_writers_never_lose_each_others_versions(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    first = load_keyring(path)
    second = load_keyring(path, create=False)  # read before the first one's change
    with first.editing():
        first.add_data_key()
    with second.editing():  # re-reads the file under the lock before changing it
        second.add_audit_key()
    stored = load_keyring(path, create=False)
    assert stored.live_data_versions() == [2, 1]
    assert len(stored.data.audit) == 2


def test_a_change_is_a_new_file_renamed_over_the_old_one_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    keyring = load_keyring(path)
    os.chmod(path, 0o644)  # whatever the file was, the new one is private
    inode = os.stat(path).st_ino
    with keyring.editing():
        keyring.add_match_key()
    after = os.stat(path)
    assert after.st_ino != inode
    assert stat.S_IMODE(after.st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == [".k.json.lock", "k.json"]


def test_a_failed_change_leaves_the_file_and_the_keyring_as_they_were(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    keyring = load_keyring(path)
    content = path.read_bytes()

    def change_then_fail() -> None:
        with keyring.editing():
            keyring.add_data_key()
            raise RuntimeError("the audit entry could not be written")

    with pytest.raises(RuntimeError):
        change_then_fail()
    assert path.read_bytes() == content
    assert keyring.live_data_versions() == [1]


def test_an_inline_keyring_cannot_be_edited(tmp_path: Path) -> None:
    inline = load_keyring(tmp_path / "k.json", inline=load_keyring(tmp_path / "f.json").to_json())
    assert inline.writable_reason() is not None
    with pytest.raises(KeyringReadOnly, match="HUB_KEYRING"), inline.editing():
        pass


def test_a_retired_signing_key_leaves_the_jwks_after_the_grace(tmp_path: Path) -> None:
    keyring = load_keyring(tmp_path / "k.json")
    first = keyring.active_signing().kid
    second = keyring.rotate_signing(grace_seconds=60).new_kid
    keyring.data.signing[0].retired_at = int(time.time()) - 61  # retired a grace ago
    third = keyring.rotate_signing(grace_seconds=60)
    assert third.removed == [first]
    assert third.retired == [second]
    assert {k["kid"] for k in keyring.public_jwks["keys"]} == {second, third.new_kid}
    assert keyring.signer[0] == third.new_kid == keyring.active_signing().kid


def test_old_audit_heads_verify_after_a_new_audit_key(tmp_path: Path) -> None:
    from hub.core.audit import sign_head, verify_head_signature

    path = tmp_path / "k.json"
    keyring = load_keyring(path)
    old_head = sign_head(keyring, 3, "a" * 64)
    with keyring.editing():
        new_key = keyring.add_audit_key()
    reloaded = load_keyring(path, create=False)
    new_head = sign_head(reloaded, 4, "b" * 64)
    assert new_head.kid == new_key.kid != old_head.kid
    assert verify_head_signature(reloaded, old_head)
    assert verify_head_signature(reloaded, new_head)


def test_data_versions_are_added_and_retired(tmp_path: Path) -> None:
    keyring = load_keyring(tmp_path / "k.json")
    assert keyring.add_data_key() == 2
    assert keyring.data_version == 2
    assert keyring.retire_data_versions(below=2) == [1]
    assert keyring.live_data_versions() == [2]
    assert keyring.data_secret(1)  # a retired version still opens what it sealed


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"HUB_LIMITS_BURST": "-1"}, "HUB_LIMITS_BURST"),
        ({"HUB_UPLOADS_MAX_BYTES": "-5"}, "HUB_UPLOADS_MAX_BYTES"),
        ({"HUB_WEBHOOKS_TIMEOUT_SECONDS": "-0.5"}, "HUB_WEBHOOKS_TIMEOUT_SECONDS"),
        ({"HUB_SERVER_WORKERS": "0"}, "HUB_SERVER_WORKERS"),
        ({"HUB_SERVER_PORT": "70000"}, "HUB_SERVER_PORT"),
        ({"HUB_UPLOADS_REFUSED_LIMIT": "1.5"}, "HUB_UPLOADS_REFUSED_LIMIT"),
        ({"HUB_DATABASE_POOL_SIZE": "many"}, "HUB_DATABASE_POOL_SIZE"),
        ({"HUB_SERVER_FORWARDED_ALLOW_IPS": "10.0.0.1,proxy"}, "HUB_SERVER_FORWARDED_ALLOW_IPS"),
    ],
)
def test_a_bad_or_negative_value_is_refused_naming_its_variable(
    environ: dict[str, str], named: str
) -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings(environ)
    message = str(refused.value)
    assert message.startswith(named)
    assert "\n" not in message


def test_a_negative_limit_in_a_file_names_the_setting(tmp_path: Path) -> None:
    extra = tmp_path / "site.toml"
    extra.write_text("[limits]\nrequests_per_minute = -10\n")
    with pytest.raises(SettingsError, match=r"limits\.requests_per_minute = -10"):
        load_settings({"HUB_CONFIG": str(extra)})


def test_proxies_are_trusted_only_when_listed() -> None:
    assert load_settings({}).server.forwarded_allow_ips == []
    listed = load_settings({"HUB_SERVER_FORWARDED_ALLOW_IPS": "10.0.0.5, 10.1.0.0/16"})
    assert listed.server.forwarded_allow_ips == ["10.0.0.5", "10.1.0.0/16"]


@pytest.mark.parametrize(
    ("environ", "issuer"),
    [
        ({}, "http://127.0.0.1:8000"),
        ({"HUB_SERVER_PORT": "9001"}, "http://127.0.0.1:9001"),
        ({"HUB_SERVER_HOST": "::", "HUB_SERVER_PORT": "9002"}, "http://127.0.0.1:9002"),
        ({"HUB_SERVER_HOST": "::1", "HUB_SERVER_PORT": "9003"}, "http://[::1]:9003"),
        (
            {"HUB_SERVER_PORT": "9004", "HUB_OAUTH_ISSUER": "https://hub.example"},
            "https://hub.example",
        ),
    ],
)
def test_the_default_issuer_follows_the_address_served(
    environ: dict[str, str], issuer: str
) -> None:
    assert load_settings(environ).oauth.issuer == issuer
