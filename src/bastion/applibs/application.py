"""AllowedApplicationConnections: messages to and from partner apps.

Both apps must list each other's component ID in
``"AllowedApplicationConnections"``; the OS checks both manifests at every send.
A real-time app and its high-level partner talk this way too (Azure Sphere's
``Application_Connect`` inter-core channel).

A message is at most :data:`MAX_MESSAGE_BYTES`. A partner's inbox is bounded:
a send to a full inbox raises :class:`~bastion.applibs.errors.QuotaExceededError`
(nothing is dropped in silence), so retry later. :func:`receive_message` waits on
a channel of its own, so other threads' applibs calls are not delayed.

Example::

    from bastion.applibs import application
    application.send_message("7a1e0c2d-5b3f-4e6a-8c9d-0e1f2a3b4c5d", b"ping")
    reply = application.receive_message(timeout=5.0)
    if reply is not None:
        print(reply.sender, reply.data)
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass

from bastion.applibs._client import channel, connection

__all__ = ["MAX_MESSAGE_BYTES", "Message", "receive_message", "send_message"]

#: The OS's bound on one message.
MAX_MESSAGE_BYTES = 4096
#: The OS's bound on one waiting request; longer waits are several requests.
_POLL_MS = 10_000


@dataclass(frozen=True)
class Message:
    """A message from a partner app; ``sender`` is its component ID as the OS knows it."""

    sender: str
    data: bytes


def send_message(component_id: str, data: bytes) -> None:
    """Send ``data`` to the partner app ``component_id``.

    Raises:
        PermissionDeniedError: either manifest does not list the other.
        NotFoundError: no such app is installed.
        QuotaExceededError: the partner's inbox is full.
    """
    connection().call(
        "application.send", {"component_id": component_id, "data_b64": base64.b64encode(data).decode("ascii")}
    )


def receive_message(timeout: float | None = None) -> Message | None:
    """The next message for this app; waits up to ``timeout`` seconds (``None``: until one comes).

    Returns:
        The message, or ``None`` when ``timeout`` passed without one.
    """
    deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
    conn = channel("application")
    while True:
        left_ms = _POLL_MS if deadline is None else int(max(deadline - time.monotonic(), 0.0) * 1000)
        reply = conn.call("application.receive", {"timeout_ms": min(left_ms, _POLL_MS)})
        message = reply.get("message")
        if isinstance(message, dict):
            return Message(str(message["from"]), base64.b64decode(str(message["data_b64"])))
        if deadline is not None and time.monotonic() >= deadline:
            return None
