#!/usr/bin/env python3
"""Bastion sample app: publishes telemetry over MQTT 3.1.1 with mutual TLS done by the OS.

The app never holds a key. It asks the OS for a TLS connection to the broker
(``networking.tls_connect``, capability ``DeviceAuthentication``); the OS
presents the device certificate that the tenant CA issued at attestation,
verifies the broker against the CA the app ships (``broker-ca.pem``), and hands
the app the plaintext end. The app then speaks MQTT: CONNECT, PUBLISH (QoS 1,
waiting for PUBACK so the broker has the message), DISCONNECT.

    python main.py --host localhost --port 8883 --ca broker-ca.pem [--count N] [--interval S]

``--count N`` stops after N messages (default 0: publish every ``--interval``
seconds until stopped, on one connection).

Before packaging (``bastion app package``), set ``DeviceAuthentication`` in
app_manifest.json to your tenant ID, list the broker in ``AllowedConnections``
and put the broker's CA certificate in ``broker-ca.pem``. The broker trusts
your tenant CA (``bastion tenant download-ca``) for client certificates.

Exit codes: 0 published; 2 bad arguments or no CA file; 3 refused by the OS
(the capability is named); 4 the broker or the network refused.

The MQTT encoder below is the minimum this app needs (MQTT 3.1.1, OASIS
standard, sections 2 and 3); apps get only the standard library.
"""

from __future__ import annotations

import argparse
import itertools
import json
import socket
import struct
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from bastion.applibs import networking, whoami
from bastion.applibs.errors import ApplibsError, PermissionDeniedError

APP_DIR = Path(__file__).resolve().parent
MAX_CA_BYTES = 64 * 1024
#: Bound on one MQTT packet we accept from the broker.
MAX_PACKET_BYTES = 4096
TIMEOUT_S = 15.0
KEEPALIVE_S = 60

# MQTT 3.1.1 control packet types (section 2.2.1).
CONNECT, CONNACK, PUBLISH, PUBACK, DISCONNECT = 1, 2, 3, 4, 14


class BrokerError(Exception):
    """The broker refused, closed the connection, or sent something unexpected."""


# -- MQTT 3.1.1 encoding --------------------------------------------------------


def remaining_length(n: int) -> bytes:
    """The variable-length "remaining length" (section 2.2.3)."""
    if not 0 <= n <= 268_435_455:
        raise ValueError("MQTT packet too large")
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def mqtt_string(text: str) -> bytes:
    """A UTF-8 string with its two-byte length (section 1.5.3)."""
    data = text.encode("utf-8")
    return struct.pack("!H", len(data)) + data


def packet(kind: int, flags: int, body: bytes) -> bytes:
    """A control packet: fixed header, then body."""
    return bytes([kind << 4 | flags]) + remaining_length(len(body)) + body


def connect_packet(client_id: str, keepalive: int = KEEPALIVE_S) -> bytes:
    """CONNECT, protocol level 4 (3.1.1), clean session, no will, no user name (section 3.1)."""
    variable = mqtt_string("MQTT") + bytes([4, 0x02]) + struct.pack("!H", keepalive)
    return packet(CONNECT, 0, variable + mqtt_string(client_id))


def publish_packet(topic: str, payload: bytes, packet_id: int) -> bytes:
    """PUBLISH at QoS 1 (section 3.3): flags 0b0010."""
    return packet(PUBLISH, 0x02, mqtt_string(topic) + struct.pack("!H", packet_id) + payload)


def disconnect_packet() -> bytes:
    """DISCONNECT (section 3.14)."""
    return packet(DISCONNECT, 0, b"")


def read_packet(sock: socket.socket) -> tuple[int, bytes]:
    """One control packet from the broker: ``(type, body)``.

    Raises:
        BrokerError: the connection closed, or the packet is malformed or too large.
    """
    first = _read(sock, 1)[0]
    length, shift = 0, 0
    for _ in range(4):
        digit = _read(sock, 1)[0]
        length |= (digit & 0x7F) << shift
        shift += 7
        if not digit & 0x80:
            break
    else:
        raise BrokerError("malformed remaining length")
    if length > MAX_PACKET_BYTES:
        raise BrokerError(f"packet of {length} bytes is over the bound")
    return first >> 4, _read(sock, length)


def _read(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise BrokerError("the broker closed the connection")
        data += chunk
    return bytes(data)


# -- the app ------------------------------------------------------------------------


def publish(sock: socket.socket, client_id: str, topic: str, messages: Iterable[bytes], interval: float) -> None:
    """CONNECT, then each message at QoS 1 (acknowledged) every ``interval`` seconds, then DISCONNECT.

    Raises:
        BrokerError: the broker refused or misbehaved.
    """
    # The broker drops a client silent for 1.5 keepalives (section 3.1.2.10): stay well inside.
    sock.sendall(connect_packet(client_id, keepalive=int(min(65535, max(KEEPALIVE_S, 2 * interval)))))
    kind, body = read_packet(sock)
    if kind != CONNACK or len(body) != 2:
        raise BrokerError(f"expected CONNACK, got packet type {kind}")
    if body[1] != 0:
        raise BrokerError(f"the broker refused the connection (CONNACK return code {body[1]})")
    print("telemetry: the broker accepted the connection", flush=True)
    for seq, payload in enumerate(messages, start=1):
        if seq > 1:
            time.sleep(interval)
        packet_id = (seq - 1) % 65535 + 1  # 1..65535 (section 2.3.1)
        sock.sendall(publish_packet(topic, payload, packet_id))
        kind, body = read_packet(sock)
        if kind != PUBACK or body != struct.pack("!H", packet_id):
            raise BrokerError(f"expected PUBACK {packet_id}, got packet type {kind}")
        print(f"telemetry: published message {seq} to {topic} ({len(payload)} bytes), acknowledged", flush=True)
    sock.sendall(disconnect_packet())


def reading(component_id: str, seq: int) -> bytes:
    """One telemetry message (an emulated sensor)."""
    value = {"component_id": component_id, "seq": seq, "temperature_c": round(21.5 + 0.1 * seq, 1)}
    return json.dumps(value, sort_keys=True).encode()


def main(argv: list[str] | None = None) -> int:
    """Publish ``--count`` telemetry messages to the broker."""
    parser = argparse.ArgumentParser(description="Bastion telemetry sample (MQTT over OS-run mutual TLS)")
    parser.add_argument("--host", required=True, help="the broker (listed in AllowedConnections)")
    parser.add_argument("--port", type=int, default=8883)
    parser.add_argument("--ca", default="broker-ca.pem", help="CA that verifies the broker (relative to the app)")
    parser.add_argument("--topic", default="bastion/telemetry")
    parser.add_argument("--count", type=int, default=0, help="messages to send (0: until stopped)")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between messages")
    args = parser.parse_args(argv)
    ca_path = APP_DIR / args.ca
    try:
        with ca_path.open("rb") as handle:
            ca_pem = handle.read(MAX_CA_BYTES + 1)
    except OSError:
        print(f"telemetry: no broker CA at {args.ca}: put the broker's CA certificate there", file=sys.stderr)
        return 2
    try:
        component_id = str(whoami()["component_id"])
        sock = networking.tls_connect(args.host, args.port, ca_pem=ca_pem)
    except PermissionDeniedError as exc:
        print(f"telemetry: refused by the OS ({exc.capability}): {exc}", file=sys.stderr)
        return 3
    except ApplibsError as exc:
        print(f"telemetry: no TLS connection to {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 4
    print(f"telemetry: TLS connection to {args.host}:{args.port} opened by the OS", flush=True)
    topic = f"{args.topic}/{component_id}"
    seqs = range(1, args.count + 1) if args.count > 0 else itertools.count(1)
    messages = (reading(component_id, seq) for seq in seqs)
    with sock:
        sock.settimeout(TIMEOUT_S)
        try:
            publish(sock, f"telemetry-{component_id[:8]}", topic, messages, args.interval)
        except (BrokerError, ConnectionError) as exc:
            # A broker that refuses the device certificate closes the connection.
            print(f"telemetry: the broker refused or closed the connection: {exc}", file=sys.stderr)
            return 4
        except OSError as exc:
            print(f"telemetry: the connection to the broker failed: {exc}", file=sys.stderr)
            return 4
    return 0


if __name__ == "__main__":
    sys.exit(main())
