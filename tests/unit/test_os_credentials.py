"""DeviceCredentialsService: the device certificate and key, read by the OS alone."""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path

import pytest

from _tls_pki import device_state, new_ca
from bastion.crypto.certs import certificate_pem, make_ca
from bastion.crypto.keys import generate_private_key, private_key_pem
from bastion.os.credentials import DeviceCredentialsService
from bastion.os.errors import CredentialsError
from bastion.os.state import StateDir

TENANT = "7d0c3a52-1e9b-4f6a-8c2d-0b9e4f1a2c3d"


def test_current_credential(tmp_path: Path) -> None:
    state = device_state(tmp_path / "s", new_ca("tenant"), tenant_id=TENANT, device_id="ab" * 32)
    current = DeviceCredentialsService(state).current()
    assert (current.tenant_id, current.device_id, current.subject) == (TENANT, "ab" * 32, "ab" * 32)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    assert DeviceCredentialsService(state).load_into(context) == current


def test_time_is_a_parameter(tmp_path: Path) -> None:
    state = device_state(tmp_path / "s", new_ca("tenant"), tenant_id=TENANT)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    with pytest.raises(CredentialsError, match="expired"):
        DeviceCredentialsService(state, clock=lambda: later).current()
    earlier = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
    with pytest.raises(CredentialsError, match="not valid yet"):
        DeviceCredentialsService(state, clock=lambda: earlier).current()


def test_no_certificate_yet(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError, match="has not attested"):
        DeviceCredentialsService(StateDir(tmp_path / "fresh")).current()


def test_a_certificate_that_is_not_a_device_certificate(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "s")
    key = state.load_or_create_key()
    state.save_credentials(certificate_pem(make_ca("not a device", key, now=dt.datetime.now(dt.UTC))), b"")
    with pytest.raises(CredentialsError, match="subject alternative name"):
        DeviceCredentialsService(state).current()


def test_garbage_certificate(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "s")
    state.save_credentials(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", b"")
    with pytest.raises(CredentialsError, match="does not parse"):
        DeviceCredentialsService(state).current()


def test_key_must_be_private_and_match(tmp_path: Path) -> None:
    state = device_state(tmp_path / "s", new_ca("tenant"), tenant_id=TENANT)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    state.key_path.chmod(0o644)
    with pytest.raises(CredentialsError, match="accessible by other users"):
        DeviceCredentialsService(state).load_into(context)
    state.key_path.chmod(0o600)
    # A key that is not the certified one: OpenSSL refuses the pair; the error names no path or key.
    state.key_path.write_bytes(private_key_pem(generate_private_key()))
    with pytest.raises(CredentialsError, match="do not load as a pair") as info:
        DeviceCredentialsService(state).load_into(context)
    assert str(tmp_path) not in str(info.value)
    state.key_path.unlink()
    with pytest.raises(CredentialsError, match="cannot be read"):
        DeviceCredentialsService(state).load_into(context)
