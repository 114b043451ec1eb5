"""AllowedApplicationConnections: messages between two apps that each list the other.

=======================  ==============================  ====================================
op                       args                            result
=======================  ==============================  ====================================
``application.send``     ``component_id``, ``data_b64``  ``{}``
``application.receive``  ``timeout_ms``                  ``message``: ``{from, data_b64}`` or
                                                         ``null`` when the wait ran out
=======================  ==============================  ====================================

A message is delivered only if the sender's manifest lists the receiver's
component ID in ``AllowedApplicationConnections`` **and** the receiver's manifest
lists the sender's (the OS checks both, at every send); otherwise the send is
refused, names the capability and is recorded. Each message carries the
sender's component ID as the OS knows it (never as the sender claims it).

Bounds: a message is at most :attr:`MessageLimits.max_message_bytes`; an app's
inbox holds at most :attr:`MessageLimits.max_inbox` messages. A send to a full
inbox is **refused** (``QuotaExceededError``), never dropped in silence, so the
sender knows to retry. ``receive`` waits at most
:data:`~bastion.os.appservices.channel.MAX_WAIT_S` per request (applibs loops,
on its own channel, so a waiting receive never delays the app's other calls).
These are the inter-core messages of a real-time partner app too: both ops are
open to real-time apps.

Example (OS side)::

    services.add(MessageService(lambda cid: store.get(cid).manifest if store.get(cid) else None))
    # app side: bastion.applibs.application.send_message(partner_id, b"ping")
"""

from __future__ import annotations

import re
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from bastion.images.manifest import AppManifest
from bastion.os.appservices.channel import MAX_WAIT_S
from bastion.os.appservices.registry import (
    AppContext,
    Args,
    BadRequestError,
    DeniedError,
    NotFoundError,
    Operation,
    QuotaExceededError,
    Reply,
    arg_b64,
    arg_int,
    arg_str,
    b64,
)

__all__ = ["CAPABILITY", "OPERATIONS", "AppMessage", "MessageLimits", "MessageService"]

CAPABILITY = "AllowedApplicationConnections"
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass(frozen=True)
class MessageLimits:
    """Bounds of app-to-app messages.

    Attributes:
        max_message_bytes: largest message.
        max_inbox: messages waiting for one app (a send beyond is refused).
        max_wait_s: longest one receive request waits.
    """

    max_message_bytes: int = 4096
    max_inbox: int = 16
    max_wait_s: float = MAX_WAIT_S


@dataclass(frozen=True)
class AppMessage:
    """A delivered message: who sent it (as the OS knows it) and its bytes."""

    sender: str
    data: bytes


def _lists(manifest: AppManifest, component_id: str) -> bool:
    return component_id in {c.lower() for c in manifest.capabilities.allowed_application_connections}


class MessageService:
    """The apps' inboxes.

    Args:
        manifest_of: the installed manifest of a component ID, or ``None`` if no such app is installed.
        limits: the bounds.
    """

    def __init__(self, manifest_of: Callable[[str], AppManifest | None], limits: MessageLimits | None = None) -> None:
        self._manifest_of = manifest_of
        self.limits = limits or MessageLimits()
        self._ready = threading.Condition()
        self._inboxes: dict[str, deque[AppMessage]] = {}

    def send(self, sender: AppManifest, target: str, data: bytes) -> None:
        """Queue ``data`` for ``target`` from ``sender``.

        Raises:
            DeniedError: either manifest does not list the other (names the capability).
            NotFoundError: no app ``target`` is installed.
            BadRequestError: the message is too large.
            QuotaExceededError: ``target``'s inbox is full.
        """
        target = target.lower()
        source = sender.component_id.lower()
        if not _lists(sender, target):
            raise DeniedError(f"the app manifest does not list {target} in {CAPABILITY}", capability=CAPABILITY)
        receiver = self._manifest_of(target)
        if receiver is None:
            raise NotFoundError(f"no app {target} is installed")
        if not _lists(receiver, source):
            raise DeniedError(f"app {target} does not list this app in its {CAPABILITY}", capability=CAPABILITY)
        if len(data) > self.limits.max_message_bytes:
            raise BadRequestError(f"a message is at most {self.limits.max_message_bytes} bytes")
        with self._ready:
            inbox = self._inboxes.setdefault(target, deque())
            if len(inbox) >= self.limits.max_inbox:
                raise QuotaExceededError(f"app {target} has {len(inbox)} messages waiting; try again later")
            inbox.append(AppMessage(source, data))
            self._ready.notify_all()

    def receive(self, component_id: str, timeout_s: float) -> AppMessage | None:
        """The oldest message for ``component_id``, waiting up to ``timeout_s`` (bounded); ``None`` if none came."""
        component_id = component_id.lower()
        with self._ready:
            self._ready.wait_for(
                lambda: bool(self._inboxes.get(component_id)), min(max(timeout_s, 0.0), self.limits.max_wait_s)
            )
            inbox = self._inboxes.get(component_id)
            return inbox.popleft() if inbox else None

    def waiting(self, component_id: str) -> int:
        """How many messages wait for ``component_id``."""
        with self._ready:
            return len(self._inboxes.get(component_id.lower(), ()))

    def forget(self, component_id: str) -> None:
        """Drop the inbox of an app that was removed."""
        with self._ready:
            self._inboxes.pop(component_id.lower(), None)


def _send(ctx: AppContext, args: Args) -> Reply:
    service = ctx.service(MessageService)
    target = arg_str(args, "component_id", max_chars=36).lower()
    if not _UUID.fullmatch(target):
        raise BadRequestError("component_id must be a UUID")
    service.send(ctx.manifest, target, arg_b64(args, "data", max_bytes=service.limits.max_message_bytes))
    return Reply({})


def _receive(ctx: AppContext, args: Args) -> Reply:
    service = ctx.service(MessageService)
    bound_ms = int(service.limits.max_wait_s * 1000)
    timeout_ms = arg_int(args, "timeout_ms", low=0, high=bound_ms, default=bound_ms)
    message = service.receive(ctx.component_id, timeout_ms / 1000)
    if message is None:
        return Reply({"message": None})
    return Reply({"message": {"from": message.sender, "data_b64": b64(message.data)}})


OPERATIONS = (
    Operation("application.send", _send, capability=CAPABILITY, realtime=True),
    Operation("application.receive", _receive, capability=CAPABILITY, realtime=True),
)
