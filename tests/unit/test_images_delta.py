"""Delta OS updates: round trip per method on real OS images; every failure raises DeltaError and leaves no output."""

from __future__ import annotations

import bz2
import hashlib
import io
import struct
from pathlib import Path

import detools
import pytest
import zstandard

from bastion.crypto.keys import PrivateKey, generate_private_key
from bastion.images.delta import (
    DEFAULT_DELTA_METHOD,
    DeltaError,
    DeltaInfo,
    DeltaLimits,
    DeltaMethod,
    apply_delta,
    make_delta,
)
from bastion.images.errors import ImageError
from bastion.images.os_build import build_os_image
from bastion.images.package import verify_image

METHODS = list(DeltaMethod)


@pytest.fixture(scope="module")
def key() -> PrivateKey:
    return generate_private_key()


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory, key: PrivateKey) -> tuple[Path, Path]:
    """Two real, consecutive OS images: 1.0.0 and 1.1.0 with a changed runtime (a fault file added)."""
    work = tmp_path_factory.mktemp("images")
    old = build_os_image(work / "old.img", "1.0.0", 1, key).path
    new = build_os_image(work / "new.img", "1.1.0", 2, key, fault="fail-at-start").path
    return old, new


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def test_default_is_zstd() -> None:
    assert DEFAULT_DELTA_METHOD is DeltaMethod.ZSTD
    assert issubclass(DeltaError, ImageError)


@pytest.mark.parametrize("method", METHODS)
def test_round_trip(tmp_path: Path, images: tuple[Path, Path], key: PrivateKey, method: DeltaMethod) -> None:
    old, new = images
    info = make_delta(old, new, tmp_path / "p.patch", method=method)
    assert info == DeltaInfo(method, sha(old), sha(new), (tmp_path / "p.patch").stat().st_size)
    assert info.size < new.stat().st_size // 10  # a real delta, not a copy
    out = tmp_path / "rebuilt.img"
    apply_delta(old, tmp_path / "p.patch", out, method=method, expected_sha256=info.new_sha256)
    assert out.read_bytes() == new.read_bytes()
    with out.open("rb") as stream:
        assert verify_image(stream, [key.public_key()]).version == "1.1.0"
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("method", METHODS)
def test_corrupted_patch(tmp_path: Path, images: tuple[Path, Path], method: DeltaMethod) -> None:
    old, new = images
    info = make_delta(old, new, tmp_path / "p", method=method)
    patch = bytearray((tmp_path / "p").read_bytes())
    for index in range(len(patch) // 3, len(patch), max(1, len(patch) // 7)):
        patch[index] ^= 0x5A
    (tmp_path / "bad").write_bytes(bytes(patch))
    (tmp_path / "short").write_bytes(bytes(patch[: len(patch) // 2]))
    for name in ("bad", "short"):
        with pytest.raises(DeltaError):
            apply_delta(old, tmp_path / name, tmp_path / "out", method=method, expected_sha256=info.new_sha256)
        assert not (tmp_path / "out").exists()
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("method", METHODS)
def test_wrong_base(tmp_path: Path, images: tuple[Path, Path], method: DeltaMethod) -> None:
    old, new = images
    info = make_delta(old, new, tmp_path / "p", method=method)
    with pytest.raises(DeltaError, match=r"expected SHA-256|malformed"):
        apply_delta(new, tmp_path / "p", tmp_path / "out", method=method, expected_sha256=info.new_sha256)
    other = bytearray(old.read_bytes())
    other[len(other) // 2] ^= 0xFF
    (tmp_path / "other").write_bytes(bytes(other))
    with pytest.raises(DeltaError):
        apply_delta(
            tmp_path / "other", tmp_path / "p", tmp_path / "out", method=method, expected_sha256=info.new_sha256
        )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("method", METHODS)
def test_wrong_expected_hash_keeps_an_existing_output(
    tmp_path: Path, images: tuple[Path, Path], method: DeltaMethod
) -> None:
    old, new = images
    make_delta(old, new, tmp_path / "p", method=method)
    out = tmp_path / "out"
    out.write_bytes(b"previous")
    with pytest.raises(DeltaError, match="expected SHA-256"):
        apply_delta(old, tmp_path / "p", out, method=method, expected_sha256=sha(old))
    assert out.read_bytes() == b"previous"
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("method", [DeltaMethod.ZSTD, DeltaMethod.BSDIFF4])
def test_patch_for_another_method(tmp_path: Path, images: tuple[Path, Path], method: DeltaMethod) -> None:
    old, new = images
    info = make_delta(old, new, tmp_path / "p", method=method)
    other = DeltaMethod.BSDIFF4 if method is DeltaMethod.ZSTD else DeltaMethod.DETOOLS_SEQUENTIAL
    with pytest.raises(DeltaError):
        apply_delta(old, tmp_path / "p", tmp_path / "out", method=other, expected_sha256=info.new_sha256)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("bad", ["", "00" * 31, "G" * 64, "AB" * 32])
def test_expected_hash_must_be_lowercase_hex(tmp_path: Path, images: tuple[Path, Path], bad: str) -> None:
    old, new = images
    make_delta(old, new, tmp_path / "p")
    with pytest.raises(DeltaError, match="lowercase hex"):
        apply_delta(old, tmp_path / "p", tmp_path / "out", method=DEFAULT_DELTA_METHOD, expected_sha256=bad)


def test_unknown_method_and_missing_files(tmp_path: Path, images: tuple[Path, Path]) -> None:
    old, new = images
    info = make_delta(old, new, tmp_path / "p")
    with pytest.raises(DeltaError, match="unknown delta method"):
        apply_delta(old, tmp_path / "p", tmp_path / "o", method="xdelta9", expected_sha256=info.new_sha256)  # type: ignore[arg-type]
    with pytest.raises(DeltaError, match="cannot read the patch"):
        apply_delta(old, tmp_path / "nope", tmp_path / "o", method=info.method, expected_sha256=info.new_sha256)
    with pytest.raises(DeltaError, match="cannot read the old image"):
        make_delta(tmp_path / "nope", new, tmp_path / "p2")
    assert not (tmp_path / "o").exists()
    assert not (tmp_path / "p2").exists()


@pytest.mark.parametrize("method", METHODS)
def test_bounds(tmp_path: Path, images: tuple[Path, Path], method: DeltaMethod) -> None:
    old, new = images
    info = make_delta(old, new, tmp_path / "p", method=method)
    small_out = DeltaLimits(max_output_bytes=new.stat().st_size - 1)
    small_patch = DeltaLimits(max_patch_bytes=info.size - 1)
    small_old = DeltaLimits(max_old_bytes=old.stat().st_size - 1)
    for limits, message in ((small_out, "over its"), (small_patch, "patch is over"), (small_old, "old image is over")):
        with pytest.raises(DeltaError, match=message):
            apply_delta(
                old, tmp_path / "p", tmp_path / "out", method=method, expected_sha256=info.new_sha256, limits=limits
            )
        assert not (tmp_path / "out").exists()
    with pytest.raises(DeltaError, match="patch is over"):
        make_delta(old, new, tmp_path / "p2", method=method, limits=small_patch)
    assert not (tmp_path / "p2").exists()


# -- hostile patches: declared sizes and bombs are refused before memory is spent ------------


def test_zstd_declared_size_and_window_bounds(tmp_path: Path, images: tuple[Path, Path]) -> None:
    old, _ = images
    limits = DeltaLimits(max_output_bytes=1024 * 1024)
    bomb = zstandard.ZstdCompressor(level=3).compress(bytes(8 * 1024 * 1024))
    (tmp_path / "bomb").write_bytes(bomb)
    with pytest.raises(DeltaError, match="declares an output over its bound"):
        apply_delta(
            old, tmp_path / "bomb", tmp_path / "out", method=DeltaMethod.ZSTD, expected_sha256="0" * 64, limits=limits
        )
    unsized = zstandard.ZstdCompressor(write_content_size=False).compress(b"x" * 100)
    (tmp_path / "unsized").write_bytes(unsized)
    with pytest.raises(DeltaError, match="or none"):
        apply_delta(old, tmp_path / "unsized", tmp_path / "out", method=DeltaMethod.ZSTD, expected_sha256="0" * 64)
    # A hand-made frame header (RFC 8878 3.1.1.1): 2-byte content size 300, window descriptor 2**30.
    wide = b"\x28\xb5\x2f\xfd" + bytes([0x40, 20 << 3]) + (300 - 256).to_bytes(2, "little") + b"\x01\x00\x00"
    assert zstandard.get_frame_parameters(wide).window_size == 2**30
    (tmp_path / "wide").write_bytes(wide)
    with pytest.raises(DeltaError, match="window"):
        apply_delta(
            old, tmp_path / "wide", tmp_path / "out", method=DeltaMethod.ZSTD, expected_sha256="0" * 64, limits=limits
        )
    assert not (tmp_path / "out").exists()


def _bsdiff_patch(control: bytes, diff: bytes, extra: bytes, new_size: int) -> bytes:
    blocks = [bz2.compress(control), bz2.compress(diff), bz2.compress(extra)]
    return b"BSDIFF40" + struct.pack("<qqq", len(blocks[0]), len(blocks[1]), new_size) + b"".join(blocks)


def test_bsdiff4_declared_size_and_bz2_bomb(tmp_path: Path, images: tuple[Path, Path]) -> None:
    old, _ = images
    limits = DeltaLimits(max_output_bytes=1024 * 1024)
    cases = {
        "huge": (_bsdiff_patch(b"", b"", b"", 2**40), "declares an output over its bound"),
        "bomb": (_bsdiff_patch(b"", bytes(64 * 1024 * 1024), b"", 100), "over its bound"),
        "magic": (b"NOTBSDIF" + bytes(40), "not a bsdiff4 patch"),
        "truncated": (_bsdiff_patch(b"", b"", b"", 10)[:40], "truncated|over its bound"),
    }
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DeltaError, match=message):
            apply_delta(
                old,
                tmp_path / name,
                tmp_path / "out",
                method=DeltaMethod.BSDIFF4,
                expected_sha256="0" * 64,
                limits=limits,
            )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("patch_type", "algorithm"), [("sequential", "bsdiff"), ("hdiffpatch", "hdiffpatch")])
def test_detools_declared_size(tmp_path: Path, patch_type: str, algorithm: str) -> None:
    old = b"a" * 1000
    new = bytes(200_000)
    patch = io.BytesIO()
    detools.create_patch(
        io.BytesIO(old), io.BytesIO(new), patch, patch_type=patch_type, algorithm=algorithm, use_mmap=False
    )
    (tmp_path / "old").write_bytes(old)
    (tmp_path / "p").write_bytes(patch.getvalue())
    method = DeltaMethod.DETOOLS_SEQUENTIAL if patch_type == "sequential" else DeltaMethod.DETOOLS_HDIFFPATCH
    with pytest.raises(DeltaError, match="declares"):
        apply_delta(
            tmp_path / "old",
            tmp_path / "p",
            tmp_path / "out",
            method=method,
            expected_sha256=hashlib.sha256(new).hexdigest(),
            limits=DeltaLimits(max_output_bytes=100_000),
        )
    assert not (tmp_path / "out").exists()
