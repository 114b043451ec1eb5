"""Delta OS updates: make a patch between two image files, and rebuild the new image on the device.

The default method is zstd with the old image as a raw-content dictionary (what
``zstd --patch-from`` does), through the ``zstandard`` library: the smallest
transfer of the methods measured on this project's own OS images, and the
device needs only the old image plus a bounded window in memory (see
``docs/adr/0003-delta-os-updates.md``). bsdiff4 and detools are kept for
comparison and tests.

:func:`apply_delta` bounds everything before it allocates (patch size, old
image size, declared output size, zstd window), streams the rebuilt image into
a temp file while hashing it, and renames it into place only when its SHA-256
equals ``expected_sha256``: it never leaves a partial or wrong output. The
caller then verifies the image's publisher signature as for a full download,
and falls back to the full image if anything fails. An hdiffpatch patch is
applied in a child interpreter, because its C library exits the process on some
malformed patches.

Example::

    info = make_delta(Path("os-1.0.img"), Path("os-1.1.img"), Path("1.1.patch"))
    apply_delta(Path("os-1.0.img"), Path("1.1.patch"), Path("staged.img"),
                method=info.method, expected_sha256=info.new_sha256)
"""

from __future__ import annotations

import bz2
import enum
import hashlib
import hmac
import io
import lzma
import re
import struct
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import bsdiff4  # type: ignore[import-untyped]
import bsdiff4.core  # type: ignore[import-untyped]
import detools  # type: ignore[import-untyped]
import detools.apply  # type: ignore[import-untyped]
import zstandard

from bastion.images._archive import atomic_output
from bastion.images.errors import ImageError
from bastion.images.fileio import FileTooLargeError, read_bounded
from bastion.images.package import ImageLimits

__all__ = [
    "DEFAULT_DELTA_METHOD",
    "DeltaError",
    "DeltaInfo",
    "DeltaLimits",
    "DeltaMethod",
    "apply_delta",
    "make_delta",
]

_HEX_SHA256 = re.compile(r"^[0-9a-f]{64}$")
#: zstd level used to make patches (the service pays for it once per release pair).
ZSTD_LEVEL = 22
_ZSTD_MIN_WINDOW_LOG = 10
_BSDIFF_MAGIC = b"BSDIFF40"
_BSDIFF_HEADER = 32
_BSDIFF_CONTROL_ENTRY = 24
_OLD_LENGTH = struct.Struct(">Q")


class DeltaError(ImageError):
    """A patch could not be made or applied: malformed, over its bounds, wrong base, or wrong result."""


class DeltaMethod(enum.StrEnum):
    """How a patch is encoded (the value goes into the TUF target's ``delta.method``)."""

    ZSTD = "zstd"
    BSDIFF4 = "bsdiff4"
    DETOOLS_HDIFFPATCH = "detools-hdiffpatch"
    DETOOLS_SEQUENTIAL = "detools-sequential"


DEFAULT_DELTA_METHOD = DeltaMethod.ZSTD


@dataclass(frozen=True)
class DeltaLimits:
    """Bounds on applying a patch; device memory stays within roughly old + 2 x new image."""

    max_old_bytes: int = ImageLimits().max_package_bytes
    max_output_bytes: int = ImageLimits().max_package_bytes
    max_patch_bytes: int = 64 * 1024 * 1024
    chunk_size: int = 1024 * 1024
    #: Bound on the child process that applies an hdiffpatch patch (see _apply_hdiffpatch_isolated).
    isolated_apply_timeout_s: float = 120.0

    @property
    def max_window_bytes(self) -> int:
        """The largest zstd window a patch may ask for: the output bound rounded up to a power of two."""
        return 1 << max(_ZSTD_MIN_WINDOW_LOG, (self.max_output_bytes - 1).bit_length())


@dataclass(frozen=True)
class DeltaInfo:
    """What :func:`make_delta` produced: hashes are lowercase hex SHA-256 of the whole image files."""

    method: DeltaMethod
    old_sha256: str
    new_sha256: str
    size: int


class _BoundedHashingWriter:
    """Writes through to a file, hashing and refusing to go past a bound."""

    def __init__(self, out: BinaryIO, limit: int) -> None:
        self._out = out
        self._limit = limit
        self.size = 0
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.size += len(data)
        if self.size > self._limit:
            raise DeltaError(f"patched output is over its {self._limit}-byte bound")
        self.digest.update(data)
        return self._out.write(data)


def _read_bounded(path: Path, limit: int, what: str) -> bytes:
    try:
        return read_bounded(path, limit)
    except OSError as exc:
        raise DeltaError(f"cannot read the {what}: {exc.strerror}") from exc
    except FileTooLargeError as exc:
        raise DeltaError(f"the {what} is over its {limit}-byte bound") from exc


# -- making patches (service side) ------------------------------------------------


def _zstd_params(old_size: int, new_size: int) -> zstandard.ZstdCompressionParameters:
    window_log = max(_ZSTD_MIN_WINDOW_LOG, (max(old_size, new_size) - 1).bit_length())
    return zstandard.ZstdCompressionParameters.from_level(
        ZSTD_LEVEL,
        source_size=new_size,
        window_log=window_log,
        write_content_size=1,
        write_checksum=0,
        write_dict_id=0,
    )


def _make_zstd(old: bytes, new: bytes) -> bytes:
    dictionary = zstandard.ZstdCompressionDict(old, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
    compressor = zstandard.ZstdCompressor(compression_params=_zstd_params(len(old), len(new)), dict_data=dictionary)
    return compressor.compress(new)


def _make_detools(old: bytes, new: bytes, patch_type: str, algorithm: str) -> bytes:
    out = io.BytesIO()
    detools.create_patch(
        io.BytesIO(old),
        io.BytesIO(new),
        out,
        compression="lzma",
        patch_type=patch_type,
        algorithm=algorithm,
        use_mmap=False,
    )
    return out.getvalue()


_MAKERS: dict[DeltaMethod, Callable[[bytes, bytes], bytes]] = {
    DeltaMethod.ZSTD: _make_zstd,
    DeltaMethod.BSDIFF4: lambda old, new: bytes(bsdiff4.diff(old, new)),
    DeltaMethod.DETOOLS_HDIFFPATCH: lambda old, new: _make_detools(old, new, "hdiffpatch", "hdiffpatch"),
    DeltaMethod.DETOOLS_SEQUENTIAL: lambda old, new: _make_detools(old, new, "sequential", "bsdiff"),
}


def make_delta(
    old: Path,
    new: Path,
    out: Path,
    *,
    method: DeltaMethod = DEFAULT_DELTA_METHOD,
    limits: DeltaLimits = DeltaLimits(),
) -> DeltaInfo:
    """Write a patch that rebuilds ``new`` from ``old`` to ``out`` (atomically), and check that it does.

    Raises:
        DeltaError: an input is unreadable or over its bound, or the patch does
            not rebuild ``new`` (it is then not written).
    """
    method = DeltaMethod(method)
    old_data = _read_bounded(old, limits.max_old_bytes, "old image")
    new_data = _read_bounded(new, limits.max_output_bytes, "new image")
    try:
        patch = _MAKERS[method](old_data, new_data)
    except (ValueError, MemoryError, detools.Error, zstandard.ZstdError, lzma.LZMAError) as exc:
        raise DeltaError(f"cannot make a {method.value} patch: {exc}") from exc
    if len(patch) > limits.max_patch_bytes:
        raise DeltaError(f"the {method.value} patch is over its {limits.max_patch_bytes}-byte bound")
    new_sha256 = hashlib.sha256(new_data).hexdigest()
    check = _BoundedHashingWriter(io.BytesIO(), limits.max_output_bytes)
    _apply_to(method, old_data, patch, check, limits)
    if not hmac.compare_digest(check.digest.hexdigest(), new_sha256):
        raise DeltaError(f"the {method.value} patch does not rebuild the new image")
    with atomic_output(out) as handle:
        handle.write(patch)
    return DeltaInfo(method, hashlib.sha256(old_data).hexdigest(), new_sha256, len(patch))


# -- applying patches (device side) -----------------------------------------------


def _apply_zstd(old: bytes, patch: bytes, out: _BoundedHashingWriter, limits: DeltaLimits) -> None:
    params = zstandard.get_frame_parameters(patch)
    if params.content_size > limits.max_output_bytes:  # also refuses an unknown size (reported as 2**64-1)
        raise DeltaError("zstd patch declares an output over its bound (or none)")
    if params.window_size > limits.max_window_bytes:
        raise DeltaError("zstd patch asks for a window over its bound")
    dictionary = zstandard.ZstdCompressionDict(old, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
    decompressor = zstandard.ZstdDecompressor(dict_data=dictionary, max_window_size=limits.max_window_bytes)
    with decompressor.stream_reader(io.BytesIO(patch)) as reader:
        while chunk := reader.read(limits.chunk_size):
            out.write(chunk)


def _bz2_bounded(data: bytes, limit: int) -> bytes:
    decompressor = bz2.BZ2Decompressor()
    result = decompressor.decompress(data, max_length=limit + 1)
    if len(result) > limit or not decompressor.eof:
        raise DeltaError("bsdiff4 patch block is over its bound or truncated")
    return result


def _apply_bsdiff4(old: bytes, patch: bytes, out: _BoundedHashingWriter, limits: DeltaLimits) -> None:
    # The BSDIFF40 layout (bsdiff4.format): magic, three int64 lengths, then three bz2 blocks.
    # It is parsed here so that every block is decompressed within a bound.
    if len(patch) < _BSDIFF_HEADER or patch[:8] != _BSDIFF_MAGIC:
        raise DeltaError("not a bsdiff4 patch")
    control_len, diff_len, new_size = (bsdiff4.core.decode_int64(patch[i : i + 8]) for i in (8, 16, 24))
    if not 0 <= new_size <= limits.max_output_bytes:
        raise DeltaError("bsdiff4 patch declares an output over its bound")
    if control_len < 0 or diff_len < 0 or _BSDIFF_HEADER + control_len + diff_len > len(patch):
        raise DeltaError("bsdiff4 patch is truncated")
    start = _BSDIFF_HEADER
    control = _bz2_bounded(patch[start : start + control_len], _BSDIFF_CONTROL_ENTRY * (new_size + 1))
    diff = _bz2_bounded(patch[start + control_len : start + control_len + diff_len], new_size)
    extra = _bz2_bounded(patch[start + control_len + diff_len :], new_size)
    if len(control) % _BSDIFF_CONTROL_ENTRY:
        raise DeltaError("bsdiff4 patch has a malformed control block")
    out.write(bytes(bsdiff4.core.patch(old, new_size, control, diff, extra)))


def _apply_detools(old: bytes, patch: bytes, out: _BoundedHashingWriter, limits: DeltaLimits) -> None:
    head = io.BytesIO(patch)
    kind = detools.apply.peek_header_type(head)
    if kind == detools.apply.PATCH_TYPE_HDIFFPATCH:
        _, to_size, patch_size = detools.apply.read_header_hdiffpatch(head)
        if patch_size > limits.max_output_bytes + limits.max_patch_bytes:
            raise DeltaError("detools patch declares a body over its bound")
    elif kind == detools.apply.PATCH_TYPE_SEQUENTIAL:
        _, to_size = detools.apply.read_header_sequential(head)
    else:
        raise DeltaError("detools patch is neither hdiffpatch nor sequential")
    if to_size > limits.max_output_bytes:
        raise DeltaError("detools patch declares an output over its bound")
    if kind == detools.apply.PATCH_TYPE_HDIFFPATCH:
        _apply_hdiffpatch_isolated(old, patch, out, limits)
    else:
        detools.apply_patch(io.BytesIO(old), io.BytesIO(patch), out)


#: The child that applies an hdiffpatch patch: old and patch on stdin (u64 length of
#: old first), the rebuilt image on stdout, at most the bound given in argv.
_HDIFFPATCH_CHILD = """
import io, struct, sys
import detools
data = sys.stdin.buffer.read()
(size,) = struct.unpack(">Q", data[:8])
out = io.BytesIO()
detools.apply_patch(io.BytesIO(data[8 : 8 + size]), io.BytesIO(data[8 + size :]), out)
sys.stdout.buffer.write(out.getbuffer()[: int(sys.argv[1]) + 1])
"""


def _apply_hdiffpatch_isolated(old: bytes, patch: bytes, out: _BoundedHashingWriter, limits: DeltaLimits) -> None:
    # detools' hdiffpatch C library calls exit() on some malformed patches (found by
    # fuzz/harnesses/fuzz_delta.py): in-process, one hostile patch from the service or a
    # mirror would end the update agent at every check-in. A child interpreter contains it.
    cmd = [sys.executable, "-I", "-c", _HDIFFPATCH_CHILD, str(limits.max_output_bytes)]
    try:
        result = subprocess.run(
            cmd,
            input=_OLD_LENGTH.pack(len(old)) + old + patch,
            capture_output=True,
            timeout=limits.isolated_apply_timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise DeltaError(f"the hdiffpatch patch did not apply within {limits.isolated_apply_timeout_s} s") from exc
    if result.returncode != 0:
        raise DeltaError("the detools-hdiffpatch patch is malformed or does not fit the old image")
    out.write(result.stdout)


_APPLIERS: dict[DeltaMethod, Callable[[bytes, bytes, _BoundedHashingWriter, DeltaLimits], None]] = {
    DeltaMethod.ZSTD: _apply_zstd,
    DeltaMethod.BSDIFF4: _apply_bsdiff4,
    DeltaMethod.DETOOLS_HDIFFPATCH: _apply_detools,
    DeltaMethod.DETOOLS_SEQUENTIAL: _apply_detools,
}


def _apply_to(method: DeltaMethod, old: bytes, patch: bytes, out: _BoundedHashingWriter, limits: DeltaLimits) -> None:
    try:
        _APPLIERS[method](old, patch, out, limits)
    except DeltaError:
        raise
    except (
        ValueError,
        EOFError,
        IndexError,
        OverflowError,
        MemoryError,
        OSError,
        SystemError,  # detools' hdiffpatch C extension, on some wrong bases ("returned NULL without an exception")
        detools.Error,
        zstandard.ZstdError,
    ) as exc:
        raise DeltaError(f"the {method.value} patch is malformed or does not fit the old image") from exc


def apply_delta(
    old: Path,
    patch: Path,
    out: Path,
    *,
    method: DeltaMethod,
    expected_sha256: str,
    limits: DeltaLimits = DeltaLimits(),
) -> None:
    """Rebuild the new image from ``old`` and ``patch`` into ``out``, only if its SHA-256 is ``expected_sha256``.

    Args:
        old: the image the device runs (the patch's base).
        patch: the downloaded patch.
        out: where to write the rebuilt image (replaced atomically on success).
        method: the patch's method (the TUF target's ``delta.method``).
        expected_sha256: lowercase hex SHA-256 of the full new image (from TUF).
        limits: bounds on inputs, output and memory.

    Raises:
        DeltaError: unknown method, inputs over their bounds, a malformed patch,
            a patch for another base, or an output with another hash; ``out`` is
            then left as it was (absent if it was absent).
    """
    try:
        method = DeltaMethod(method)
    except ValueError as exc:
        raise DeltaError(f"unknown delta method {str(method)[:40]!r}") from exc
    if not isinstance(expected_sha256, str) or not _HEX_SHA256.match(expected_sha256):
        raise DeltaError("expected_sha256 is not a lowercase hex SHA-256")
    old_data = _read_bounded(old, limits.max_old_bytes, "old image")
    patch_data = _read_bounded(patch, limits.max_patch_bytes, "patch")
    try:
        with atomic_output(out) as handle:
            writer = _BoundedHashingWriter(handle, limits.max_output_bytes)
            _apply_to(method, old_data, patch_data, writer, limits)
            if not hmac.compare_digest(writer.digest.hexdigest(), expected_sha256):
                raise DeltaError("the rebuilt image does not have the expected SHA-256 (wrong base or bad patch)")
    except OSError as exc:
        raise DeltaError(f"cannot write {out.name}: {exc.strerror}") from exc
