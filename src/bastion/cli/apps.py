"""The Typer command groups. Command modules register themselves on these."""

from __future__ import annotations

import typer

__all__ = ["app", "device_app", "os_app", "service_app", "tenant_app", "token_app", "vendor_app"]

_settings = {"no_args_is_help": True, "pretty_exceptions_enable": False, "add_completion": False}

app = typer.Typer(help="Bastion: secure connected devices for their whole life.", **_settings)  # type: ignore[arg-type]
vendor_app = typer.Typer(help="Silicon vendor: CA and boot-signing keys.", **_settings)  # type: ignore[arg-type]
device_app = typer.Typer(
    help="Emulated devices (manufacture, flash, run) and the fleet (claim, list, show, revoke).", **_settings
)  # type: ignore[arg-type]
os_app = typer.Typer(help="OS images: build and publish.", **_settings)  # type: ignore[arg-type]
service_app = typer.Typer(help="Run and administer the Security Service (local, on the service host).", **_settings)  # type: ignore[arg-type]
tenant_app = typer.Typer(help="Tenants and their CA.", **_settings)  # type: ignore[arg-type]
token_app = typer.Typer(help="Operator API tokens.", **_settings)  # type: ignore[arg-type]

app.add_typer(vendor_app, name="vendor")
app.add_typer(device_app, name="device")
app.add_typer(os_app, name="os")
app.add_typer(service_app, name="service")
app.add_typer(tenant_app, name="tenant")
app.add_typer(token_app, name="token")
