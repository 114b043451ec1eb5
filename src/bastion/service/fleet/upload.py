"""Receiving a bounded, streamed upload into a spooled temporary file."""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import BinaryIO, cast

from fastapi import Request

from bastion.service.errors import PayloadTooLarge

__all__ = ["Upload", "receive_upload"]


@dataclass(frozen=True)
class Upload:
    """A received upload: the spooled bytes (at position 0), their SHA-256 (hex) and size."""

    file: BinaryIO
    sha256: str
    size: int


@asynccontextmanager
async def receive_upload(request: Request, *, limit: int, spool_bytes: int, what: str) -> AsyncIterator[Upload]:
    """Stream the request body into a temporary file, refusing more than ``limit`` bytes.

    A declared ``Content-Length`` over the limit is refused before anything is read.

    Raises:
        PayloadTooLarge: the body is larger than ``limit``.
    """
    too_large = PayloadTooLarge(f"the {what} is larger than the upload limit of {limit} bytes")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    digest = hashlib.sha256()
    size = 0
    with tempfile.SpooledTemporaryFile(max_size=spool_bytes) as spool:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large
            digest.update(chunk)
            spool.write(chunk)
        spool.seek(0)
        yield Upload(file=cast(BinaryIO, spool), sha256=digest.hexdigest(), size=size)
