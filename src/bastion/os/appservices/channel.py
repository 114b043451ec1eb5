"""``applibs.channel``: a second socket for an app's blocking calls.

An app's socket is served by one thread, one request at a time, so a call that
waits (``application.receive``, ``sysevent.wait``) would hold every other call
of the app for as long as it waits. Two things keep that bounded:

1. every waiting op waits at most :data:`MAX_WAIT_S` per request (a long poll;
   the applibs side asks again until its own timeout), and
2. an app asks for a channel: the OS makes a new SOCK_SEQPACKET pair, serves
   the OS end with an :class:`~bastion.os.appservices.server.AppServer` of its
   own (same app context, same table, same choke point) in its own thread, and
   passes the app's end by SCM_RIGHTS. applibs opens one channel per waiting
   area, so ``receive`` and ``wait`` never delay ``storage.write``.

At most :attr:`ChannelService.max_per_app` channels per app (the thread count
is bounded); a channel's thread ends, and its slot frees, when the app closes
its end or dies.

Example (app side, what :mod:`bastion.applibs.application` does)::

    result, fds = connection().call_fds("applibs.channel")
    channel = Connection(socket.socket(fileno=fds[0]))
"""

from __future__ import annotations

import socket
import threading

from bastion.os.appservices.registry import AppContext, Args, Operation, QuotaExceededError, Reply
from bastion.os.appservices.server import AppServer

__all__ = ["MAX_CHANNELS_PER_APP", "MAX_WAIT_S", "OPERATIONS", "ChannelService"]

#: Longest one waiting request holds its thread (seconds).
MAX_WAIT_S = 10.0
#: Bound on the extra sockets (and threads) one app may have.
MAX_CHANNELS_PER_APP = 4


class ChannelService:
    """Opens and counts the apps' extra sockets.

    Args:
        max_per_app: bound on the channels one app holds at once.
    """

    def __init__(self, max_per_app: int = MAX_CHANNELS_PER_APP) -> None:
        self.max_per_app = max_per_app
        self._lock = threading.Lock()
        self._servers: dict[str, list[AppServer]] = {}

    def open(self, ctx: AppContext) -> int:
        """Start serving a new channel for the app; returns the fd of the app's end (the caller passes and closes it).

        Raises:
            QuotaExceededError: the app already holds :attr:`max_per_app` channels.
        """
        with self._lock:
            servers = self._servers.setdefault(ctx.component_id, [])
            if len(servers) >= self.max_per_app:
                raise QuotaExceededError(f"the app already holds {len(servers)} channels, the most it may")
            os_end, app_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            holder: list[AppServer] = []
            server = AppServer(ctx, os_end, on_exit=lambda: self._closed(ctx.component_id, holder))
            holder.append(server)
            servers.append(server)
        server.start()
        return app_end.detach()

    def _closed(self, component_id: str, holder: list[AppServer]) -> None:
        with self._lock:
            servers = self._servers.get(component_id, [])
            for server in holder:
                if server in servers:
                    servers.remove(server)
        for server in holder:
            server.close()

    def count(self, component_id: str) -> int:
        """How many channels the app holds."""
        with self._lock:
            return len(self._servers.get(component_id, []))

    def close_app(self, component_id: str) -> None:
        """Close every channel of one app (it stopped)."""
        with self._lock:
            servers = self._servers.pop(component_id, [])
        for server in servers:
            server.close()

    def close_all(self) -> None:
        """Close every channel (the OS stops)."""
        with self._lock:
            ids = list(self._servers)
        for component_id in ids:
            self.close_app(component_id)


def _open(ctx: AppContext, args: Args) -> Reply:
    del args
    return Reply({"max_wait_s": MAX_WAIT_S}, fds=[ctx.service(ChannelService).open(ctx)])


OPERATIONS = (Operation("applibs.channel", _open, capability=None, realtime=True),)
