"""TLS tunnels: the OS is the TLS client, the app holds the plaintext end of a socketpair.

For ``net.tls_connect`` the OS connects, runs the TLS handshake with the
device certificate and key (in an :class:`ssl.SSLObject` over memory BIOs, so
one thread drives both directions without blocking on either), then hands the
app one end of an ``AF_UNIX`` stream socketpair and pumps bytes between it and
the TLS connection in a thread:

* each direction holds at most ``tunnel_buffer_bytes`` (a side that does not
  read stops the other side from being read: backpressure, not memory);
* when the app closes its end, what it wrote is sent, then ``close_notify``,
  then both sockets close; when the server closes, what it sent is delivered
  to the app, then both close; any error closes both;
* each app may have ``max_tunnels_per_app`` tunnels open; closing the
  registry (OS stop) closes them all.

Example::

    tunnels = TunnelRegistry(settings)
    app_sock, info = tunnels.open("app-id", tcp_sock, context, "broker.example.com")
    fd = app_sock.detach()     # passed to the app
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bastion.os.appservices.registry import BadRequestError, QuotaExceededError, UnavailableError

if TYPE_CHECKING:
    from bastion.os.netbroker.broker import NetworkSettings

__all__ = ["TunnelInfo", "TunnelRegistry", "tls_client_context"]

_log = logging.getLogger("bastion.os.netbroker")


def tls_client_context(roots_pem: bytes) -> ssl.SSLContext:
    """A TLS client context (TLS 1.2+, hostname checked) that trusts only ``roots_pem``.

    Raises:
        BadRequestError: ``roots_pem`` holds no usable CA certificate.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and check_hostname by default
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_verify_locations(cadata=roots_pem.decode("ascii"))
    except (UnicodeDecodeError, ValueError, ssl.SSLError):
        raise BadRequestError("the CA PEM holds no usable certificate") from None
    if not context.get_ca_certs():
        raise BadRequestError("the CA PEM holds no certificate")
    return context


@dataclass(frozen=True)
class TunnelInfo:
    """What the app learns about its TLS connection.

    Attributes:
        version: the negotiated TLS version (``TLSv1.3``).
        cipher: the cipher suite.
        peer_subject: the server certificate's subject common name, if any.
    """

    version: str
    cipher: str
    peer_subject: str


def _peer_subject(obj: ssl.SSLObject) -> str:
    cert = obj.getpeercert()
    subject: Any = (cert or {}).get("subject", ())
    for rdn in subject:
        for pair in rdn:
            if isinstance(pair, tuple) and len(pair) == 2 and pair[0] == "commonName":
                return str(pair[1])
    return ""


def _wait(sock: socket.socket, events: int, deadline: float) -> None:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError
    with selectors.DefaultSelector() as selector:
        selector.register(sock, events)
        if not selector.select(remaining):
            raise TimeoutError


def _send_all(sock: socket.socket, data: bytes, deadline: float) -> None:
    view = memoryview(data)
    while view:
        try:
            sent = sock.send(view)
        except BlockingIOError:
            _wait(sock, selectors.EVENT_WRITE, deadline)
            continue
        view = view[sent:]


def _handshake(
    raw: socket.socket, obj: ssl.SSLObject, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO, deadline: float
) -> None:
    """Drive the client handshake over the BIOs until done or ``deadline``."""
    while True:
        try:
            obj.do_handshake()
        except ssl.SSLWantReadError:
            _send_all(raw, outgoing.read(), deadline)
            try:
                data = raw.recv(64 * 1024)
            except BlockingIOError:
                _wait(raw, selectors.EVENT_READ, deadline)
                continue
            if not data:
                raise ConnectionResetError("the server closed the connection during the TLS handshake") from None
            incoming.write(data)
            continue
        _send_all(raw, outgoing.read(), deadline)
        return


class _Tunnel:
    """One pump thread between a TLS connection and the app's socket.

    Each turn of the loop moves what can move without blocking, in order:
    server -> TLS layer -> app, then app -> TLS layer -> server; then it sleeps
    until one of the sockets can move more (or ``tunnel_poll_s`` passes).
    """

    def __init__(
        self,
        registry: TunnelRegistry,
        owner: str,
        raw: socket.socket,
        app: socket.socket,
        tls: tuple[ssl.SSLObject, ssl.MemoryBIO, ssl.MemoryBIO],
    ) -> None:
        self.owner = owner
        self._registry = registry
        self._raw, self._app = raw, app
        self._obj, self._incoming, self._outgoing = tls
        self._bound = registry.settings.tunnel_buffer_bytes
        self._settings = registry.settings
        self._to_app, self._to_net = bytearray(), bytearray()
        self._raw_eof = self._net_eof = self._app_eof = False
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"tls-tunnel-{owner[:8]}", daemon=True)

    def _run(self) -> None:
        try:
            self._pump()
        except (OSError, ssl.SSLError) as exc:
            _log.info("TLS tunnel of app %s ended: %s", self.owner, type(exc).__name__)
        finally:
            for sock in (self._app, self._raw):
                with contextlib.suppress(OSError):
                    sock.close()
            self._registry.release(self)

    def _pump(self) -> None:
        self._app.setblocking(False)
        self._raw.setblocking(False)
        linger_until: float | None = None
        with selectors.DefaultSelector() as selector:
            while not self.stop.is_set():
                self._from_server()
                self._decrypt()
                self._to_app_socket()
                self._from_app()
                self._to_server()
                # A closing side gets tunnel_linger_s to deliver what is held.
                if (self._app_eof and not self._to_net) or (self._net_eof and not self._to_app):
                    return
                if self._app_eof or self._net_eof or self._raw_eof:
                    now = time.monotonic()
                    linger_until = linger_until or now + self._settings.tunnel_linger_s
                    if now >= linger_until:
                        return
                self._watch(selector)
                selector.select(self._settings.tunnel_poll_s)

    def _from_server(self) -> None:
        """Ciphertext from the server, while the TLS layer holds little."""
        if self._raw_eof or self._incoming.pending >= self._bound:
            return
        with contextlib.suppress(BlockingIOError):
            data = self._raw.recv(self._bound)
            if data:
                self._incoming.write(data)
            else:
                self._raw_eof = True
                self._incoming.write_eof()

    def _decrypt(self) -> None:
        """Plaintext for the app, up to the bound (not once the app has gone)."""
        while not (self._net_eof or self._app_eof) and len(self._to_app) < self._bound:
            try:
                chunk = self._obj.read(self._bound - len(self._to_app))
            except ssl.SSLWantReadError:
                return
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                self._net_eof = True
                return
            if not chunk:
                self._net_eof = True
                return
            self._to_app += chunk

    def _to_app_socket(self) -> None:
        if self._to_app and not self._app_eof:
            with contextlib.suppress(BlockingIOError):
                del self._to_app[: self._app.send(self._to_app)]

    def _from_app(self) -> None:
        """Plaintext from the app, while little waits for the server."""
        if self._app_eof or len(self._to_net) >= self._bound:
            return
        with contextlib.suppress(BlockingIOError):
            data = self._app.recv(self._bound)
            if data:
                self._obj.write(data)
                return
            # The app's end of stream ends the tunnel: send what it wrote,
            # then close_notify, then close both sides.
            self._app_eof = True
            with contextlib.suppress(ssl.SSLError):
                self._obj.unwrap()

    def _to_server(self) -> None:
        self._to_net += self._outgoing.read()
        if self._to_net:
            with contextlib.suppress(BlockingIOError):
                del self._to_net[: self._raw.send(self._to_net)]

    def _watch(self, selector: selectors.BaseSelector) -> None:
        """Register for what could move next."""
        read_raw = not self._raw_eof and self._incoming.pending < self._bound
        read_app = not self._app_eof and len(self._to_net) < self._bound
        wanted = {
            self._raw: (selectors.EVENT_READ if read_raw else 0) | (selectors.EVENT_WRITE if self._to_net else 0),
            self._app: (selectors.EVENT_READ if read_app else 0)
            | (selectors.EVENT_WRITE if self._to_app and not self._app_eof else 0),
        }
        for sock, events in wanted.items():
            registered = sock in selector.get_map()
            if events and registered:
                selector.modify(sock, events)
            elif events:
                selector.register(sock, events)
            elif registered:
                selector.unregister(sock)


class TunnelRegistry:
    """The open TLS tunnels, bounded per app.

    Args:
        settings: the broker's bounds (tunnels per app, buffers, timeouts).
    """

    def __init__(self, settings: NetworkSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._count: dict[str, int] = {}
        self._open: set[_Tunnel] = set()
        self._closed = False

    def active(self, owner: str) -> int:
        """How many tunnels ``owner`` has open (or is opening)."""
        with self._lock:
            return self._count.get(owner, 0)

    def _reserve(self, owner: str) -> None:
        with self._lock:
            if self._closed:
                raise UnavailableError("the OS is stopping")
            count = self._count.get(owner, 0)
            if count >= self.settings.max_tunnels_per_app:
                raise QuotaExceededError(
                    f"the app has {count} TLS connections open, the most it may have (close one first)"
                )
            self._count[owner] = count + 1

    def _unreserve(self, owner: str) -> None:
        with self._lock:
            count = self._count.get(owner, 0) - 1
            if count > 0:
                self._count[owner] = count
            else:
                self._count.pop(owner, None)

    def release(self, tunnel: _Tunnel) -> None:
        """A tunnel ended (called by its thread)."""
        with self._lock:
            self._open.discard(tunnel)
        self._unreserve(tunnel.owner)

    def open(
        self, owner: str, raw: socket.socket, context: ssl.SSLContext, server_hostname: str
    ) -> tuple[socket.socket, TunnelInfo]:
        """Run the TLS handshake over ``raw`` (which this takes over) and start pumping.

        Returns the app's end of the tunnel and what was negotiated.

        Raises:
            QuotaExceededError: ``owner`` has as many tunnels open as it may.
            UnavailableError: the handshake failed or timed out, or the OS is stopping.
        """
        try:
            self._reserve(owner)
        except (QuotaExceededError, UnavailableError):
            raw.close()
            raise
        try:
            incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            obj = context.wrap_bio(incoming, outgoing, server_side=False, server_hostname=server_hostname)
            raw.setblocking(False)
            try:
                _handshake(raw, obj, incoming, outgoing, time.monotonic() + self.settings.handshake_timeout_s)
            except ssl.SSLCertVerificationError as exc:
                raise UnavailableError(
                    f"TLS with {server_hostname} failed: the server certificate does not verify ({exc.verify_message})"
                ) from None
            except ssl.SSLError as exc:
                raise UnavailableError(
                    f"TLS with {server_hostname} failed: {exc.reason or type(exc).__name__}"
                ) from None
            except TimeoutError:
                raise UnavailableError(
                    f"the TLS handshake with {server_hostname} took over {self.settings.handshake_timeout_s:g} s"
                ) from None
            except OSError as exc:
                raise UnavailableError(f"TLS with {server_hostname} failed: {exc.strerror or exc}") from None
            info = TunnelInfo(
                version=str(obj.version() or ""),
                cipher=str((obj.cipher() or ("",))[0]),
                peer_subject=_peer_subject(obj),
            )
            app_end, os_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        except BaseException:
            raw.close()
            self._unreserve(owner)
            raise
        tunnel = _Tunnel(self, owner, raw, os_end, (obj, incoming, outgoing))
        with self._lock:
            self._open.add(tunnel)
        tunnel.thread.start()
        return app_end, info

    def close(self, timeout: float = 5.0) -> None:
        """Stop every tunnel and wait for their threads (bounded)."""
        with self._lock:
            self._closed = True
            tunnels = list(self._open)
        for tunnel in tunnels:
            tunnel.stop.set()
        deadline = time.monotonic() + timeout
        for tunnel in tunnels:
            tunnel.thread.join(max(0.0, deadline - time.monotonic()))
