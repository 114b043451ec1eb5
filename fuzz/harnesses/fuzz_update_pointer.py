"""Fuzz the device's reading of the ``updates`` pointer in the attestation answer (:mod:`bastion.os.updates.pointer`).

The input is the JSON of the pointer as the service sends it; the device parses
it (``parse_update_pointer``, ``MaintenanceWindow.parse``) and later builds
URLs and directory names from it. Checked beyond the documented error: an
accepted group id and TUF base are plain printable ASCII (no newline can ride
on a regular expression's ``$`` into a URL or a path), and an accepted window
survives its own ``to_json``.

Documented error: :class:`UpdateRefusedError` (``bad-pointer``).
"""

from __future__ import annotations

import json

from bastion.os.updates.errors import UpdateRefusedError
from bastion.os.updates.pointer import MaintenanceWindow, parse_update_pointer

SEEDS: list[bytes] = [
    json.dumps({"group_id": "g1", "tuf_base": "/tuf/g1", "root": "e30="}).encode(),
    json.dumps(
        {
            "group_id": "prod-eu_1",
            "tuf_base": "/tuf/prod-eu_1/",
            "root": "eyJzaWduZWQiOiB7fX0=",
            "maintenance_window": {"start": "23:30", "duration_minutes": 120},
        }
    ).encode(),
    b"{}",
    b"null",
]


def _plain(text: str) -> bool:
    return text.isascii() and text.isprintable()


def test_one_input(data: bytes) -> None:
    """Parse ``data`` (JSON) as an updates pointer."""
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        return
    for require_root in (True, False):
        try:
            pointer = parse_update_pointer(value, require_root=require_root)
        except UpdateRefusedError:
            continue
        if pointer is None:
            continue
        if not (_plain(pointer.group_id) and _plain(pointer.tuf_base)):
            raise RuntimeError(f"the pointer accepted a group id or base that is not plain text: {pointer!r}")
        window = pointer.maintenance_window
        if window is not None and MaintenanceWindow.parse(window.to_json()) != window:
            raise RuntimeError("an accepted maintenance window does not survive to_json")
