"""Helpers shared by the monitor and OS tests (no tests here).

:func:`make_identity` builds a real DICE-shaped identity: a vendor CA, a
DeviceID certificate and an Alias certificate with DiceTcbInfo, as the boot
stage would hand them to the monitor.
"""

from __future__ import annotations

import datetime as dt
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from cryptography import x509

from bastion.crypto.certs import (
    OID_SHA256,
    Fwid,
    TcbInfo,
    certificate_der,
    issue_alias_cert,
    issue_device_id_cert,
    make_ca,
)
from bastion.crypto.eat import DebugStatus, Measurement
from bastion.crypto.keys import device_id_from_public_key, generate_private_key
from bastion.monitor.identity import MonitorIdentity
from bastion.monitor.server import MonitorServer

NOW = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.UTC)
BL_DIGEST = bytes(range(32))
OS_DIGEST = bytes(range(32, 64))


@dataclass(frozen=True)
class ChipFixture:
    """An identity plus the vendor CA that endorses it."""

    identity: MonitorIdentity
    vendor_ca: x509.Certificate


def make_identity(*, os_version: str = "1.0.0") -> ChipFixture:
    """Build a consistent MonitorIdentity from freshly generated keys."""
    vendor_key = generate_private_key()
    vendor_ca = make_ca("Test Vendor CA", vendor_key, now=NOW)
    device_key = generate_private_key()
    device_id_cert = issue_device_id_cert(vendor_key, vendor_ca, device_key.public_key(), now=NOW)
    alias_key = generate_private_key()
    tcb = TcbInfo(
        vendor="bastion",
        model="emulated",
        version=os_version,
        svn=1,
        layer=1,
        fwids=(Fwid(OID_SHA256, BL_DIGEST), Fwid(OID_SHA256, OS_DIGEST)),
    )
    alias_cert = issue_alias_cert(device_key, device_id_cert, alias_key.public_key(), tcb, now=NOW)
    identity = MonitorIdentity(
        alias_key=alias_key,
        cert_chain=(certificate_der(alias_cert), certificate_der(device_id_cert)),
        device_id=device_id_from_public_key(device_key.public_key()),
        measurements=(Measurement("bootloader", BL_DIGEST), Measurement("os", OS_DIGEST)),
        boot_slot="A",
        os_version=os_version,
        os_security_version=1,
        rollback_counters={"os": 1},
        secboot=True,
        dbgstat=DebugStatus.DISABLED_PERMANENTLY,
    )
    return ChipFixture(identity=identity, vendor_ca=vendor_ca)


@contextmanager
def serving(identity: MonitorIdentity) -> Iterator[socket.socket]:
    """Run a MonitorServer in a thread; yield the client's end of the socketpair."""
    client_end, server_end = socket.socketpair()
    thread = threading.Thread(target=MonitorServer(identity).serve, args=(server_end,), daemon=True)
    thread.start()
    try:
        yield client_end
    finally:
        client_end.close()
        thread.join(timeout=5)
        server_end.close()
        if thread.is_alive():
            raise AssertionError("the monitor loop did not end when its peer closed")
