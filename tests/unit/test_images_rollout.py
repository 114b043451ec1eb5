"""Stage membership of a staged rollout (bastion.images.rollout): deterministic, nested, fair."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.images.rollout import BASIS_POINTS, in_stage, percent_to_bp, rollout_point

DEVICES = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(4000)]


def test_the_point_is_fixed_and_case_blind() -> None:
    device = DEVICES[0]
    assert rollout_point(device, "s") == rollout_point(device.upper(), "s")
    assert rollout_point(device, "s") == rollout_point(device, "s")


def test_a_new_seed_picks_other_canaries() -> None:
    first = {d for d in DEVICES if in_stage(d, "seed-a", percent_bp=100)}
    second = {d for d in DEVICES if in_stage(d, "seed-b", percent_bp=100)}
    assert first
    assert second
    assert first != second


@pytest.mark.parametrize("percent", [1, 10, 50])
def test_a_stage_takes_about_its_share(percent: int) -> None:
    share = sum(in_stage(d, "seed", percent_bp=percent_to_bp(percent)) for d in DEVICES) / len(DEVICES)
    assert abs(share - percent / 100) < 0.03


@given(st.integers(0, BASIS_POINTS), st.integers(0, BASIS_POINTS), st.sampled_from(DEVICES[:50]))
def test_stages_nest(a: int, b: int, device: str) -> None:
    low, high = sorted((a, b))
    if in_stage(device, "seed", percent_bp=low):
        assert in_stage(device, "seed", percent_bp=high)


@pytest.mark.parametrize("seed", ["", "x" * 65])
def test_a_bad_seed_is_refused(seed: str) -> None:
    with pytest.raises(ValueError, match="seed"):
        rollout_point(DEVICES[0], seed)


@pytest.mark.parametrize("percent", [0, -1, 100.5, 0.001, float("nan")])
def test_a_bad_stage_is_refused(percent: float) -> None:
    with pytest.raises(ValueError, match="percentage"):
        percent_to_bp(percent)


@pytest.mark.parametrize("percent", [1e-9, 1e-300, 5e-324])
def test_a_stage_too_small_for_a_basis_point_is_refused(percent: float) -> None:
    """Red team: a tiny positive percentage passed the (0, 100] check, then rounded to a 0-basis-point stage
    (a stage no device is ever in), because the two-decimal check allows a 1e-6 slack around 0 too."""
    with pytest.raises(ValueError, match="percentage"):
        percent_to_bp(percent)


def test_percentages_in_basis_points() -> None:
    assert [percent_to_bp(p) for p in (1, 10, 50, 100, 0.5)] == [100, 1000, 5000, 10000, 50]
