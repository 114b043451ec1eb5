"""Operator commands for a device group's attestation appraisal policy, over the service's HTTP API.

``bastion device-group appraisal show GROUP`` lists the boot rules and whether
the group enforces each; ``set GROUP --relax RULE ...`` (admin) replaces the
set of relaxed rules, ``set GROUP --enforce-all`` withdraws every relaxation;
``list`` shows the groups that relax a rule. Every change is audited by the
service. They use the login saved by ``bastion login``.

Example::

    bastion device-group appraisal set "Thermostat/Development" --relax debug --relax sandbox
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from bastion.cli._client import ServiceClient
from bastion.cli.apps import device_group_app
from bastion.cli.output import JsonOption, console, emit_object, emit_table, fail

__all__ = ["appraisal_app", "appraisal_list_cmd", "appraisal_set_cmd", "appraisal_show_cmd"]

RULE_COLUMNS = ("rule", "enforced", "relaxable", "claim")
POLICY_COLUMNS = ("group_id", "group_name", "relaxed", "updated_at", "updated_by")

appraisal_app = typer.Typer(
    help="Attestation appraisal: which boot rules a device group enforces (secboot, debug, rollback, ...).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
device_group_app.add_typer(appraisal_app, name="appraisal")

GroupRef = Annotated[str, typer.Argument(help='Group id, or "PRODUCT/GROUP" (e.g. "Lamp/Development").')]


def _path(group: str) -> str:
    return f"/appraisal/groups/{group}"


def _show(policy: dict[str, Any], *, as_json: bool, title: str) -> None:
    if as_json:
        emit_object(policy, as_json=True)
        return
    emit_table(policy["rules"], RULE_COLUMNS, as_json=False, title=f"{title}: {policy['group_name']}")


@appraisal_app.command("show")
def appraisal_show_cmd(group: GroupRef, as_json: JsonOption = False) -> None:
    """Show which appraisal rules a device group enforces."""
    with ServiceClient.from_saved_login() as client:
        policy = client.get_json(_path(group))
    _show(policy, as_json=as_json, title="appraisal")


@appraisal_app.command("set")
def appraisal_set_cmd(
    group: GroupRef,
    *,
    relax: Annotated[
        list[str] | None,
        typer.Option("--relax", help="A rule to relax (repeat): secboot, debug, rollback or sandbox."),
    ] = None,
    enforce_all: Annotated[bool, typer.Option("--enforce-all", help="Withdraw every relaxation.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Replace the set of rules a device group relaxes (admin; audited)."""
    if enforce_all and relax:
        fail("give either --relax RULE or --enforce-all, not both")
    if not enforce_all and not relax:
        fail("nothing to change", hint="give --relax RULE (repeat it) or --enforce-all")
    with ServiceClient.from_saved_login() as client:
        policy = client.request("PUT", _path(group), json_body={"relax": list(relax or [])}).json()
    _show(policy, as_json=as_json, title="appraisal updated")


@appraisal_app.command("list")
def appraisal_list_cmd(
    limit: Annotated[int, typer.Option("--limit", min=1, max=500, help="Groups per page.")] = 100,
    offset: Annotated[int, typer.Option("--offset", min=0, help="Skip this many groups.")] = 0,
    as_json: JsonOption = False,
) -> None:
    """List your tenant's device groups that relax an appraisal rule."""
    with ServiceClient.from_saved_login() as client:
        page = client.get_json("/appraisal/groups", limit=limit, offset=offset)
    rows = [{**item, "relaxed": ",".join(item["relaxed"])} for item in page["items"]]
    if as_json:
        emit_object({"items": page["items"], "more": page["more"], "offset": offset, "limit": limit}, as_json=True)
        return
    emit_table(rows, POLICY_COLUMNS, as_json=False, title="groups with relaxed appraisal rules")
    if page["more"]:
        console.print(f"output cut at {limit} groups; see more with --offset {offset + limit}")
