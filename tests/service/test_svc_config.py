"""Settings from the environment and the master key file."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest

from bastion.service.config import Settings, load_or_create_master_key
from bastion.service.errors import ConfigError


def test_defaults_create_home_and_master_key_0600(tmp_path: Path) -> None:
    home = tmp_path / "svc"
    settings = Settings.from_env({"BASTION_HOME": str(home)})
    key_file = home / "master.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.read_bytes() == settings.master_key
    assert len(settings.master_key) == 32
    assert settings.database_url == f"sqlite:///{home / 'service.db'}"
    assert settings.master_key.hex() not in repr(settings)
    # A second start reads the same key; no temp files are left behind.
    assert Settings.from_env({"BASTION_HOME": str(home)}).master_key == settings.master_key
    assert sorted(p.name for p in home.iterdir()) == ["master.key"]


def test_master_key_and_url_from_env(tmp_path: Path) -> None:
    key = bytes(range(32))
    settings = Settings.from_env(
        {
            "BASTION_HOME": str(tmp_path),
            "BASTION_MASTER_KEY": base64.b64encode(key).decode(),
            "BASTION_DATABASE_URL": "postgresql+psycopg://x@h/db",
        }
    )
    assert settings.master_key == key
    assert settings.database_url == "postgresql+psycopg://x@h/db"
    assert not (tmp_path / "master.key").exists()


@pytest.mark.parametrize("value", ["not base64!", base64.b64encode(b"short").decode()])
def test_bad_master_key_env_is_refused(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match="BASTION_MASTER_KEY"):
        Settings.from_env({"BASTION_HOME": str(tmp_path), "BASTION_MASTER_KEY": value})


def test_group_readable_master_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    load_or_create_master_key(path)
    path.chmod(0o640)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_or_create_master_key(path)


def test_wrong_size_master_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    path.write_bytes(b"x" * 33)
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="32 bytes"):
        load_or_create_master_key(path)


def test_download_credential_lifetime_is_a_setting_that_can_only_be_shorter(tmp_path: Path) -> None:
    from bastion.service.config import DOWNLOAD_CREDENTIAL_TTL_S
    from bastion.service.eligibility import CREDENTIAL_TTL

    assert CREDENTIAL_TTL.total_seconds() == DOWNLOAD_CREDENTIAL_TTL_S == 60  # the product default (docs/adr/0013)
    assert Settings.from_env({"BASTION_HOME": str(tmp_path)}).download_credential_ttl_s == 60
    env = {"BASTION_HOME": str(tmp_path), "BASTION_DOWNLOAD_CREDENTIAL_TTL": "20"}
    assert Settings.from_env(env).download_credential_ttl_s == 20
    for bad in ("0", "61", "3600", "-5", "20s", "1e3"):
        with pytest.raises(ConfigError, match="BASTION_DOWNLOAD_CREDENTIAL_TTL"):
            Settings.from_env({**env, "BASTION_DOWNLOAD_CREDENTIAL_TTL": bad})
    with pytest.raises(ConfigError, match="1 to 60"):
        Settings(home=tmp_path, database_url="sqlite://", master_key=bytes(32), download_credential_ttl_s=61)
