"""The local device API: development mode, sideloading and app control over the control socket.

These ops of ``DEV/os-state/control.sock`` (:mod:`bastion.os.updates.control`)
back ``bastion device enable-development``, ``disable-development``,
``sideload``, ``start``, ``stop`` and ``logs``:

=========================  ===============================================================
op                         what it does
=========================  ===============================================================
``enable-development``     upload (``size`` + bytes): verify and install a capability file
``disable-development``    remove the capability file (development mode off)
``development``            the installed capability, or ``null``
``sideload``               upload: verify an app image against the capability's keys,
                           install it through the app store, (re)start it
``app-start``              ``{"component_id"}``: start an installed app (AppManager)
``app-stop``               ``{"component_id"}``: stop it
``app-logs``               ``{"component_id", "max_bytes"?}``: the tail of its log
=========================  ===============================================================

Every op but ``enable-development`` and ``development`` needs a valid capability
(:class:`~bastion.os.devmode.capability.DevelopmentMode`); without one it is
refused and the refusal is recorded (``sideload_refused`` for a sideload,
``local_op_refused`` otherwise). A sideloaded image must be signed by a developer
key the ``appDevelopment`` capability lists, or by one of the device's pinned
app-signing keys (the only keys ``fieldServicing`` accepts). Answers are JSON
objects; a refusal is ``{"error": reason, "detail": text}``.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bastion.crypto.keys import PublicKey
from bastion.images.capability import Capability, CapabilityKind
from bastion.images.errors import ImageError, ImagePayloadError, ImageSignatureError
from bastion.images.package import ImageHeader, ImageType, inspect_image, verify_image
from bastion.os.apps.manager import AppManager
from bastion.os.apps.store import AppStore, check_component_id
from bastion.os.devmode.capability import DevelopmentMode, describe
from bastion.os.errors import LocalApiRefusedError, StateError
from bastion.os.updates.control import RequestHandler, Upload
from bastion.os.updates.errors import UpdateError
from bastion.os.updates.events import EventQueue

__all__ = ["LocalApi", "LocalApiLimits", "sideload_keys"]

_log = logging.getLogger("bastion.os.devmode")


@dataclass(frozen=True)
class LocalApiLimits:
    """Bounds of the local device API.

    Attributes:
        max_image_bytes: a sideloaded app image.
        max_capability_bytes: an uploaded capability file.
        default_log_bytes: the log tail ``app-logs`` returns when not told.
        max_log_bytes: the largest log tail (fits the control socket's answer bound).
    """

    max_image_bytes: int = 64 * 1024 * 1024
    max_capability_bytes: int = 4096
    default_log_bytes: int = 16 * 1024
    max_log_bytes: int = 64 * 1024


def sideload_keys(capability: Capability, pinned: Sequence[PublicKey]) -> list[PublicKey]:
    """The keys a sideloaded image may be signed by under ``capability``."""
    if capability.kind is CapabilityKind.APP_DEVELOPMENT:
        return [*capability.developer_public_keys, *pinned]
    return list(pinned)


def _refusal(exc: LocalApiRefusedError) -> dict[str, Any]:
    return {"error": exc.reason, "detail": str(exc)}


class LocalApi:
    """The ops above, for one boot.

    Args:
        dev: the device's development mode.
        store: the app store (sideloads go through its install).
        apps: the app manager (start, stop, logs).
        events: the event queue.
        pinned_keys: the device's pinned app-signing keys (production-signed images).
        clock: the OS clock.
        lock: held while an app is installed or restarted (the update agent's), so a
            sideload and an update never touch one app at once.
        on_change: called after the capability changed (the runtime attests again).
        limits: the bounds.
    """

    def __init__(
        self,
        *,
        dev: DevelopmentMode,
        store: AppStore,
        apps: AppManager,
        events: EventQueue,
        pinned_keys: Sequence[PublicKey],
        clock: Callable[[], dt.datetime],
        spool_dir: Path,
        lock: AbstractContextManager[Any] | None = None,
        on_change: Callable[[], None] = lambda: None,
        limits: LocalApiLimits | None = None,
    ) -> None:
        self.dev = dev
        self._store = store
        self._apps = apps
        self._events = events
        self._pinned = tuple(pinned_keys)
        self._clock = clock
        self._spool = spool_dir
        self._lock: AbstractContextManager[Any] = lock if lock is not None else threading.RLock()
        self._on_change = on_change
        self.limits = limits or LocalApiLimits()

    def requests(self) -> dict[str, RequestHandler]:
        """The ops that take a request object."""
        return {
            "disable-development": self.disable,
            "development": self.development,
            "app-start": self.start,
            "app-stop": self.stop,
            "app-logs": self.logs,
        }

    def uploads(self) -> dict[str, Upload]:
        """The ops whose bytes follow the request line."""
        return {
            "enable-development": Upload(self.enable, self.limits.max_capability_bytes, self._spool),
            "sideload": Upload(self.sideload, self.limits.max_image_bytes, self._spool),
        }

    def _record(self, kind: str, detail: str, component_id: str = "", version: str = "") -> None:
        self._events.record(
            at=int(self._clock().timestamp()), kind=kind, component_id=component_id, version=version, detail=detail
        )

    # --- development mode ----------------------------------------------------------

    def enable(self, request: dict[str, Any], path: Path) -> dict[str, Any]:
        """Install the uploaded capability file."""
        del request
        now = self._clock()
        try:
            capability = self.dev.install(path.read_bytes()[: self.limits.max_capability_bytes + 1], now=now)
        except LocalApiRefusedError as exc:
            self._record("local_op_refused", f"enable-development: {exc}")
            _log.warning("enable-development refused: %s", exc)
            return _refusal(exc)
        except (OSError, StateError) as exc:
            return {"error": "failed", "detail": f"the capability could not be stored: {exc}"}
        self._on_change()
        return {"development": describe(capability)}

    def disable(self, request: dict[str, Any]) -> dict[str, Any]:
        """Remove the capability file."""
        del request
        try:
            removed = self.dev.disable(now=self._clock())
        except StateError as exc:
            return {"error": "failed", "detail": str(exc)}
        if removed:
            self._on_change()
        return {"removed": removed, "development": None}

    def development(self, request: dict[str, Any]) -> dict[str, Any]:
        """The installed capability (or null)."""
        del request
        return {"development": self.dev.status(now=self._clock())}

    # --- sideloading ---------------------------------------------------------------

    def _verify(self, path: Path, capability: Capability) -> ImageHeader:
        try:
            with path.open("rb") as stream:
                header = verify_image(stream, sideload_keys(capability, self._pinned))
        except ImageSignatureError as exc:
            raise LocalApiRefusedError(
                "signature",
                f"{exc}; sign it with a developer key the capability lists"
                if capability.kind is CapabilityKind.APP_DEVELOPMENT
                else f"{exc}; field servicing sideloads production-signed images only",
            ) from exc
        except ImagePayloadError as exc:
            raise LocalApiRefusedError("format", f"the image payload is corrupt: {exc}") from exc
        except ImageError as exc:
            raise LocalApiRefusedError("format", f"not an app image package: {exc}") from exc
        if header.image_type is not ImageType.APP:
            raise LocalApiRefusedError("format", f"the image is a {header.image_type.value} image, not an app")
        return header

    @staticmethod
    def _identity(path: Path) -> tuple[str, str]:
        """Component and version from an image's header, unverified (to name a refusal)."""
        try:
            with path.open("rb") as stream:
                header = inspect_image(stream)
        except (OSError, ImageError):
            return "", ""
        return header.component_id, header.version

    def sideload(self, request: dict[str, Any], path: Path) -> dict[str, Any]:
        """Verify and install an uploaded app image, then (re)start it."""
        start = request.get("start", True) is not False
        now = self._clock()
        try:
            capability = self.dev.require(now=now, what="sideloading")
            header = self._verify(path, capability)
        except LocalApiRefusedError as exc:
            component_id, version = self._identity(path)
            self._record("sideload_refused", str(exc), component_id, version)
            _log.warning("sideload refused (%s): %s", exc.reason, exc)
            return _refusal(exc)
        with self._lock:
            try:
                self._apps.stop(header.component_id)
                app = self._store.install(
                    path, component_id=header.component_id, version=header.version, reinstall=True
                )
            except UpdateError as exc:
                self._record("sideload_refused", f"install: {exc}", header.component_id, header.version)
                if start:
                    self._apps.restart(header.component_id, now)  # the version that was there, if any
                return {"error": "install", "detail": str(exc)}
            self._record(
                "app_sideloaded",
                f"signed by {header.signer.hex()[:16]} under {capability.kind.value} {capability.capability_id}",
                app.component_id,
                app.version,
            )
            if start:
                self._apps.restart(app.component_id, now)
        _log.warning("sideloaded app %s %s", app.component_id, app.version)
        return {
            "component_id": app.component_id,
            "version": app.version,
            "name": app.manifest.name,
            "signer": header.signer.hex(),
            "started": start,
        }

    # --- app control -----------------------------------------------------------------

    def _app(self, request: dict[str, Any], what: str) -> str:
        """The component the request names, once the capability allows ``what``."""
        component_id = request.get("component_id")
        self.dev.require(now=self._clock(), what=what)
        try:
            check_component_id(component_id if isinstance(component_id, str) else "")
        except UpdateError:
            raise LocalApiRefusedError("unknown_app", "component_id is not a component ID (a UUID)") from None
        if self._store.get(str(component_id)) is None:
            raise LocalApiRefusedError("unknown_app", f"no app {component_id} is installed")
        return str(component_id)

    def _guarded(self, request: dict[str, Any], op: str, act: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
        try:
            component_id = self._app(request, op)
        except LocalApiRefusedError as exc:
            raw = request.get("component_id")
            self._record("local_op_refused", f"{op}: {exc}", raw[:64] if isinstance(raw, str) else "")
            _log.warning("%s refused (%s): %s", op, exc.reason, exc)
            return _refusal(exc)
        return act(component_id)

    def start(self, request: dict[str, Any]) -> dict[str, Any]:
        """Start (or restart) an installed app."""

        def act(component_id: str) -> dict[str, Any]:
            with self._lock:
                self._apps.restart(component_id, self._clock())
            return {"component_id": component_id, "pid": self._apps.running().get(component_id)}

        return self._guarded(request, "app-start", act)

    def stop(self, request: dict[str, Any]) -> dict[str, Any]:
        """Stop an app (it stays stopped until started, or until the next boot)."""

        def act(component_id: str) -> dict[str, Any]:
            with self._lock:
                self._apps.stop(component_id)
            return {"component_id": component_id, "pid": None}

        return self._guarded(request, "app-stop", act)

    def logs(self, request: dict[str, Any]) -> dict[str, Any]:
        """The tail of an app's log (at most ``max_bytes``, bounded)."""
        asked = request.get("max_bytes", self.limits.default_log_bytes)
        if isinstance(asked, bool) or not isinstance(asked, int) or asked <= 0:
            asked = self.limits.default_log_bytes
        limit = min(asked, self.limits.max_log_bytes)

        def act(component_id: str) -> dict[str, Any]:
            try:
                with self._apps.log_path(component_id).open("rb") as handle:
                    size = handle.seek(0, os.SEEK_END)
                    handle.seek(max(size - limit, 0))
                    tail = handle.read(limit)
            except FileNotFoundError:
                size, tail = 0, b""
            except OSError as exc:
                return {"error": "failed", "detail": f"cannot read the app log: {exc.strerror or exc}"}
            return {
                "component_id": component_id,
                "size": size,
                "truncated": size > len(tail),
                "log": tail.decode("utf-8", "replace"),
            }

        return self._guarded(request, "app-logs", act)
