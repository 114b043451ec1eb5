"""Errors of the fleet simulator.

::

    SimError                      the simulator cannot go on
    ├── SimSetupError             bad input: the vendor directory, the OS image, an option
    └── SimServiceError           the service refused or failed a setup step (claim, assign, ...)

A refusal *during* a round (an attestation refused, a report refused) is not an
exception: it is counted in the round's figures, as a real device would log it
and go on.
"""

from __future__ import annotations

__all__ = ["SimError", "SimServiceError", "SimSetupError"]


class SimError(Exception):
    """Base of the simulator's errors."""


class SimSetupError(SimError):
    """The simulator's input is unusable (vendor directory, OS image, crash rates)."""


class SimServiceError(SimError):
    """The service refused or failed a setup step."""

    def __init__(self, step: str, status: int, code: str, detail: str = "") -> None:
        super().__init__(f"{step}: HTTP {status} {code}" + (f": {detail}" if detail else ""))
        self.step, self.status, self.code, self.detail = step, status, code, detail
