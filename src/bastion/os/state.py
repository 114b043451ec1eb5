"""The OS's persistent state directory: TLS key, device certificate, status file.

Layout of the state directory (``DEV/os-state/`` under ``bastion device run``)::

    device-key.pem     the device TLS private key (P-256, PKCS#8), 0600, kept across boots
    device-cert.pem    the last device certificate issued by the service
    ca-chain.pem       the tenant CA chain that came with it
    state.json         status: last attestation, certificate expiry, runtime path
    os.log             the OS log (rotated, bounded)
    tuf/               TUF trust anchors and metadata per device group, and group.json
    updates.json       the update agent's memory (refused targets, pending OS, deferral)
    events.json        the queue of update and app events not yet reported
    staging/           downloaded images being verified; OS images for install_os
    apps/              app logs, <component_id>.log (rotated, bounded)
    app-data/          each app's own storage directory
    control.sock       the control socket (0600), e.g. for ``bastion device update-check``
    capability.cose    the device capability file (development mode), if one is installed

Every file is replaced atomically (temp file, fsync, rename).
"""

from __future__ import annotations

import json
import stat
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from bastion.crypto.errors import CryptoError
from bastion.crypto.keys import PrivateKey, generate_private_key, load_private_key_pem, private_key_pem
from bastion.hw.atomic import atomic_write_bytes
from bastion.images.fileio import FileTooLargeError, read_bounded
from bastion.os.errors import StateError

__all__ = ["MAX_STATE_BYTES", "OsState", "StateDir"]

#: Bound on state.json and on the PEM files we read back.
MAX_STATE_BYTES = 64 * 1024

KEY_FILE = "device-key.pem"
CERT_FILE = "device-cert.pem"
CA_CHAIN_FILE = "ca-chain.pem"
STATE_FILE = "state.json"
LOG_FILE = "os.log"
CAPABILITY_FILE = "capability.cose"


@dataclass
class OsState:
    """The status the OS publishes about itself (``state.json``).

    Times are ISO 8601 UTC strings; ``None`` means "not yet".
    """

    device_id: str | None = None
    os_version: str | None = None
    boot_slot: str | None = None
    runtime_path: str | None = None
    pid: int | None = None
    started_at: str | None = None
    last_attempt_at: str | None = None
    last_attestation_at: str | None = None
    last_result: str | None = None  # "ok" | "refused" | "error"
    last_reason: str | None = None  # service error code, or our own reason code
    last_detail: str | None = None
    consecutive_failures: int = 0
    tenant_id: str | None = None
    cert_not_before: str | None = None
    cert_not_after: str | None = None
    next_attestation_at: str | None = None
    group_id: str | None = None
    last_update_check_at: str | None = None
    last_update_result: str | None = None
    next_update_check_at: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Return the state as a JSON object."""
        return asdict(self)

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> OsState:
        """Build a state from JSON, ignoring unknown keys (newer OS versions may add some)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in value.items() if k in known})


def _read_bounded(path: Path) -> bytes:
    try:
        return read_bounded(path, MAX_STATE_BYTES)
    except OSError as exc:
        raise StateError(f"cannot read {path.name}") from exc
    except FileTooLargeError as exc:
        raise StateError(f"{path.name} is larger than {MAX_STATE_BYTES} bytes") from exc


class StateDir:
    """Typed access to the OS state directory.

    Args:
        path: the directory; created 0700 if missing.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(f"cannot create the state directory {path}") from exc

    @property
    def log_path(self) -> Path:
        """Where the OS log goes."""
        return self.path / LOG_FILE

    @property
    def tuf_dir(self) -> Path:
        """TUF trust anchors and metadata, per device group."""
        return self.path / "tuf"

    @property
    def staging_dir(self) -> Path:
        """Downloaded and staged images."""
        return self.path / "staging"

    @property
    def app_log_dir(self) -> Path:
        """App logs."""
        return self.path / "apps"

    @property
    def app_data_dir(self) -> Path:
        """Each app's own storage directory."""
        return self.path / "app-data"

    @property
    def events_path(self) -> Path:
        """The persistent event queue."""
        return self.path / "events.json"

    @property
    def capability_path(self) -> Path:
        """The installed device capability file (``bastion device enable-development``)."""
        return self.path / CAPABILITY_FILE

    @property
    def control_socket_path(self) -> Path:
        """The control socket."""
        return self.path / "control.sock"

    def _write(self, name: str, data: bytes, *, mode: int = 0o644) -> None:
        try:
            atomic_write_bytes(self.path / name, data, mode=mode)
        except OSError as exc:
            raise StateError(f"cannot write {name}") from exc

    def load_or_create_key(self) -> PrivateKey:
        """Return the device TLS key, creating it (0600) on first use.

        Raises:
            StateError: the key file is unreadable, malformed, or readable by others.
        """
        path = self.path / KEY_FILE
        if not path.exists():
            key = generate_private_key()
            self._write(KEY_FILE, private_key_pem(key), mode=0o600)
            return key
        if stat.S_IMODE(path.stat().st_mode) & 0o077:
            raise StateError(f"{path} is accessible by other users; expected mode 0600")
        try:
            return load_private_key_pem(_read_bounded(path))
        except CryptoError as exc:
            raise StateError(f"{KEY_FILE} does not hold a P-256 private key") from exc

    def save_credentials(self, cert_pem: bytes, ca_chain_pem: bytes) -> None:
        """Store a new device certificate and its CA chain (chain first, then the cert)."""
        self._write(CA_CHAIN_FILE, ca_chain_pem)
        self._write(CERT_FILE, cert_pem)

    def load_cert_pem(self) -> bytes | None:
        """Return the stored device certificate PEM, or None if there is none."""
        path = self.path / CERT_FILE
        return _read_bounded(path) if path.exists() else None

    def load_ca_chain_pem(self) -> bytes | None:
        """Return the stored tenant CA chain PEM, or None if the device has not attested yet."""
        path = self.path / CA_CHAIN_FILE
        return _read_bounded(path) if path.exists() else None

    def load_state(self) -> OsState:
        """Return the stored state, or a fresh one if there is none or it is unreadable."""
        path = self.path / STATE_FILE
        if not path.exists():
            return OsState()
        try:
            value = json.loads(_read_bounded(path))
        except (ValueError, StateError):
            return OsState()
        return OsState.from_json(value) if isinstance(value, dict) else OsState()

    def save_state(self, state: OsState) -> None:
        """Write ``state.json`` atomically."""
        self._write(STATE_FILE, json.dumps(state.to_json(), indent=2, sort_keys=True).encode() + b"\n")
