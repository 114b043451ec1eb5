"""HTTP endpoints for attestation. PLACEHOLDER: the attestation slice replaces this."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
