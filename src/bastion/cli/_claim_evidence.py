"""Claim evidence from a device on the bench: boot it, and have its monitor sign an EAT over a claim challenge.

``bastion device claim --dir DEV`` proves physical possession the way the device
attests (docs/design.md, "Claim"): the ROM and bootloader run as at every boot
(:func:`bastion.boot.boot_device`) and derive the Alias key from the measured
OS; the monitor's own request handler (:class:`bastion.monitor.server.MonitorServer`)
signs the EAT, reached through :class:`bastion.monitor.client.MonitorClient`
over a socketpair exactly as the OS reaches it. No OS process starts. The key
the EAT certifies is a throw-away one: a claim issues no certificate.

The device must not be running (``bastion device run``) and must not have an OS
update on trial: a bench boot would spend one of its trial attempts.
"""

from __future__ import annotations

import datetime as dt
import socket
import threading
from pathlib import Path

from bastion.cli.output import fail

__all__ = ["device_id_of", "sign_claim_evidence"]

#: How long the monitor thread may take to stop after the client closed its end.
_MONITOR_JOIN_S = 5.0


def device_id_of(dev_dir: Path) -> str:
    """The device ID of the chip in ``dev_dir`` (raises CliError if there is none)."""
    from bastion.boot.info import describe_device
    from bastion.hw.errors import ChipNotFoundError, HwError

    try:
        info = describe_device(dev_dir)
    except ChipNotFoundError:
        fail(f"no chip in {dev_dir}", hint="manufacture one with `bastion device manufacture`")
    except HwError as exc:
        fail(f"the device state is unreadable: {exc}")
    if info.device_id is None:
        fail(f"the chip in {dev_dir} has no device ID yet", hint="manufacture it with `bastion device manufacture`")
    if info.trial_slot is not None:
        fail(
            f"the device in {dev_dir} has an OS update on trial (slot {info.trial_slot}); a bench boot would spend it",
            hint="run it once with `bastion device run --dir DEV --once` so the update confirms or rolls back",
        )
    return info.device_id


def sign_claim_evidence(dev_dir: Path, nonce: bytes, *, now: dt.datetime) -> bytes:
    """Boot the device in ``dev_dir`` and return its monitor's EAT over ``nonce`` (raises CliError on failure)."""
    from bastion.boot import boot_device
    from bastion.boot.errors import BootError
    from bastion.cli.device_run_cmds import identity_from_boot
    from bastion.crypto.keys import generate_private_key, public_key_bytes
    from bastion.monitor.client import MonitorClient
    from bastion.monitor.errors import MonitorError
    from bastion.monitor.server import MonitorServer

    try:
        result = boot_device(dev_dir, now=now)
    except BootError as exc:
        fail(
            f"the device did not boot, so it cannot sign claim evidence: {exc}",
            hint="flash a good OS image with `bastion device flash --dir DEV --os IMAGE --activate`",
        )
    server = MonitorServer(identity_from_boot(result, dev_dir))
    client_end, server_end = socket.socketpair()
    thread = threading.Thread(target=server.serve, args=(server_end,), name="claim-monitor", daemon=True)
    thread.start()
    monitor = MonitorClient(client_end)
    try:
        return monitor.sign_attestation(
            nonce=nonce,
            key_to_certify=public_key_bytes(generate_private_key().public_key()),
            iat=int(now.timestamp()),
        )
    except MonitorError as exc:
        fail(f"the device's monitor did not sign the claim evidence: {exc}")
    finally:
        monitor.close()
        thread.join(_MONITOR_JOIN_S)
        server_end.close()
