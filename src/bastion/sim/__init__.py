"""Fleet simulator: hundreds of simulated devices speaking the real device protocols to a real service.

It sits between the CLI and the service in the layers (pyproject.toml): it
reaches the service only over HTTP and never imports :mod:`bastion.service`.
See docs/adr/0021-fleet-simulator.md for what it fakes (the boot chain and the
sandbox) and why everything else is the real protocol.
"""

from __future__ import annotations

from bastion.sim.chip import OsImageFacts, SimChip
from bastion.sim.device import CheckIn, CrashModel, SimDevice
from bastion.sim.errors import SimError, SimServiceError, SimSetupError
from bastion.sim.fleet import FleetSimulator, RoundFigures, SimConfig, parse_crash_rates

__all__ = [
    "CheckIn",
    "CrashModel",
    "FleetSimulator",
    "OsImageFacts",
    "RoundFigures",
    "SimChip",
    "SimConfig",
    "SimDevice",
    "SimError",
    "SimServiceError",
    "SimSetupError",
    "parse_crash_rates",
]
