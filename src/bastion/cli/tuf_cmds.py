"""``bastion service tuf-refresh``: re-sign aging TUF metadata of every device group, now.

The service does this by itself in the background; this command is for cron
jobs, a service that was stopped for a while, and operators who want to see it.
It works on the repositories under ``BASTION_HOME`` with the master key.
"""

from __future__ import annotations

import datetime as dt

from bastion.cli.apps import service_app
from bastion.cli.output import JsonOption, console, emit_object, emit_table, fail, progress

__all__ = ["tuf_refresh_cmd"]


@service_app.command("tuf-refresh")
def tuf_refresh_cmd(as_json: JsonOption = False) -> None:
    """Re-sign the TUF timestamp (and snapshot, targets, root) of every device group that needs it."""
    from bastion.service.config import Settings
    from bastion.service.errors import ServiceError
    from bastion.service.tuf import list_groups, refresh_all

    try:
        settings = Settings.from_env()
    except ServiceError as exc:
        fail(exc.detail, hint="check BASTION_HOME and BASTION_MASTER_KEY")
    groups = list_groups(settings)
    progress(f"{len(groups)} device group repositories under {settings.home}")
    rows: list[dict[str, object]] = []

    def on_group(group_id: str, refreshed: bool) -> None:
        progress(f"group {group_id}: {'re-signed' if refreshed else 'still fresh'}")
        rows.append({"group_id": group_id, "refreshed": refreshed})

    try:
        count = refresh_all(settings, now=dt.datetime.now(dt.UTC), on_group=on_group)
    except ServiceError as exc:
        fail(
            exc.detail,
            hint="the online keys open only under the master key that created them; check BASTION_MASTER_KEY",
        )
    if as_json:
        emit_object({"groups": len(rows), "refreshed": count, "results": rows}, as_json=True)
        return
    emit_table(rows, ["group_id", "refreshed"], as_json=False, title="TUF refresh")
    console.print(f"{count} of {len(rows)} group(s) re-signed")
