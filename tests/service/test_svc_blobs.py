"""The content-addressed blob store."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest

from bastion.service.blobs.store import BlobStore, BlobTooLargeError, UnknownBlobError


def test_put_and_read_back(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    ref = store.put_stream(io.BytesIO(b"hello"), limit=10)
    assert ref.sha256 == hashlib.sha256(b"hello").hexdigest()
    assert ref.size == 5
    with store.open(ref.sha256) as blob:
        assert blob.read() == b"hello"
    assert store.put_bytes(b"hello") == ref  # idempotent


def test_over_the_limit_stores_nothing(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    with pytest.raises(BlobTooLargeError):
        store.put_stream(io.BytesIO(b"x" * 11), limit=10)
    assert not store.exists(hashlib.sha256(b"x" * 11).hexdigest())
    assert list((tmp_path / "tmp").iterdir()) == []


@pytest.mark.parametrize("bad", ["../../etc/passwd", "A" * 64, "00"])
def test_ids_are_digests_only(tmp_path: Path, bad: str) -> None:
    with pytest.raises(UnknownBlobError):
        BlobStore(tmp_path).path(bad)


def test_unknown_blob(tmp_path: Path) -> None:
    with pytest.raises(UnknownBlobError):
        BlobStore(tmp_path).open("0" * 64)
