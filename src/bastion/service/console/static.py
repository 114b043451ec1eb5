"""The console's own static files, served from a fixed list (no path from the request reaches the disk)."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter
from fastapi import Path as PathParam
from fastapi.responses import Response

from bastion.service.console.headers import apply_static_headers

__all__ = ["STATIC_DIR", "STATIC_FILES", "router", "static_url"]

STATIC_DIR = Path(__file__).parent / "static"
#: The files served, by name, with their content type.
STATIC_FILES = {
    "htmx.min.js": "text/javascript; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
}

router = APIRouter(prefix="/console")


@functools.cache
def _load(name: str) -> tuple[bytes, str]:
    body = (STATIC_DIR / name).read_bytes()
    return body, hashlib.sha256(body).hexdigest()[:16]


def static_url(name: str) -> str:
    """The URL of a static file, with a version from its content (so a new release is fetched anew)."""
    if name not in STATIC_FILES:
        raise ValueError(f"no console static file {name!r}")
    return f"/console/static/{name}?v={_load(name)[1]}"


@router.get("/static/{name}", include_in_schema=False)
def static_file(name: Annotated[str, PathParam(max_length=64)]) -> Response:
    """One of :data:`STATIC_FILES`, else 404."""
    content_type = STATIC_FILES.get(name)
    if content_type is None:
        return apply_static_headers(Response("no such file\n", status_code=404, media_type="text/plain"))
    body, _ = _load(name)
    return apply_static_headers(Response(body, media_type=content_type))
