"""Development mode on the device: the installed capability file, verified whenever it is used.

``bastion device enable-development`` installs a capability file
(:mod:`bastion.images.capability`) into the OS state directory
(``DEV/os-state/capability.cose``; the OS never writes the config or flash
partitions). The OS checks the file when it starts, when it is installed, and
every time a local operation or an attestation relies on it:

1. it is signed by a key of the tenant CA chain the device stored at its last
   attestation (``ca-chain.pem``), so only the tenant's service can make one;
2. it names this device's ID and the tenant that claimed the device;
3. it has not expired.

A file that fails (expired, revoked by the service, for another device) is
removed and the removal recorded; a device that has not attested yet has no CA
chain, so it cannot verify any capability and stays out of development mode.

Example:
    >>> dev = DevelopmentMode(StateDir(path), device_id=device_id)  # doctest: +SKIP
    >>> dev.install(data, now=now).kind                              # doctest: +SKIP
    <CapabilityKind.APP_DEVELOPMENT: 'appDevelopment'>
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from bastion.crypto.certs import load_certificate_pem
from bastion.crypto.errors import CryptoError
from bastion.crypto.keys import PublicKey
from bastion.hw.atomic import atomic_write_bytes
from bastion.images.capability import (
    DEFAULT_CAPABILITY_LIMITS,
    Capability,
    CapabilityKind,
    CapabilityLimits,
    decode_capability,
    verify_capability,
)
from bastion.images.errors import CapabilityError
from bastion.images.fileio import FileTooLargeError, read_bounded
from bastion.os.errors import LocalApiRefusedError, StateError
from bastion.os.state import StateDir
from bastion.os.updates.events import EventQueue

__all__ = ["MAX_CA_CERTS", "DevelopmentMode", "TenantTrust", "tenant_trust"]

#: Bound on the certificates read from the stored tenant CA chain.
MAX_CA_CERTS = 4
_PEM_END = b"-----END CERTIFICATE-----"

_log = logging.getLogger("bastion.os.devmode")


@dataclass(frozen=True)
class TenantTrust:
    """What a capability is checked against: the device's tenant and its CA keys."""

    tenant_id: str
    keys: tuple[PublicKey, ...]


def tenant_trust(state_dir: StateDir) -> TenantTrust:
    """The tenant and CA keys from the device's last attestation.

    Raises:
        LocalApiRefusedError: (``not_attested``) the device has not attested yet,
            or the stored chain is unreadable.
    """
    hint = "let the device attest once (`bastion device run`) so that it knows its tenant's CA"
    try:
        pem = state_dir.load_ca_chain_pem()
    except StateError as exc:
        raise LocalApiRefusedError("not_attested", f"the stored tenant CA chain is unreadable: {exc}") from exc
    tenant_id = state_dir.load_state().tenant_id
    if pem is None or not tenant_id:
        raise LocalApiRefusedError("not_attested", f"the device has no tenant CA chain yet; {hint}")
    keys: list[PublicKey] = []
    blocks = [b + _PEM_END for b in pem.split(_PEM_END) if b.strip()]
    for block in blocks[:MAX_CA_CERTS]:
        try:
            key = load_certificate_pem(block.strip() + b"\n").public_key()
        except CryptoError as exc:
            raise LocalApiRefusedError("not_attested", "the stored tenant CA chain does not parse") from exc
        if isinstance(key, PublicKey):
            keys.append(key)
    if not keys:
        raise LocalApiRefusedError("not_attested", f"the stored tenant CA chain holds no P-256 key; {hint}")
    return TenantTrust(tenant_id=tenant_id, keys=tuple(keys))


def describe(capability: Capability) -> dict[str, Any]:
    """The JSON summary of a capability (CLI, control socket)."""
    return {
        "capability_id": capability.capability_id,
        "kind": capability.kind.value,
        "device_id": capability.device_id,
        "tenant_id": capability.tenant_id,
        "developer_key_ids": list(capability.developer_key_ids),
        "issued_at": capability.issued().isoformat(),
        "expires_at": capability.expires().isoformat(),
    }


class DevelopmentMode:
    """The device's capability file: install, check, remove.

    Args:
        state_dir: the OS state directory.
        device_id: this device's ID (from the monitor's DeviceID certificate).
        events: where ``development_enabled`` / ``development_disabled`` go (None: not recorded).
        limits: the capability format's bounds.
    """

    def __init__(
        self,
        state_dir: StateDir,
        *,
        device_id: str,
        events: EventQueue | None = None,
        limits: CapabilityLimits = DEFAULT_CAPABILITY_LIMITS,
    ) -> None:
        self._dir = state_dir
        self.device_id = device_id
        self._events = events
        self._limits = limits

    @property
    def path(self) -> str:
        """Where the capability file is kept."""
        return str(self._dir.capability_path)

    def _record(self, now: dt.datetime, kind: str, capability: Capability | None, detail: str) -> None:
        if self._events is None:
            return
        self._events.record(
            at=int(now.timestamp()),
            kind=kind,
            component_id=capability.capability_id if capability else "",
            version=capability.kind.value if capability else "",
            detail=detail,
        )

    def verify(self, data: bytes, *, now: dt.datetime) -> Capability:
        """Check a capability file for this device at ``now`` (see the module docstring).

        Raises:
            LocalApiRefusedError: ``not_attested``, or ``capability`` with the
                failed check in the message.
        """
        trust = tenant_trust(self._dir)
        try:
            return verify_capability(
                data,
                trusted_keys=trust.keys,
                device_id=self.device_id,
                tenant_id=trust.tenant_id,
                now=now,
                limits=self._limits,
            )
        except CapabilityError as exc:
            raise LocalApiRefusedError("capability", f"{exc} ({exc.reason})") from exc

    def install(self, data: bytes, *, now: dt.datetime) -> Capability:
        """Verify ``data`` and make it the device's capability (replacing any other); record it.

        Raises:
            LocalApiRefusedError: it does not verify (nothing is written).
            StateError: the state directory cannot be written.
        """
        capability = self.verify(data, now=now)
        try:
            atomic_write_bytes(self._dir.capability_path, data, mode=0o600)
        except OSError as exc:
            raise StateError(f"cannot write the capability file: {exc.strerror or exc}") from exc
        self._record(now, "development_enabled", capability, f"expires {capability.expires().isoformat()}")
        _log.warning(
            "%s capability %s installed (expires %s)",
            capability.kind.value,
            capability.capability_id,
            capability.expires().isoformat(),
        )
        return capability

    def _read(self) -> bytes | None:
        try:
            return read_bounded(self._dir.capability_path, self._limits.max_bytes)
        except FileNotFoundError:
            return None
        except (OSError, FileTooLargeError):
            return b""  # present but unusable: fails verification as malformed

    def current(self, *, now: dt.datetime) -> Capability | None:
        """The installed capability if it verifies now; a file that no longer does is removed.

        A device that cannot check (no CA chain yet) keeps the file but is not
        in development mode.
        """
        data = self._read()
        if data is None:
            return None
        try:
            return self.verify(data, now=now)
        except LocalApiRefusedError as exc:
            if exc.reason == "capability":
                self.disable(now=now, why=f"the installed capability no longer verifies: {exc}")
            else:
                _log.warning("the installed capability cannot be checked: %s", exc)
            return None

    def require(self, *, now: dt.datetime, what: str) -> Capability:
        """The current capability, or the refusal of ``what``.

        Raises:
            LocalApiRefusedError: (``no_capability``) none is installed and valid.
        """
        capability = self.current(now=now)
        if capability is None:
            raise LocalApiRefusedError(
                "no_capability",
                f"{what} needs a device capability; install one with `bastion device enable-development`",
            )
        return capability

    def development(self, *, now: dt.datetime) -> bool:
        """Whether the device is in development mode (a valid appDevelopment capability)."""
        capability = self.current(now=now)
        return capability is not None and capability.kind is CapabilityKind.APP_DEVELOPMENT

    def evidence(self, *, now: dt.datetime) -> bytes | None:
        """The capability file for the attestation evidence, if one is valid now."""
        capability = self.current(now=now)
        return capability.encoded if capability is not None else None

    def disable(self, *, now: dt.datetime, why: str = "disabled on the device") -> bool:
        """Remove the capability file; record it. Returns whether there was one."""
        data = self._read()
        if data is None:
            return False
        try:
            capability: Capability | None = decode_capability(data, limits=self._limits)  # to name it only
        except CapabilityError:
            capability = None
        try:
            self._dir.capability_path.unlink(missing_ok=True)
        except OSError as exc:
            raise StateError(f"cannot remove the capability file: {exc.strerror or exc}") from exc
        self._record(now, "development_disabled", capability, why)
        _log.warning("development mode off: %s", why)
        return True

    def status(self, *, now: dt.datetime) -> dict[str, Any] | None:
        """The JSON summary of the current capability, or None."""
        capability = self.current(now=now)
        return describe(capability) if capability is not None else None
