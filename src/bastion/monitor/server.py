"""The monitor's request handler and serve loop.

:class:`MonitorServer` holds the Alias key and the boot claims. It answers the
operations of ``docs/monitor-api.md`` (attestation, the A/B OS update ops whose
logic lives in :mod:`bastion.boot.slots`) and refuses everything else with an
error response; a bad request never stops the loop. The claims that describe the device (UEID, measurements,
secboot, dbgstat, software version, boot slot, counters) come from the boot
stage, so a compromised OS cannot lie about them: it chooses only the nonce,
the key to certify, the installed apps, the issue time and the device capability
it runs under.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bastion.boot.errors import FlashImageError, SlotStateError, StagingPathError
from bastion.boot.slots import (
    OS_COUNTER,
    Checkpoint,
    RunningOs,
    ack_boot_event,
    confirm_trial,
    fail_trial,
    open_staged_image,
)
from bastion.boot.slots import install_os as install_slot
from bastion.crypto.eat import MAX_CAPABILITY_BYTES, MAX_INSTALLED_APPS, EatClaims, InstalledApp, sign_eat
from bastion.crypto.errors import CryptoError
from bastion.crypto.keys import load_public_key_bytes
from bastion.hw.chip import Chip
from bastion.hw.flash import Slot
from bastion.monitor import protocol as wire
from bastion.monitor.errors import FrameTooLargeError, MonitorError, MonitorProtocolError
from bastion.monitor.identity import MonitorIdentity

__all__ = ["MAX_APP_FIELD_CHARS", "MAX_NONCE_BYTES", "MAX_PATH_CHARS", "MIN_NONCE_BYTES", "SWNAME", "MonitorServer"]

#: The software name the monitor puts in every EAT.
SWNAME = "bastion-os"
#: RFC 9711 4.1: eat_nonce is 8 to 64 bytes.
MIN_NONCE_BYTES = 8
MAX_NONCE_BYTES = 64
#: Bound on an installed app's id and version strings.
MAX_APP_FIELD_CHARS = 128
#: Bound on the staged image path of install_os.
MAX_PATH_CHARS = 4096
#: iat must be a plausible POSIX time: not negative and below 2^40 s.
_MAX_IAT = 1 << 40

_log = logging.getLogger("bastion.monitor")
#: Error codes of the A/B refusals (other FlashImageErrors are ERR_IMAGE_REFUSED).
_REFUSALS: dict[type[Exception], str] = {SlotStateError: wire.ERR_BAD_STATE, StagingPathError: wire.ERR_BAD_PATH}


class _BadArgsError(Exception):
    """Arguments of the wrong type or outside their bounds (internal to the handler)."""


def _arg(args: dict[str, Any], name: str, kind: type) -> Any:
    value = args.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _BadArgsError(f"argument {name!r} must be a {kind.__name__}")
    return value


def _parse_apps(raw: list[Any]) -> tuple[InstalledApp, ...]:
    if len(raw) > MAX_INSTALLED_APPS:
        raise _BadArgsError(f"at most {MAX_INSTALLED_APPS} installed apps")
    apps = []
    for item in raw:
        if not isinstance(item, dict) or set(item) != {"id", "version"}:
            raise _BadArgsError('each installed app must be {"id": tstr, "version": tstr}')
        app_id, version = item["id"], item["version"]
        if not (isinstance(app_id, str) and isinstance(version, str)):
            raise _BadArgsError("installed app id and version must be text")
        if not (0 < len(app_id) <= MAX_APP_FIELD_CHARS and 0 < len(version) <= MAX_APP_FIELD_CHARS):
            raise _BadArgsError(f"installed app id and version must be 1..{MAX_APP_FIELD_CHARS} chars")
        apps.append(InstalledApp(component_id=app_id, version=version))
    return tuple(apps)


class MonitorServer:
    """Answers monitor requests for one boot's identity.

    Args:
        identity: the key, chain and claims handed over by the boot stage.
        checkpoint: called after each durable write of an update (tests cut power there).
    """

    def __init__(self, identity: MonitorIdentity, *, checkpoint: Checkpoint | None = None) -> None:
        self._identity = identity
        self._ueid = identity.ueid
        self._counters = dict(identity.rollback_counters)  # raised by confirm_boot
        self._trial = identity.trial  # cleared by confirm_boot
        self._checkpoint: Checkpoint = checkpoint or (lambda step: None)
        self._ops: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            wire.OP_SIGN_ATTESTATION: self._sign_attestation,
            wire.OP_GET_CERT_CHAIN: self._get_cert_chain,
            wire.OP_READ_COUNTERS: self._read_counters,
            wire.OP_INSTALL_OS: self._install_os,
            wire.OP_CONFIRM_BOOT: self._confirm_boot,
            wire.OP_ACK_BOOT_EVENT: self._ack_boot_event,
            wire.OP_FAIL_TRIAL: self._fail_trial,
        }

    def _sign_attestation(self, args: dict[str, Any]) -> dict[str, Any]:
        if set(args) - {"capability"} != {"nonce", "key_to_certify", "installed_apps", "iat"}:
            raise _BadArgsError("sign_attestation takes nonce, key_to_certify, installed_apps, iat [, capability]")
        nonce = _arg(args, "nonce", bytes)
        if not MIN_NONCE_BYTES <= len(nonce) <= MAX_NONCE_BYTES:
            raise _BadArgsError(f"nonce must be {MIN_NONCE_BYTES}..{MAX_NONCE_BYTES} bytes")
        key_to_certify = _arg(args, "key_to_certify", bytes)
        try:
            load_public_key_bytes(key_to_certify)
        except CryptoError as exc:
            raise _BadArgsError("key_to_certify is not an uncompressed P-256 point") from exc
        iat = _arg(args, "iat", int)
        if not 0 <= iat < _MAX_IAT:
            raise _BadArgsError("iat is out of range")
        apps = _parse_apps(_arg(args, "installed_apps", list))
        capability = None
        if "capability" in args:
            # Carried, not judged: the service verifies the capability's own signature
            # and device binding (docs/compartments.md, "Development mode").
            capability = _arg(args, "capability", bytes)
            if not 0 < len(capability) <= MAX_CAPABILITY_BYTES:
                raise _BadArgsError(f"capability must be 1..{MAX_CAPABILITY_BYTES} bytes")
        ident = self._identity
        claims = EatClaims(
            nonce=nonce,
            ueid=self._ueid,
            secboot=ident.secboot,
            dbgstat=ident.dbgstat,
            measurements=ident.measurements,
            swname=SWNAME,
            swversion=ident.os_version,
            boot_slot=ident.boot_slot,
            rollback_counters=dict(self._counters),
            key_to_certify=key_to_certify,
            iat=iat,
            installed_apps=apps,
            insecure_no_sandbox=ident.insecure_no_sandbox,
            capability=capability,
        )
        token = sign_eat(claims, ident.alias_key, x5chain=list(ident.cert_chain))
        return {"eat": token}

    def _get_cert_chain(self, args: dict[str, Any]) -> dict[str, Any]:
        if args:
            raise _BadArgsError("get_cert_chain takes no arguments")
        return {"chain": list(self._identity.cert_chain)}

    def _read_counters(self, args: dict[str, Any]) -> dict[str, Any]:
        if args:
            raise _BadArgsError("read_counters takes no arguments")
        ident = self._identity
        event = None
        if ident.dev_dir is not None:
            last = Chip(Path(ident.dev_dir)).flash.read_boot_state().last_event
            event = None if last is None else last.to_json()
        return {
            "counters": dict(self._counters),
            "boot_slot": ident.boot_slot,
            "os_version": ident.os_version,
            "os_security_version": ident.os_security_version,
            "trial": self._trial,
            "last_event": event,
        }

    def _device(self) -> tuple[Chip, RunningOs]:
        ident = self._identity
        if ident.dev_dir is None:
            raise SlotStateError("this boot has no device directory")
        running = RunningOs(Slot(ident.boot_slot), ident.os_version, ident.os_security_version, self._trial)
        return Chip(Path(ident.dev_dir)), running

    def _install_os(self, args: dict[str, Any]) -> dict[str, Any]:
        path = _arg(args, "path", str)
        if set(args) != {"path"} or not 0 < len(path) <= MAX_PATH_CHARS:
            raise _BadArgsError(f"install_os takes one path of 1..{MAX_PATH_CHARS} chars")
        chip, running = self._device()
        with open_staged_image(chip.dev_dir, path) as image:
            outcome = install_slot(chip, image, running, checkpoint=self._checkpoint)
        header = outcome.header
        return {"slot": outcome.slot.value, "version": header.version, "security_version": header.security_version}

    def _confirm_boot(self, args: dict[str, Any]) -> dict[str, Any]:
        if args:
            raise _BadArgsError("confirm_boot takes no arguments")
        chip, running = self._device()
        counter = confirm_trial(chip, running, checkpoint=self._checkpoint)
        self._trial = False
        self._counters[OS_COUNTER] = counter
        return {"active_slot": running.slot.value, "os_counter": counter}

    def _fail_trial(self, args: dict[str, Any]) -> dict[str, Any]:
        if set(args) != {"at"}:
            raise _BadArgsError("fail_trial takes at")
        at = _arg(args, "at", int)
        if isinstance(at, bool) or not 0 <= at < _MAX_IAT:
            raise _BadArgsError("fail_trial: at is out of range")
        chip, running = self._device()
        if not self._trial:
            raise SlotStateError("this boot is not a trial; there is nothing to fail")
        rolled_back = fail_trial(chip.flash, running.slot, now=at)
        self._trial = False
        self._checkpoint("trial-failed")
        return {"rolled_back": rolled_back}

    def _ack_boot_event(self, args: dict[str, Any]) -> dict[str, Any]:
        if args:
            raise _BadArgsError("ack_boot_event takes no arguments")
        ack_boot_event(self._device()[0].flash)
        return {}

    def handle(self, payload: bytes) -> dict[str, Any]:
        """Answer one request payload (CBOR, no length prefix); never raises.

        Returns:
            ``{"result": map}`` or ``{"error": code, "detail": text}``.
        """
        op = "?"
        try:
            request = wire.decode_message(payload)
            if set(request) != {"op", "args"} or not isinstance(request["op"], str):
                raise MonitorProtocolError('request must be {"op": tstr, "args": map}')
            if not isinstance(request["args"], dict) or not all(isinstance(k, str) for k in request["args"]):
                raise MonitorProtocolError("request args must be a map with text keys")
            op = request["op"][:64]
            handler = self._ops.get(request["op"])
            if handler is None:
                _log.warning("refused op=%r: unknown operation", op)
                return {"error": wire.ERR_UNKNOWN_OP, "detail": "unknown operation"}
            result = handler(request["args"])
        except MonitorProtocolError as exc:
            _log.warning("refused op=%r: malformed request (%s)", op, exc)
            return {"error": wire.ERR_MALFORMED, "detail": str(exc)}
        except _BadArgsError as exc:
            _log.warning("refused op=%r: bad arguments (%s)", op, exc)
            return {"error": wire.ERR_BAD_ARGS, "detail": str(exc)}
        except FlashImageError as exc:
            code = _REFUSALS.get(type(exc), wire.ERR_IMAGE_REFUSED)
            _log.warning("refused op=%r: %s (%s)", op, code, exc)
            return {"error": code, "detail": str(exc)}
        except Exception as exc:  # noqa: BLE001 - a request must never stop the monitor
            _log.error("failed op=%r: %s", op, type(exc).__name__)
            return {"error": wire.ERR_INTERNAL, "detail": "the monitor could not complete the request"}
        _log.info("ok op=%r", op)
        return {"result": result}

    def serve(self, sock: socket.socket) -> None:
        """Answer requests on ``sock`` until the peer closes it.

        Raises:
            MonitorUnavailableError: the connection failed mid-frame.
        """
        while True:
            try:
                payload = wire.read_frame(sock)
            except FrameTooLargeError as exc:
                _log.warning("refused frame: %s", exc)
                wire.drain(sock, exc.length)
                response: dict[str, Any] = {"error": wire.ERR_FRAME_TOO_LARGE, "detail": str(exc)}
            else:
                if payload is None:
                    _log.info("peer closed the connection")
                    return
                response = self.handle(payload)
            try:
                encoded = wire.encode_message(response)
            except MonitorError:
                _log.error("response could not be encoded")
                encoded = wire.encode_message({"error": wire.ERR_INTERNAL, "detail": "response too large"})
            wire.write_frame(sock, encoded)
