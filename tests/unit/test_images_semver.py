"""SemVer 2.0.0 precedence, with the examples of section 11."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.images.semver import compare_versions, is_newer, lenient_semver_key, semver_key

# SemVer 2.0.0 section 11.4, in increasing precedence.
SPEC_ORDER = [
    "1.0.0-alpha",
    "1.0.0-alpha.1",
    "1.0.0-alpha.beta",
    "1.0.0-beta",
    "1.0.0-beta.2",
    "1.0.0-beta.11",
    "1.0.0-rc.1",
    "1.0.0",
    "1.9.0",
    "1.10.0",
    "2.0.0",
]


def test_spec_examples_in_order() -> None:
    shuffled = [SPEC_ORDER[i] for i in (5, 0, 10, 3, 8, 1, 9, 2, 7, 4, 6)]
    assert sorted(shuffled, key=semver_key) == SPEC_ORDER
    for older, newer in itertools.pairwise(SPEC_ORDER):
        assert compare_versions(older, newer) == -1
        assert is_newer(newer, older)
        assert not is_newer(older, newer)


def test_build_metadata_is_ignored() -> None:
    assert compare_versions("1.0.0+build.5", "1.0.0") == 0
    assert not is_newer("1.0.0+2", "1.0.0+1")


@pytest.mark.parametrize("bad", ["1.0", "01.0.0", "1.0.0-", "v1.0.0", "1.0.0 ", "1" * 65 + ".0.0"])
def test_not_versions(bad: str) -> None:
    with pytest.raises(ValueError, match="version"):
        semver_key(bad)
    assert lenient_semver_key(bad) < semver_key("0.0.0-0")


@given(
    st.tuples(st.integers(0, 50), st.integers(0, 50), st.integers(0, 50)),
    st.tuples(st.integers(0, 50), st.integers(0, 50), st.integers(0, 50)),
)
def test_release_order_is_numeric(a: tuple[int, int, int], b: tuple[int, int, int]) -> None:
    left, right = ".".join(map(str, a)), ".".join(map(str, b))
    assert compare_versions(left, right) == (a > b) - (a < b)
