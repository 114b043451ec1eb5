"""The live progress view of ``bastion deployment show --watch``.

It polls the deployment every ``interval`` seconds and redraws one view: the
rollout's state, each stage's installed/devices bar and health, the halt
reason, and the devices per state. It ends when the deployment is finished
(:func:`finished`), or on Ctrl-C. Fetching and sleeping are parameters, so a
test drives it without a service or a clock.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from bastion.cli.output import inert_text

__all__ = ["MAX_INTERVAL_S", "MIN_INTERVAL_S", "finished", "render", "watch"]

#: Bounds of ``--interval`` (seconds between two polls).
MIN_INTERVAL_S = 0.2
MAX_INTERVAL_S = 3600.0
#: Rollout states after which nothing changes by itself.
END_STATES = frozenset({"completed", "halted", "aborted"})
#: Width of a stage's progress bar.
BAR_WIDTH = 20


def finished(deployment: Mapping[str, Any]) -> str | None:
    """Why watching can stop (``completed``, ``halted``, ``aborted``), or ``None`` while it goes on.

    A deployment without a rollout is complete when no device is pending or deferred.
    """
    rollout = deployment.get("rollout")
    if rollout is not None:
        state = str(rollout.get("state"))
        return state if state in END_STATES else None
    counts = deployment.get("counts", {})
    return "completed" if not counts.get("pending") and not counts.get("deferred") else None


def _percent(value: object) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:g}%"
    return inert_text(f"{value}%")


def _health(stage: Mapping[str, Any]) -> str:
    parts = []
    for h in stage.get("health", []):
        rate = h.get("crash_free_rate")
        shown = "no data" if rate is None else f"{rate * 100:.1f}% crash-free"
        parts.append(f"{h.get('component_id') or 'OS'}@{h.get('version')}: {shown}")
    return "; ".join(parts)


def render(deployment: Mapping[str, Any]) -> Group:
    """The view of one poll of ``deployment``."""
    rollout = deployment.get("rollout")
    head = Text(inert_text(f"deployment {deployment.get('id')} to group {deployment.get('group_id')}"), style="bold")
    parts: list[Any] = [head]
    if rollout is not None:
        state = str(rollout.get("state"))
        parts.append(Text(inert_text(f"rollout {rollout.get('id')}: {state}, stage {rollout.get('stage')}")))
        if rollout.get("halt_reason"):
            parts.append(Text(f"halted: {inert_text(str(rollout['halt_reason']))}", style="red"))
        stages = Table(show_edge=False, box=None, padding=(0, 1))
        for column in ("stage", "percent", "progress", "installed", "health"):
            stages.add_column(column, no_wrap=column != "health", overflow="fold")
        for stage in rollout.get("stages", []):
            devices, installed = int(stage.get("devices", 0)), int(stage.get("installed", 0))
            marker = ">" if stage.get("current") else " "
            stages.add_row(  # cells from the service are Text, never read as rich markup
                Text(inert_text(f"{marker}{stage.get('index')}")),
                Text(_percent(stage.get("percent", 0))),
                ProgressBar(total=max(devices, 1), completed=installed, width=BAR_WIDTH),
                Text(f"{installed}/{devices}"),
                Text(inert_text(_health(stage))),
            )
        parts.append(stages)
    counts = deployment.get("counts", {})
    parts.append(Text(inert_text("devices: " + ", ".join(f"{k} {v}" for k, v in counts.items()))))
    return Group(*parts)


def watch(
    fetch: Callable[[], Mapping[str, Any]],
    *,
    interval: float,
    sleep: Callable[[float], None],
    console: Console,
) -> tuple[str, Mapping[str, Any]]:
    """Redraw ``fetch()`` every ``interval`` seconds until it is finished; return why and the last poll.

    Raises:
        KeyboardInterrupt: Ctrl-C (the view is left as it was last drawn).
    """
    shown = fetch()
    with Live(render(shown), console=console, auto_refresh=False, transient=False) as live:
        while (done := finished(shown)) is None:
            sleep(interval)
            shown = fetch()
            live.update(render(shown), refresh=True)
    return done, shown
