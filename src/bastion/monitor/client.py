"""The OS-side client of the monitor API (``docs/monitor-api.md``): ``MonitorClient(sock).get_cert_chain()``."""

from __future__ import annotations

import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bastion.hw.errors import StateCorruptError
from bastion.hw.flash import BootEvent
from bastion.monitor import protocol as wire
from bastion.monitor.errors import MonitorProtocolError, MonitorRefusedError, MonitorUnavailableError

__all__ = ["DEFAULT_TIMEOUT_S", "BootEvent", "BootState", "ConfirmResult", "InstallResult", "MonitorClient"]

#: How long to wait for one response; signing takes milliseconds.
DEFAULT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class BootState:
    """The boot facts the monitor reports through ``read_counters``."""

    rollback_counters: dict[str, int]
    boot_slot: str
    os_version: str
    os_security_version: int
    trial: bool = False  # this boot runs a trial slot: confirm_boot it once healthy
    last_event: BootEvent | None = None  # a rollback to report, then ack_boot_event


@dataclass(frozen=True)
class InstallResult:
    """What ``install_os`` wrote: the slot now armed for a trial, and the image's versions."""

    slot: str
    version: str
    security_version: int


@dataclass(frozen=True)
class ConfirmResult:
    """What ``confirm_boot`` made of the trial: the new active slot and the ``os`` counter."""

    active_slot: str
    os_counter: int


def _typed(result: dict[str, Any], op: str, **kinds: type) -> None:
    for name, kind in kinds.items():
        if not isinstance(result.get(name), kind) or (kind is int and isinstance(result.get(name), bool)):
            raise MonitorProtocolError(f"{op} result has no valid {name!r}")


class MonitorClient:
    """Typed calls to the monitor over a connected stream socket.

    Calls are serialized with a lock, so one client may be shared by threads.

    Args:
        sock: the OS's end of the socketpair.
        timeout: seconds to wait for each response.
    """

    def __init__(self, sock: socket.socket, *, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self._sock = sock
        self._sock.settimeout(timeout)
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the connection; the monitor exits when its peer is gone."""
        self._sock.close()

    def request(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        """Send one request and return its ``result`` map.

        Raises:
            MonitorRefusedError: the monitor answered with an error.
            MonitorProtocolError: the response is malformed.
            MonitorUnavailableError: the connection failed, closed or timed out.
        """
        payload = wire.encode_message({"op": op, "args": args})
        with self._lock:
            wire.write_frame(self._sock, payload)
            answer = wire.read_frame(self._sock)
        if answer is None:
            raise MonitorUnavailableError("the monitor closed the connection")
        response = wire.decode_message(answer)
        if "error" in response:
            code, detail = response.get("error"), response.get("detail", "")
            if not isinstance(code, str) or not isinstance(detail, str):
                raise MonitorProtocolError("error response has the wrong shape")
            raise MonitorRefusedError(code, detail)
        result = response.get("result")
        if not isinstance(result, dict):
            raise MonitorProtocolError("response has neither result nor error")
        return result

    def sign_attestation(
        self,
        *,
        nonce: bytes,
        key_to_certify: bytes,
        installed_apps: Sequence[tuple[str, str]] = (),
        iat: int,
        capability: bytes | None = None,
    ) -> bytes:
        """Ask the monitor for an EAT over ``nonce`` that certifies ``key_to_certify``.

        Args:
            nonce: the service's challenge (8..64 bytes).
            key_to_certify: SEC1 uncompressed P-256 public key of the device TLS key.
            installed_apps: ``(component id, version)`` pairs.
            iat: issue time, seconds since the epoch.
            capability: the device capability file the OS runs under (the
                EAT's device capability claim), or None.

        Returns:
            The EAT (COSE_Sign1 bytes).
        """
        args: dict[str, Any] = {
            "nonce": nonce,
            "key_to_certify": key_to_certify,
            "installed_apps": [{"id": a, "version": v} for a, v in installed_apps],
            "iat": iat,
        }
        if capability is not None:
            args["capability"] = capability
        result = self.request(wire.OP_SIGN_ATTESTATION, args)
        token = result.get("eat")
        if not isinstance(token, bytes):
            raise MonitorProtocolError("sign_attestation result has no eat bytes")
        return token

    def get_cert_chain(self) -> tuple[bytes, bytes]:
        """Return the DER chain ``(Alias cert, DeviceID cert)``."""
        chain = self.request(wire.OP_GET_CERT_CHAIN, {}).get("chain")
        if not (isinstance(chain, list) and len(chain) == 2 and all(isinstance(c, bytes) for c in chain)):
            raise MonitorProtocolError("get_cert_chain result is not two DER certificates")
        return (chain[0], chain[1])

    def read_counters(self) -> BootState:
        """Return the rollback counters, boot slot and OS version of this boot."""
        result = self.request(wire.OP_READ_COUNTERS, {})
        counters, slot = result.get("counters"), result.get("boot_slot")
        version, svn = result.get("os_version"), result.get("os_security_version")
        if not (
            isinstance(counters, dict)
            and all(isinstance(k, str) and isinstance(v, int) for k, v in counters.items())
            and isinstance(slot, str)
            and isinstance(version, str)
            and isinstance(svn, int)
        ):
            raise MonitorProtocolError("read_counters result has the wrong shape")
        trial, raw_event = result.get("trial", False), result.get("last_event")
        try:
            event = None if raw_event is None else BootEvent.from_json(raw_event)
        except StateCorruptError as exc:
            raise MonitorProtocolError("read_counters last_event has the wrong shape") from exc
        if not isinstance(trial, bool):
            raise MonitorProtocolError("read_counters trial is not a bool")
        return BootState(counters, slot, version, svn, trial, event)

    def install_os(self, path: str) -> InstallResult:
        """Install the staged image at ``path`` (under ``DEV/os-state/staging``) and arm its trial.

        Raises:
            MonitorRefusedError: ``code`` is ``bad_path``, ``bad_state`` (a trial is
                armed or running) or ``image_refused`` (signature, rollback counter,
                not newer than the running OS).
        """
        result = self.request(wire.OP_INSTALL_OS, {"path": path})
        _typed(result, "install_os", slot=str, version=str, security_version=int)
        return InstallResult(result["slot"], result["version"], result["security_version"])

    def confirm_boot(self) -> ConfirmResult:
        """Confirm this trial boot: its slot becomes active, then the ``os`` counter is raised.

        Raises:
            MonitorRefusedError: ``code`` ``bad_state`` when this boot is not a trial.
        """
        result = self.request(wire.OP_CONFIRM_BOOT, {})
        _typed(result, "confirm_boot", active_slot=str, os_counter=int)
        return ConfirmResult(result["active_slot"], result["os_counter"])

    def fail_trial(self, *, at: int) -> bool:
        """Report that this trial boot failed its health check: the monitor rolls back now.

        Returns:
            Whether a rollback was recorded.
        """
        result = self.request(wire.OP_FAIL_TRIAL, {"at": at})
        _typed(result, wire.OP_FAIL_TRIAL, rolled_back=bool)
        return bool(result["rolled_back"])

    def ack_boot_event(self) -> None:
        """Clear the recorded boot event (after the OS has reported it)."""
        self.request(wire.OP_ACK_BOOT_EVENT, {})
