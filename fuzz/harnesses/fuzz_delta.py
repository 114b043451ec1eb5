"""Fuzz delta OS update patches (:func:`bastion.images.delta.apply_delta`), every method.

The input is a selector byte (the method, which TUF names for the device) and
the downloaded patch; the device applies it to the OS image it runs. The patch
comes from the service's TUF repository, so a compromised service or mirror
controls it: it must be refused within its bounds, never crash the agent, and
never leave a partial output.

Documented error: :class:`DeltaError`.

detools-hdiffpatch patches are applied in a child interpreter (its C library
exits the process on some malformed patches: the first finding of this
harness), so they are not fuzzed here, where each would cost a process start;
tests/fuzz/data/hdiffpatch-exits-the-process keeps the patch that showed it, and
tests/fuzz/test_fuzz_regressions.py pins that it is contained.
"""

from __future__ import annotations

import hashlib

from _scratch import scratch_dir

from bastion.images.delta import DeltaError, DeltaLimits, DeltaMethod, apply_delta, make_delta

_DIR = scratch_dir("bastion-fuzz-delta-")
_METHODS = [m for m in DeltaMethod if m is not DeltaMethod.DETOOLS_HDIFFPATCH]
_OLD = b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(64)) * 2
_NEW = _OLD[:1000] + b"a new OS version" + _OLD[1100:] + b"tail"
_LIMITS = DeltaLimits(max_old_bytes=64 * 1024, max_output_bytes=64 * 1024, max_patch_bytes=64 * 1024, chunk_size=4096)
_OLD_PATH, _NEW_PATH, _PATCH, _OUT = (_DIR / n for n in ("old.img", "new.img", "patch", "out.img"))
_OLD_PATH.write_bytes(_OLD)
_NEW_PATH.write_bytes(_NEW)
_EXPECTED = hashlib.sha256(_NEW).hexdigest()


def _seed(index: int) -> bytes:
    make_delta(_OLD_PATH, _NEW_PATH, _PATCH, method=_METHODS[index], limits=_LIMITS)
    return bytes([index]) + _PATCH.read_bytes()


SEEDS: list[bytes] = [_seed(i) for i in range(len(_METHODS))]
MAX_LEN = 16 * 1024


def test_one_input(data: bytes) -> None:
    """Apply ``data[1:]`` to the old image with the method ``data[0]`` selects."""
    if not data:
        return
    method = _METHODS[data[0] % len(_METHODS)]
    _PATCH.write_bytes(data[1:])
    _OUT.unlink(missing_ok=True)
    try:
        apply_delta(_OLD_PATH, _PATCH, _OUT, method=method, expected_sha256=_EXPECTED, limits=_LIMITS)
    except DeltaError:
        if _OUT.exists():
            raise RuntimeError("apply_delta failed but left an output") from None
        return
    if _OUT.read_bytes() != _NEW:
        raise RuntimeError("apply_delta wrote an output with another content")
