"""Staged rollouts from the command line: options of ``deployment create`` and ``os promote``, and
``bastion deployment show|resume|abort``, ``bastion rollout show|resume|abort`` (docs/adr/0017).

``deployment create``, ``deployment show`` and ``os promote`` live here (moved from
:mod:`bastion.cli.fleet_update_cmds`, arguments unchanged) with the rollout options added.
"""

from __future__ import annotations

import re
import time
from typing import Annotated, Any

import typer

from bastion.cli import deployment_watch
from bastion.cli._client import ServiceClient
from bastion.cli.apps import deployment_app, os_app, rollout_app
from bastion.cli.deployment_watch import MAX_INTERVAL_S, MIN_INTERVAL_S
from bastion.cli.fleet_update_cmds import DEVICE_STATE_COLUMNS, IMAGE_COLUMNS
from bastion.cli.output import JsonOption, console, emit_object, emit_table, err_console, fail

__all__ = [
    "deployment_abort_cmd",
    "deployment_create_cmd",
    "deployment_resume_cmd",
    "deployment_show_cmd",
    "os_promote_cmd",
    "parse_soak",
    "parse_stages",
    "rollout_abort_cmd",
    "rollout_resume_cmd",
    "rollout_show_cmd",
]

_DURATION = re.compile(r"(\d{1,7})([smhd]?)", re.ASCII)
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
STAGE_COLUMNS = ("index", "percent", "devices", "installed", "current", "health")
HISTORY_COLUMNS = ("at", "event", "stage", "percent_bp", "state", "by", "reason")

Stages = Annotated[
    str | None, typer.Option("--stages", help="Percent of the group per stage, e.g. 1,10,50,100 (last 100).")
]
Soak = Annotated[str, typer.Option("--soak", help="How long each stage soaks: 90s, 30m, 2h, 1d.")]
CrashDrop = Annotated[
    float | None,
    typer.Option("--halt-crash-drop", min=0, max=100, help="Halt when the crash-free rate drops more points (5)."),
]
NewBucket = Annotated[
    bool, typer.Option("--halt-new-bucket/--no-halt-new-bucket", help="Halt when a new crash bucket appears.")
]
InstallFailures = Annotated[
    int | None, typer.Option("--halt-install-failures", min=0, help="Halt when more devices fail the install.")
]
MinSample = Annotated[int | None, typer.Option("--min-sample", min=1, help="Devices a rule needs to look (10).")]
RolloutId = Annotated[int, typer.Argument(min=1, help="Rollout id.")]
DeploymentId = Annotated[int, typer.Argument(min=1, help="Deployment id.")]


def _client() -> ServiceClient:
    return ServiceClient.from_saved_login()


def parse_stages(value: str) -> list[float]:
    """``"1,10,50,100"`` as numbers (the service checks the rest)."""
    try:
        return [float(part) for part in value.split(",") if part.strip()]
    except ValueError:
        fail(f"--stages {value[:40]!r} is not a list of percentages", hint="e.g. --stages 1,10,50,100")


def parse_soak(value: str) -> int:
    """``"30m"`` in seconds."""
    match = _DURATION.fullmatch(value.strip())
    if match is None:
        fail(f"--soak {value[:40]!r} is not a duration", hint="e.g. --soak 30m (s, m, h or d)")
    return int(match.group(1)) * _UNITS[match.group(2)]


def _rollout_body(
    stages: str | None,
    *,
    soak: str,
    crash_drop: float | None,
    new_bucket: bool,
    install_failures: int | None,
    min_sample: int | None,
) -> dict[str, Any] | None:
    if stages is None:
        if crash_drop is not None or install_failures is not None or min_sample is not None:
            fail("halt rules need --stages", hint="e.g. --stages 1,10,50,100 --soak 30m")
        return None
    halt: dict[str, Any] = {"new_bucket": new_bucket, "install_failures": install_failures}
    if crash_drop is not None:
        halt["crash_drop_points"] = crash_drop
    if min_sample is not None:
        halt["min_sample"] = min_sample
    return {"stages": parse_stages(stages), "soak_seconds": parse_soak(soak), "halt": halt}


def _emit_rollout(rollout: dict[str, Any], *, title: str) -> None:
    stages, history = rollout.pop("stages"), rollout.pop("history")
    emit_object(rollout, as_json=False, title=title)
    rows = [
        {
            **s,
            "percent": f"{s['percent']:g}%",
            "installed": f"{s['installed']}/{s['devices']}",
            "health": "; ".join(
                f"{h['component_id'] or 'OS'}@{h['version']}: "
                + ("no data" if h["crash_free_rate"] is None else f"{h['crash_free_rate'] * 100:.1f}% crash-free")
                + f" ({h['crashed_devices']}/{h['devices']} crashed)"
                for h in s["health"]
            ),
        }
        for s in stages
    ]
    emit_table(rows, STAGE_COLUMNS, as_json=False, title="stages (installed/devices in stage)")
    emit_table(history, HISTORY_COLUMNS, as_json=False, title="history")


def _emit_deployment(deployment: dict[str, Any], *, as_json: bool, title: str) -> None:
    if as_json:
        emit_object(deployment, as_json=True)
        return
    images, devices, counts = deployment.pop("images"), deployment.pop("devices"), deployment.pop("counts")
    rollout = deployment.pop("rollout", None)
    emit_object(deployment, as_json=False, title=title)
    emit_table(images, IMAGE_COLUMNS[:4], as_json=False, title="images")
    if rollout is not None:
        _emit_rollout(rollout, title=f"rollout {rollout['id']}")
    emit_table([counts], tuple(counts), as_json=False, title="devices per state")
    emit_table(devices, DEVICE_STATE_COLUMNS, as_json=False, title="devices")


@deployment_app.command("create")
def deployment_create_cmd(
    *,
    group: Annotated[str, typer.Option("--group", help='Group id or "PRODUCT/GROUP".')],
    images: Annotated[list[str], typer.Option("--image", help="Image id or SHA-256 (repeat for several apps).")],
    stages: Stages = None,
    soak: Soak = "30m",
    crash_drop: CrashDrop = None,
    new_bucket: NewBucket = True,
    install_failures: InstallFailures = None,
    min_sample: MinSample = None,
    as_json: JsonOption = False,
) -> None:
    """Deploy app images to a device group, at once or in stages that halt by themselves (contributor)."""
    body: dict[str, Any] = {"group": group, "images": images}
    rollout = _rollout_body(
        stages,
        soak=soak,
        crash_drop=crash_drop,
        new_bucket=new_bucket,
        install_failures=install_failures,
        min_sample=min_sample,
    )
    if rollout is not None:
        body["rollout"] = rollout
    with _client() as client:
        created = client.post_json("/deployments", body)
    _emit_deployment(created, as_json=as_json, title="deployment created")


@deployment_app.command("show")
def deployment_show_cmd(
    deployment_id: DeploymentId,
    as_json: JsonOption = False,
    watch: Annotated[
        bool,
        typer.Option(
            "--watch", help="A live progress view until it completes (exit 0), halts or aborts (exit 1), or Ctrl-C."
        ),
    ] = False,
    interval: Annotated[
        float,
        typer.Option("--interval", min=MIN_INTERVAL_S, max=MAX_INTERVAL_S, help="Seconds between two polls (--watch)."),
    ] = 2.0,
) -> None:
    """Show a deployment: its images, its rollout stages (progress, health, halt reason), its devices."""
    with _client() as client:
        if not watch:
            shown = client.get_json(f"/deployments/{deployment_id}")
            _emit_deployment(shown, as_json=as_json, title=f"deployment {deployment_id}")
            return
        if as_json:
            fail("--watch draws a live view; it does not print JSON", hint="drop --json, or poll without --watch")
        try:
            why, _last = deployment_watch.watch(
                lambda: client.get_json(f"/deployments/{deployment_id}"),
                interval=interval,
                sleep=time.sleep,
                console=console,
            )
        except KeyboardInterrupt:
            err_console.print("stopped watching (the deployment goes on)")
            raise typer.Exit(130) from None
    if why != "completed":
        fail(
            f"deployment {deployment_id} {why}",
            hint=f"see `bastion deployment show {deployment_id}`; resume or abort it",
        )
    console.print(f"deployment {deployment_id} completed", markup=False)


@deployment_app.command("resume")
def deployment_resume_cmd(deployment_id: DeploymentId, as_json: JsonOption = False) -> None:
    """Resume a deployment's halted rollout at the stage it halted in (contributor; audited)."""
    with _client() as client:
        shown = client.post_json(f"/deployments/{deployment_id}/resume")
    _emit_deployment(shown, as_json=as_json, title=f"deployment {deployment_id} resumed")


@deployment_app.command("abort")
def deployment_abort_cmd(deployment_id: DeploymentId, as_json: JsonOption = False) -> None:
    """Abort a deployment's rollout: every device of the group goes back to the previous release (audited)."""
    with _client() as client:
        shown = client.post_json(f"/deployments/{deployment_id}/abort")
    _emit_deployment(shown, as_json=as_json, title=f"deployment {deployment_id} aborted")


@os_app.command("promote")
def os_promote_cmd(  # noqa: PLR0917 - one parameter per documented option
    image: Annotated[str, typer.Argument(help="OS version (e.g. 1.2.0) or measurement.")],
    to: Annotated[str, typer.Option("--to", help="The feed to promote to: retail.")] = "retail",
    stages: Stages = None,
    soak: Soak = "30m",
    crash_drop: CrashDrop = None,
    new_bucket: NewBucket = True,
    install_failures: InstallFailures = None,
    min_sample: MinSample = None,
    as_json: JsonOption = False,
) -> None:
    """Promote a retail-eval OS image to retail, at once or in stages per retail group (contributor)."""
    body: dict[str, Any] = {"image": image}
    rollout = _rollout_body(
        stages,
        soak=soak,
        crash_drop=crash_drop,
        new_bucket=new_bucket,
        install_failures=install_failures,
        min_sample=min_sample,
    )
    if rollout is not None:
        body["rollout"] = rollout
    with _client() as client:
        promoted = client.post_json(f"/os-feeds/{to}/images", body)
        feed = _feed_images(client, to)
    if as_json:
        emit_object({**promoted, "feed_images": feed}, as_json=True)
        return
    emit_object(promoted, as_json=False, title=f"OS {promoted['version']} promoted to {to}")
    emit_table(feed, FEED_COLUMNS, as_json=False, title=f"feed {to} now (newest first)")


#: Rows asked for per request while ``os promote`` reads the feed it changed.
FEED_PAGE = 500
#: At most this many OS images are read back to show the feed.
MAX_FEED_IMAGES = 10_000
FEED_COLUMNS = ("version", "security_version", "measurement", "promoted_at", "published_at")


def _on_feed(image: dict[str, Any], feed: str) -> bool:
    if feed == "retail":
        return image.get("feed") == "retail" or image.get("promoted_at") is not None
    return feed == "retail-eval"


def _feed_images(client: ServiceClient, feed: str) -> list[dict[str, Any]]:
    """The feed's images as devices see it now, newest first (the service's ``feed_os_images`` rule).

    ``retail`` holds the images published there and the promoted evaluation images;
    ``retail-eval`` holds every image that is not revoked.
    """
    rows: list[dict[str, Any]] = []
    offset = 0
    while offset < MAX_FEED_IMAGES:
        batch = client.get_json("/os-images", limit=FEED_PAGE, offset=offset)
        rows.extend(i for i in batch if i.get("revoked_at") is None and _on_feed(i, feed))
        offset += len(batch)
        if len(batch) < FEED_PAGE:
            break
    return rows


def _show_rollout(path: str, *, as_json: bool, title: str, body: bool = False) -> None:
    with _client() as client:
        shown = client.post_json(path) if body else client.get_json(path)
    if as_json:
        emit_object(shown, as_json=True)
        return
    _emit_rollout(shown, title=title)


@rollout_app.command("show")
def rollout_show_cmd(rollout_id: RolloutId, as_json: JsonOption = False) -> None:
    """Show a rollout (of a deployment or of an OS promotion to one group)."""
    _show_rollout(f"/rollouts/{rollout_id}", as_json=as_json, title=f"rollout {rollout_id}")


@rollout_app.command("resume")
def rollout_resume_cmd(rollout_id: RolloutId, as_json: JsonOption = False) -> None:
    """Resume a halted rollout at the stage it halted in (contributor; audited)."""
    _show_rollout(f"/rollouts/{rollout_id}/resume", as_json=as_json, title=f"rollout {rollout_id} resumed", body=True)


@rollout_app.command("abort")
def rollout_abort_cmd(rollout_id: RolloutId, as_json: JsonOption = False) -> None:
    """Abort a rollout: the group's devices go back to the previous release (contributor; audited)."""
    _show_rollout(f"/rollouts/{rollout_id}/abort", as_json=as_json, title=f"rollout {rollout_id} aborted", body=True)
