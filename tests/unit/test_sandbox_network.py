"""Sockets the OS passes into a real bubblewrap sandbox work there, and only those.

The app runs through the real app manager, with seccomp (no socket of any
family but AF_UNIX), Landlock (ABI 4+: no TCP bind or connect) and its own
network namespace. The OS side is the real connection broker: it connects,
binds, and passes the sockets; the app only sends, receives and accepts.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

from _net_world import EchoServer
from _sandbox_support import APP_X, make_device, run_to_exit

from _tls_pki import LOOPBACK
from bastion.cli._localstack import free_port
from bastion.os.netbroker.broker import NetworkService, NetworkSettings

APP = """
from bastion.applibs import networking
from bastion.applibs.errors import PermissionDeniedError
with networking.connect("localhost", TCP) as s:
    s.sendall(b"ping")
    print("tcp", s.recv(4).decode(), flush=True)
with networking.udp_connect("127.0.0.1", UDP) as u:
    u.settimeout(5)
    u.send(b"datagram")
    print("udp", u.recv(100).decode(), flush=True)
with networking.listen_tcp(LISTEN) as server:
    print("listening", server.getsockname()[1], flush=True)
    conn, _ = server.accept()
    with conn:
        print("accepted", conn.recv(2).decode(), flush=True)
try:
    networking.connect("example.com", 80)
except PermissionDeniedError as exc:
    print("denied", exc.capability, flush=True)
"""


def _udp_echo(sock: socket.socket) -> None:
    try:
        data, peer = sock.recvfrom(100)
        sock.sendto(data.upper(), peer)
    except OSError:
        return


def _knock(port: int, stop: threading.Event) -> None:
    """Connect to the app's server port once it listens, and say hi."""
    while not stop.is_set():
        try:
            with socket.create_connection((LOOPBACK, port), timeout=1) as conn:
                conn.sendall(b"hi")
                time.sleep(0.5)
                return
        except OSError:
            time.sleep(0.05)


def test_passed_sockets_work_inside_the_sandbox(tmp_path: Path) -> None:
    echo = EchoServer()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((LOOPBACK, 0))
    udp_port = udp.getsockname()[1]
    listen_port = free_port()
    udp_thread = threading.Thread(target=_udp_echo, args=(udp,), daemon=True)
    udp_thread.start()
    stop = threading.Event()
    knocker = threading.Thread(target=_knock, args=(listen_port, stop), daemon=True)
    knocker.start()
    net = NetworkService(NetworkSettings(bind_address=LOOPBACK))
    device = make_device(tmp_path, services={NetworkService: net})
    code = APP.replace("TCP", str(echo.port)).replace("UDP", str(udp_port)).replace("LISTEN", str(listen_port))
    capabilities = {
        "AllowedConnections": ["localhost", LOOPBACK],
        "AllowedTcpServerPorts": [listen_port],
    }
    try:
        log = run_to_exit(device, APP_X, code, capabilities=capabilities)
    finally:
        stop.set()
        knocker.join(5)
        udp.close()
        udp_thread.join(5)
        echo.close()
        device.manager.stop_all()
        net.close()
    assert "tcp ping" in log, log
    assert "udp DATAGRAM" in log, log
    assert f"listening {listen_port}" in log, log
    assert "accepted hi" in log, log
    assert "denied AllowedConnections" in log, log
    assert device.manager.layers(APP_X).get("confirmed") is True  # it ran in the sandbox
    assert "sandbox_violation" not in device.kinds(APP_X)
    assert "app_denied" in device.kinds(APP_X)
