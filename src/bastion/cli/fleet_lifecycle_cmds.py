"""``bastion product rename|delete`` and ``bastion device-group rename|delete``.

The service refuses (409) to delete a group in use, a product with groups of its
own or a group in use, and a default group on its own; the error says what uses it.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from bastion.cli._client import ServiceClient
from bastion.cli.apps import device_group_app, product_app
from bastion.cli.output import JsonOption, console, emit_object

__all__ = ["group_delete_cmd", "group_rename_cmd", "product_delete_cmd", "product_rename_cmd"]

ProductArg = Annotated[str, typer.Argument(help="Product id or name.")]
GroupArg = Annotated[str, typer.Argument(help='Group id or "PRODUCT/GROUP".')]
NewName = Annotated[str, typer.Argument(help="The new name.")]
Yes = Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")]


def _confirm(what: str, *, yes: bool) -> None:
    if not yes:
        typer.confirm(f"delete {what}?", abort=True, err=True)


@product_app.command("rename")
def product_rename_cmd(product: ProductArg, new_name: NewName, as_json: JsonOption = False) -> None:
    """Rename a product (contributor)."""
    with ServiceClient.from_saved_login() as client:
        renamed: dict[str, Any] = client.request("PATCH", f"/products/{product}", json_body={"name": new_name}).json()
    renamed.pop("groups", None)
    emit_object(renamed, as_json=as_json, title="product renamed")


@product_app.command("delete")
def product_delete_cmd(product: ProductArg, yes: Yes = False) -> None:
    """Delete a product and its default groups (contributor); refused while any of its groups is in use."""
    _confirm(f"product {product!r} and its device groups", yes=yes)
    with ServiceClient.from_saved_login() as client:
        client.request("DELETE", f"/products/{product}")
    console.print(f"deleted product {product!r}", markup=False)


@device_group_app.command("rename")
def group_rename_cmd(group: GroupArg, new_name: NewName, as_json: JsonOption = False) -> None:
    """Rename a device group (contributor); its id, devices and repository stay. Default groups keep their names."""
    with ServiceClient.from_saved_login() as client:
        renamed = client.request("PATCH", f"/device-groups/{group}", json_body={"name": new_name}).json()
    emit_object(renamed, as_json=as_json, title="device group renamed")


@device_group_app.command("delete")
def group_delete_cmd(group: GroupArg, yes: Yes = False) -> None:
    """Delete a device group (contributor); refused while devices, deployments or rollouts use it."""
    _confirm(f"device group {group!r}", yes=yes)
    with ServiceClient.from_saved_login() as client:
        client.request("DELETE", f"/device-groups/{group}")
    console.print(f"deleted device group {group!r}", markup=False)
