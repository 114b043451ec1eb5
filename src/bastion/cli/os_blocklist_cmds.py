"""``bastion os clear-blocklist`` and ``bastion os blocklist-clears`` (issue 8 §6, ADR 0018).

A device blocklists an OS image whose trial boot failed (with bounded retries). When
the image is good, an operator clears it for a group or one device; the clear is
signed into the group's TUF targets and reaches the devices at their next check-in.
"""

from __future__ import annotations

from typing import Annotated

import typer

from bastion.cli.apps import os_app
from bastion.cli.output import JsonOption, emit_object, emit_table

__all__ = ["blocklist_clears_cmd", "clear_blocklist_cmd"]

CLEAR_COLUMNS = ("id", "version", "device_id", "created_at", "created_by")


@os_app.command("clear-blocklist")
def clear_blocklist_cmd(
    image: Annotated[str, typer.Argument(help="OS version (e.g. 1.2.0) or measurement.")],
    group: Annotated[str, typer.Option("--group", help="Device group: id or PRODUCT/GROUP.")],
    device: Annotated[str | None, typer.Option("--device", help="Only this device of the group.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Let the group's devices (or one device) try a blocklisted OS image again (audited)."""
    from bastion.cli.fleet_update_cmds import _client

    body = {"group": group, "image": image, "device_id": device}
    with _client() as client:
        answer = client.post_json("/os-blocklist-clears", body)
    emit_object(answer, as_json=as_json, title=f"cleared OS {answer['version']} ({answer['id']})")


@os_app.command("blocklist-clears")
def blocklist_clears_cmd(
    group: Annotated[str, typer.Option("--group", help="Device group: id or PRODUCT/GROUP.")],
    as_json: JsonOption = False,
) -> None:
    """List a group's OS blocklist clears, newest first."""
    from bastion.cli.fleet_update_cmds import _client

    with _client() as client:
        rows = client.get_json("/os-blocklist-clears", group=group)
    emit_table(rows, CLEAR_COLUMNS, as_json=as_json, title=f"OS blocklist clears of {group}")
