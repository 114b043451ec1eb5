"""Which devices belong to a stage of a staged rollout, computed the same way on the device and the service.

A staged rollout offers a new release to a growing share of a device group's
devices (``--stages 1,10,50,100``). Each device falls at a fixed point of
``[0, BASIS_POINTS)``, derived from its device ID and the rollout's seed, so:

- the same device is in the same stages on every check-in, and the stages nest
  (a device in the 10 % stage is also in the 50 % stage);
- a new rollout (a new seed) picks a different first 1 %, so the same unlucky
  devices are not always the canaries;
- the device can decide from signed TUF metadata alone, and the service can
  count the same set without asking the devices.

Example:
    >>> point = rollout_point("ab" * 32, "seed-1")
    >>> 0 <= point < BASIS_POINTS
    True
    >>> in_stage("ab" * 32, "seed-1", percent_bp=BASIS_POINTS)
    True
    >>> in_stage("ab" * 32, "seed-1", percent_bp=0)
    False
"""

from __future__ import annotations

import hashlib

__all__ = ["BASIS_POINTS", "MAX_SEED_CHARS", "in_stage", "percent_to_bp", "rollout_point"]

#: A stage's share is given in basis points: 10,000 is the whole group.
BASIS_POINTS = 10_000
#: Bound on a rollout seed (it travels in signed TUF metadata).
MAX_SEED_CHARS = 64
_DOMAIN = b"bastion-rollout-v1\x00"


def rollout_point(device_id: str, seed: str) -> int:
    """The device's fixed point in ``[0, BASIS_POINTS)`` for the rollout with ``seed``.

    SHA-256 over a domain tag, the seed and the device ID; the first 8 bytes,
    big-endian, modulo :data:`BASIS_POINTS` (the bias of the modulo is below 10^-15).

    Raises:
        ValueError: the seed is empty or longer than :data:`MAX_SEED_CHARS`.
    """
    if not seed or len(seed) > MAX_SEED_CHARS:
        raise ValueError(f"a rollout seed has 1 to {MAX_SEED_CHARS} characters")
    digest = hashlib.sha256(_DOMAIN + seed.encode() + b"\x00" + device_id.lower().encode()).digest()
    return int.from_bytes(digest[:8], "big") % BASIS_POINTS


def in_stage(device_id: str, seed: str, *, percent_bp: int) -> bool:
    """Whether the device is among the first ``percent_bp`` basis points of the rollout."""
    return rollout_point(device_id, seed) < percent_bp


def percent_to_bp(percent: float) -> int:
    """A stage's percentage (``0 < p <= 100``, as in ``--stages 1,10,50,100``) in basis points.

    Raises:
        ValueError: outside ``(0, 100]``, or finer than a basis point.
    """
    if not 0 < percent <= 100:  # also refuses NaN
        raise ValueError(f"a stage is a percentage in (0, 100] with at most two decimals; got {percent}")
    bp = round(percent * 100)
    if bp < 1 or abs(bp - percent * 100) > 1e-6:  # bp < 1: a tiny p would round to a stage of no device
        raise ValueError(f"a stage is a percentage in (0, 100] with at most two decimals; got {percent}")
    return bp
