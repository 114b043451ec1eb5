"""What an app holds on the chip: its peripherals (exclusively) and, for a real-time app, a core.

Azure Sphere: "only one application on the device can use a resource; installing
an app that requests a resource already in use fails". The app store checks this
at install (:meth:`bastion.os.apps.store.AppStore.install`), before the new
version becomes current:

* every declared peripheral must exist on the chip model (a ``$NAME`` must be in
  its hardware definition, and of the capability's type);
* an app's peripherals must not overlap one another (ISU0 serves one role; a
  block shares pins with GPIOs);
* no other installed app may hold any of them, in any role
  (``Uart ISU0`` in one app and ``I2cMaster ISU0`` in another conflict);
* a ``RealTimeCapable`` app gets one of the model's real-time cores; when all are
  taken it is refused, and the message names the apps on them.

Refusals are :class:`~bastion.os.updates.errors.UpdateRefusedError` with reason
``peripheral`` or ``core``: the update agent records an ``update_refused`` event
and does not retry that target.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from bastion.hw.chipmodel import ChipModel, Peripheral, PeripheralType
from bastion.hw.errors import UnknownPeripheralError
from bastion.images.manifest import AppManifest, Capabilities
from bastion.images.manifest_schema import REALTIME_TYPE
from bastion.os.updates.errors import UpdateRefusedError

__all__ = [
    "CORE_REASON",
    "PERIPHERAL_REASON",
    "Holder",
    "allocate_core",
    "check_peripherals",
    "declared",
    "declared_peripherals",
    "is_realtime",
    "peripheral_issues",
]

PERIPHERAL_REASON = "peripheral"
CORE_REASON = "core"

_FIELDS: tuple[tuple[PeripheralType, str], ...] = (
    (PeripheralType.GPIO, "gpio"),
    (PeripheralType.UART, "uart"),
    (PeripheralType.I2C, "i2c_master"),
    (PeripheralType.SPI, "spi_master"),
    (PeripheralType.ADC, "adc"),
    (PeripheralType.PWM, "pwm"),
)


@dataclass(frozen=True)
class Holder:
    """An installed app, as far as claims go."""

    component_id: str
    name: str
    manifest: AppManifest

    def __str__(self) -> str:
        return f"app {self.name} ({self.component_id})"


def is_realtime(manifest: AppManifest) -> bool:
    """Whether the app runs on a real-time core."""
    return manifest.application_type == REALTIME_TYPE


def declared(capabilities: Capabilities) -> Iterable[tuple[PeripheralType, int | str]]:
    """Every ``(type, manifest value)`` a manifest declares, in manifest order."""
    for kind, attr in _FIELDS:
        for value in getattr(capabilities, attr):
            yield kind, value


def declared_peripherals(manifest: AppManifest, model: ChipModel) -> list[Peripheral]:
    """The peripherals a manifest declares that exist on ``model`` (unknown ones are skipped)."""
    out: list[Peripheral] = []
    for kind, value in declared(manifest.capabilities):
        try:
            peripheral = model.resolve(kind, value)
        except UnknownPeripheralError:
            continue
        if peripheral not in out:
            out.append(peripheral)
    return out


def peripheral_issues(manifest: AppManifest, model: ChipModel) -> list[tuple[str, str]]:
    """``(JSON path, problem)`` for each declared peripheral that ``model`` lacks (for ``app validate``)."""
    issues: list[tuple[str, str]] = []
    capabilities = manifest.raw.get("Capabilities")
    if not isinstance(capabilities, dict):
        return issues
    for kind, _ in _FIELDS:
        values = capabilities.get(kind.value)
        for index, value in enumerate(values if isinstance(values, list) else []):
            try:
                model.resolve(kind, value)
            except UnknownPeripheralError as exc:
                issues.append((f"$.Capabilities.{kind.value}[{index}]", str(exc)))
    return issues


def _resolve_all(manifest: AppManifest, model: ChipModel) -> list[Peripheral]:
    resolved: list[Peripheral] = []
    problems: list[str] = []
    for kind, value in declared(manifest.capabilities):
        try:
            peripheral = model.resolve(kind, value)
        except UnknownPeripheralError as exc:
            problems.append(f"{kind.value} {value}: {exc}")
            continue
        if peripheral not in resolved:
            resolved.append(peripheral)
    if problems:
        raise UpdateRefusedError(PERIPHERAL_REASON, "; ".join(problems[:4]))
    return resolved


def _claim_order(claim: str) -> tuple[bool, int, str]:
    number = claim[4:] if claim.startswith("GPIO") else ""
    return (bool(number), int(number) if number.isdigit() else 0, claim)


def _overlap(first: Peripheral, second: Peripheral) -> str:
    """The shared claims, blocks first, then pins in order."""
    shared = sorted(first.claims & second.claims, key=_claim_order)
    return ", ".join(shared[:3]) + (" ..." if len(shared) > 3 else "")


def check_peripherals(manifest: AppManifest, model: ChipModel, others: Sequence[Holder]) -> list[Peripheral]:
    """Check what ``manifest`` declares against the chip and the other installed apps.

    Args:
        manifest: the app being installed.
        model: the chip model.
        others: every other installed app (not earlier versions of this one).

    Returns:
        The app's peripherals.

    Raises:
        UpdateRefusedError: (``peripheral``) a peripheral does not exist, two of the
            app's own overlap, or another app holds one; the message names both sides.
    """
    mine = _resolve_all(manifest, model)
    for index, first in enumerate(mine):
        for second in mine[index + 1 :]:
            if first.claims & second.claims:
                raise UpdateRefusedError(
                    PERIPHERAL_REASON,
                    f"{first.label} and {second.label} both need {_overlap(first, second)} "
                    "(an ISU serves one role; a block shares its pins with GPIOs)",
                )
    for other in others:
        for theirs in declared_peripherals(other.manifest, model):
            for peripheral in mine:
                if peripheral.claims & theirs.claims:
                    how = "" if theirs == peripheral else f" as {theirs.label}"
                    raise UpdateRefusedError(
                        PERIPHERAL_REASON,
                        f"{peripheral.label} conflicts with {other}, which holds {_overlap(peripheral, theirs)}{how}",
                    )
    return mine


def allocate_core(
    component_id: str, model: ChipModel, assignments: Mapping[str, int], realtime: Sequence[Holder]
) -> int:
    """Pick the real-time core for a real-time app: the one it had, else the lowest free one.

    Args:
        component_id: the app.
        model: the chip model (how many cores).
        assignments: recorded core per component ID.
        realtime: the other installed real-time apps.

    Raises:
        UpdateRefusedError: (``core``) every core runs another app; the message names them.
    """
    holders = {h.component_id: h for h in realtime if h.component_id != component_id}
    in_use = {core: holders[cid] for cid, core in assignments.items() if cid in holders and 0 <= core < model.rt_cores}
    current = assignments.get(component_id)
    if current is not None and 0 <= current < model.rt_cores and current not in in_use:
        return current
    for core in range(model.rt_cores):
        if core not in in_use:
            return core
    taken = "; ".join(f"core {core} runs {holder}" for core, holder in sorted(in_use.items()))
    raise UpdateRefusedError(
        CORE_REASON, f"no free real-time core: the {model.name} chip has {model.rt_cores} ({taken or 'none'})"
    )
