"""OS delta patches for TUF targets, made once per (old, new, method) and cached in the blob store.

The patch itself is a blob; a small index file
``BASTION_HOME/blobs/deltas/<method>/<old sha256>-<new sha256>.json`` maps the
pair to it, so a patch is computed once however often groups are republished.
A pair whose patch cannot be made is skipped: a delta only saves transfer,
the full image is always a target too.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from bastion.images.delta import DEFAULT_DELTA_METHOD, DeltaMethod, make_delta
from bastion.images.errors import ImageError
from bastion.service.blobs.store import BlobStore, BlobTooLargeError, UnknownBlobError
from bastion.service.config import Settings, write_private_file

__all__ = ["DeltaBlob", "delta_targets"]

#: Bound on a delta index file.
MAX_INDEX_BYTES = 4096


@dataclass(frozen=True)
class DeltaBlob:
    """A stored patch from one OS image to another."""

    method: str
    from_sha256: str
    to_sha256: str
    patch_sha256: str
    size: int


def _index_path(store: BlobStore, method: str, old: str, new: str) -> Path:
    return store.root / "deltas" / method / f"{old}-{new}.json"


def _cached(store: BlobStore, index: Path) -> DeltaBlob | None:
    try:
        with index.open("rb") as fh:
            blob = DeltaBlob(**json.loads(fh.read(MAX_INDEX_BYTES)))
        return blob if store.exists(blob.patch_sha256) else None
    except (OSError, ValueError, TypeError, UnknownBlobError):
        return None


def _make(store: BlobStore, settings: Settings, old: str, new: str, method: DeltaMethod) -> DeltaBlob:
    index = _index_path(store, method.value, old, new)
    cached = _cached(store, index)
    if cached is not None:
        return cached
    tmp_dir = store.root / "tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tmp_dir) as work:
        out = Path(work) / "delta.patch"
        make_delta(store.path(old), store.path(new), out, method=method)
        with out.open("rb") as fh:
            ref = store.put_stream(fh, limit=settings.limits.max_image_upload_bytes)
    blob = DeltaBlob(method=method.value, from_sha256=old, to_sha256=new, patch_sha256=ref.sha256, size=ref.size)
    index.parent.mkdir(parents=True, exist_ok=True)
    write_private_file(index, json.dumps(asdict(blob)).encode())
    return blob


def delta_targets(
    settings: Settings,
    store: BlobStore,
    old_sha256s: Sequence[str],
    new_sha256: str,
    *,
    method: DeltaMethod = DEFAULT_DELTA_METHOD,
) -> list[DeltaBlob]:
    """Patches from each of ``old_sha256s`` to ``new_sha256`` (made on first use, then cached)."""
    blobs = []
    for old in old_sha256s:
        try:
            blobs.append(_make(store, settings, old, new_sha256, method))
        except (ImageError, OSError, BlobTooLargeError, UnknownBlobError):
            continue  # no delta for this pair; devices fetch the full image
    return blobs
