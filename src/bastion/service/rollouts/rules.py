"""A rollout's plan as data: its stages, its soak and its halt rules, validated.

Example:
    >>> plan = parse_plan([1, 10, 50, 100], soak_seconds=1800, halt=None)
    >>> plan.stages_bp
    (100, 1000, 5000, 10000)
    >>> plan.halt.min_sample
    10
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from bastion.images.rollout import BASIS_POINTS, percent_to_bp
from bastion.service.errors import InvalidRequest

__all__ = [
    "DEFAULT_CRASH_DROP_POINTS",
    "DEFAULT_MIN_SAMPLE",
    "MAX_SOAK_SECONDS",
    "MAX_STAGES",
    "HaltRules",
    "RolloutPlan",
    "RolloutState",
    "parse_plan",
]

#: Bound on the number of stages of one rollout.
MAX_STAGES = 10
#: Bound on a stage's soak (one week).
MAX_SOAK_SECONDS = 7 * 24 * 3600
#: Bound on a rule's minimum sample and install-failure threshold.
MAX_SAMPLE = 1_000_000
#: The crash-free rate may drop this many points below the previous release's before a stage halts.
DEFAULT_CRASH_DROP_POINTS = 5.0
#: A rule looks at a stage only once this many of its devices ran the release.
DEFAULT_MIN_SAMPLE = 10


class RolloutState(enum.StrEnum):
    """Where a rollout is (docs/adr/0017)."""

    RUNNING = "running"
    SOAKING = "soaking"
    HALTED = "halted"
    COMPLETED = "completed"
    ABORTED = "aborted"


#: States in which the new release is offered to the current stage and the gate evaluates.
LIVE_STATES = frozenset({RolloutState.RUNNING.value, RolloutState.SOAKING.value})
#: States in which the targets still carry the rollout (a halted or aborted one offers the fallback to all).
STAGED_STATES = LIVE_STATES | {RolloutState.HALTED.value, RolloutState.ABORTED.value}


@dataclass(frozen=True)
class HaltRules:
    """When a stage halts by itself. ``None`` switches a threshold rule off.

    Attributes:
        crash_drop_points: halt when the stage's crash-free device rate is more than this many
            percentage points below the previous release's on the same group.
        new_bucket: halt when a crash bucket first appears in this release.
        install_failures: halt when more than this many devices of the stage failed or refused
            the install.
        min_sample: a rule looks at a stage only once at least this many of its devices ran
            (crash rules) or tried (install rule) the release.
    """

    crash_drop_points: float | None = DEFAULT_CRASH_DROP_POINTS
    new_bucket: bool = True
    install_failures: int | None = None
    min_sample: int = DEFAULT_MIN_SAMPLE

    def to_json(self) -> dict[str, Any]:
        """The stored form."""
        return asdict(self)

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> HaltRules:
        """Read the stored form (written by :meth:`to_json`)."""
        drop, failures = value.get("crash_drop_points"), value.get("install_failures")
        return cls(
            crash_drop_points=None if drop is None else float(drop),
            new_bucket=bool(value.get("new_bucket", True)),
            install_failures=None if failures is None else int(failures),
            min_sample=int(value.get("min_sample", DEFAULT_MIN_SAMPLE)),
        )


@dataclass(frozen=True)
class RolloutPlan:
    """A validated rollout request."""

    stages_bp: tuple[int, ...]
    soak_seconds: int
    halt: HaltRules = field(default_factory=HaltRules)


def _bad(message: str) -> InvalidRequest:
    return InvalidRequest(message, code="invalid_rollout")


def parse_plan(stages: Sequence[float], *, soak_seconds: int, halt: Mapping[str, Any] | None) -> RolloutPlan:
    """Validate stages (percent of the group, increasing, the last 100), the soak and the halt rules.

    Raises:
        InvalidRequest: (``invalid_rollout``) with what is wrong.
    """
    if not 1 <= len(stages) <= MAX_STAGES:
        raise _bad(f"a rollout has 1 to {MAX_STAGES} stages; got {len(stages)}")
    try:
        bps = tuple(percent_to_bp(float(s)) for s in stages)
    except (ValueError, TypeError) as exc:
        raise _bad(str(exc)) from None
    if any(b <= a for a, b in itertools.pairwise(bps)):
        raise _bad("stages must increase (e.g. 1,10,50,100)")
    if bps[-1] != BASIS_POINTS:
        raise _bad("the last stage must be 100 (the whole group), or the rollout never completes")
    if not 0 <= soak_seconds <= MAX_SOAK_SECONDS:
        raise _bad(f"the soak is 0 to {MAX_SOAK_SECONDS} seconds; got {soak_seconds}")
    rules = HaltRules()
    if halt is not None:
        unknown = set(halt) - {"crash_drop_points", "new_bucket", "install_failures", "min_sample"}
        if unknown:
            raise _bad(f"unknown halt rule {sorted(unknown)[0][:40]!r}")
        drop = halt.get("crash_drop_points", rules.crash_drop_points)
        failures = halt.get("install_failures", rules.install_failures)
        sample = halt.get("min_sample", rules.min_sample)
        if drop is not None and (not isinstance(drop, int | float) or isinstance(drop, bool) or not 0 <= drop <= 100):
            raise _bad("crash_drop_points is a number of percentage points in [0, 100], or null")
        if failures is not None and (
            not isinstance(failures, int) or isinstance(failures, bool) or not 0 <= failures <= MAX_SAMPLE
        ):
            raise _bad(f"install_failures is a device count in [0, {MAX_SAMPLE}], or null")
        if not isinstance(sample, int) or isinstance(sample, bool) or not 1 <= sample <= MAX_SAMPLE:
            raise _bad(f"min_sample is a device count in [1, {MAX_SAMPLE}]")
        new_bucket = halt.get("new_bucket", rules.new_bucket)
        if not isinstance(new_bucket, bool):
            raise _bad("new_bucket is true or false")
        rules = HaltRules(
            crash_drop_points=None if drop is None else float(drop),
            new_bucket=new_bucket,
            install_failures=failures,
            min_sample=sample,
        )
    return RolloutPlan(stages_bp=bps, soak_seconds=soak_seconds, halt=rules)
