"""The Typer command groups. Command modules register themselves on these."""

from __future__ import annotations

import typer

__all__ = [
    "app",
    "app_app",
    "deployment_app",
    "device_app",
    "device_group_app",
    "fleet_app",
    "image_app",
    "keys_app",
    "os_app",
    "product_app",
    "service_app",
    "tenant_app",
    "token_app",
    "vendor_app",
]


def _group(help_text: str) -> typer.Typer:
    return typer.Typer(help=help_text, no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)


app = _group("Bastion: secure connected devices for their whole life.")
vendor_app = _group("Silicon vendor: CA and boot-signing keys.")
device_app = _group("Emulated devices (manufacture, flash, run) and the fleet (claim, list, show, revoke).")
os_app = _group("OS images: build and publish.")
service_app = _group("Run and administer the Security Service (local, on the service host).")
tenant_app = _group("Tenants and their CA.")
token_app = _group("Operator API tokens.")
app_app = _group("Apps: validate manifests and build signed app images.")
keys_app = _group("App-signing keys (created and kept on the operator's machine).")
product_app = _group("Products (each comes with five default device groups).")
device_group_app = _group("Device groups: update policy, OS feed and maintenance window.")
image_app = _group("App images on the service (signed by a registered app-signing key).")
deployment_app = _group("Deployments: sets of app images for a device group, and their progress.")

app.add_typer(vendor_app, name="vendor")
app.add_typer(device_app, name="device")
app.add_typer(os_app, name="os")
app.add_typer(service_app, name="service")
app.add_typer(tenant_app, name="tenant")
app.add_typer(token_app, name="token")
app.add_typer(app_app, name="app")
app.add_typer(keys_app, name="keys")
app.add_typer(product_app, name="product")
app.add_typer(device_group_app, name="device-group")
app.add_typer(image_app, name="image")
app.add_typer(deployment_app, name="deployment")

# --- staged rollouts (rollouts, issue 8) ---
rollout_app = _group("Staged rollouts of deployments and OS promotions: show, resume, abort.")
app.add_typer(rollout_app, name="rollout")
__all__ += ["rollout_app"]
fleet_app = _group("The fleet as a whole: simulation (and health, where the service offers it).")
app.add_typer(fleet_app, name="fleet")
profile_app = _group("Named logins (profiles) for several services or tenants: list, show, use.")
app.add_typer(profile_app, name="profile")
__all__ += ["profile_app"]
