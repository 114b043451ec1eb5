"""HTTP endpoints for devices: ``POST /attestation/challenge`` and ``POST /attestation``.

No operator token: the evidence authenticates the device. This path is the
service's hot path (issue 2 targets 1,000 full attestations/s on two cores), so
the handlers are thin: they read the raw body with a bound, parse JSON with
orjson rather than pydantic, and do the domain work in one transaction.

Status codes (docs/api.md, "Device endpoints"): 200 issued; 400 malformed
evidence or request; 403 refused attestation; 413 oversized evidence; 415
wrong content type.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Callable
from typing import Any, TypeVar

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from bastion.service.attestation.caches import AttestationCaches
from bastion.service.attestation.challenges import ChallengeKey, issue_challenge
from bastion.service.attestation.errors import AttestationFailure, FailureCode
from bastion.service.attestation.service import AttestationOutcome, attest, record_refused
from bastion.service.attestation.verifier import DEFAULT_LIMITS
from bastion.service.config import Settings
from bastion.service.errors import InvalidRequest

__all__ = ["ATTESTATION_MEDIA_TYPE", "MAX_CHALLENGE_BODY_BYTES", "router"]

#: The media type of evidence (RFC 9711 / RFC 8392 CWT in COSE_Sign1).
ATTESTATION_MEDIA_TYPE = "application/eat+cwt"
#: Bound on the JSON body of a challenge request.
MAX_CHALLENGE_BODY_BYTES = 1024
#: Bounds applied to evidence (the body bound is ``max_evidence_bytes``: 16 KiB).
VERIFIER_LIMITS = DEFAULT_LIMITS

router = APIRouter(tags=["attestation"])

T = TypeVar("T")


class _BodyTooLargeError(Exception):
    pass


def _json(status: int, body: dict[str, Any]) -> Response:
    return Response(content=orjson.dumps(body), status_code=status, media_type="application/json")


def _error(status: int, code: str, detail: str) -> Response:
    return _json(status, {"error": code, "detail": detail})


async def _read_bounded(request: Request, limit: int) -> bytes:
    """Read the request body, raising :class:`_BodyTooLargeError` as soon as it exceeds ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise _BodyTooLargeError
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _BodyTooLargeError
        chunks.append(chunk)
    return b"".join(chunks)


def _caches(request: Request) -> AttestationCaches:
    """The app's attestation caches, created on first use (one set per app instance)."""
    state = request.app.state
    caches: AttestationCaches | None = getattr(state, "attestation_caches", None)
    if caches is None:
        caches = AttestationCaches()
        state.attestation_caches = caches
    return caches


async def _run(request: Request, work: Callable[[], T]) -> T:
    """Run the blocking domain work for a request.

    On SQLite it runs inline on the event loop: a local database call takes
    microseconds, a thread hop costs more, and threads of one process would
    only contend for SQLite's single write lock (whose busy handler sleeps in
    whole milliseconds). On a server database it runs in the thread pool so
    network round trips do not stall the loop.
    """
    state = request.app.state
    inline: bool | None = getattr(state, "attestation_inline", None)
    if inline is None:
        engine = getattr(state, "engine", None)
        inline = engine is not None and engine.dialect.name == "sqlite"
        state.attestation_inline = inline
    if inline:
        return work()
    return await run_in_threadpool(work)


def _now(request: Request) -> dt.datetime:
    now: dt.datetime = request.app.state.clock()
    return now


def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def _challenge_key(request: Request) -> ChallengeKey:
    state = request.app.state
    key: ChallengeKey | None = getattr(state, "challenge_key", None)
    if key is None:
        settings: Settings = state.settings
        key = ChallengeKey.from_master_key(settings.master_key)
        state.challenge_key = key
    return key


@router.post("/attestation/challenge")
async def post_challenge(request: Request) -> Response:
    """Issue a single-use nonce bound to a device ID, valid for 60 s."""
    try:
        body = await _read_bounded(request, MAX_CHALLENGE_BODY_BYTES)
    except _BodyTooLargeError:
        return _error(413, "payload_too_large", f"the request body is larger than {MAX_CHALLENGE_BODY_BYTES} bytes")
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return _error(400, InvalidRequest.code, 'the body must be JSON: {"device_id": "<64 hex>"}')
    # An InvalidDeviceId from create_challenge is mapped to 422 by the app's error handler.
    device_id = parsed.get("device_id") if isinstance(parsed, dict) else None
    if not isinstance(device_id, str):
        return _error(400, InvalidRequest.code, 'the body must be JSON: {"device_id": "<64 hex>"}')
    challenge = issue_challenge(_challenge_key(request), device_id, now=_now(request))
    return _json(
        200,
        {
            "nonce": base64.urlsafe_b64encode(challenge.nonce).rstrip(b"=").decode("ascii"),
            "expires_at": challenge.expires_at.isoformat(),
        },
    )


def _outcome_body(outcome: AttestationOutcome) -> dict[str, Any]:
    return {
        "device_id": outcome.device_id,
        "tenant_id": outcome.tenant_id,
        "certificate": outcome.certificate_pem,
        "ca_chain": list(outcome.ca_chain_pem),
        "not_after": outcome.not_after.isoformat(),
        "updates": [],
    }


def _failure_response(failure: AttestationFailure) -> Response:
    if failure.code is FailureCode.EVIDENCE_TOO_LARGE:
        status = 413
    elif failure.malformed:
        status = 400
    else:
        status = 403
    return _error(status, failure.code.value, failure.detail)


@router.post("/attestation")
async def post_attestation(request: Request) -> Response:
    """Verify evidence (an EAT) and answer with a 24-hour device certificate."""
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != ATTESTATION_MEDIA_TYPE:
        return _error(415, "unsupported_media_type", f"send the EAT as {ATTESTATION_MEDIA_TYPE}")
    now = _now(request)
    engine = _engine(request)
    challenge_key = _challenge_key(request)
    caches = _caches(request)
    settings: Settings = request.app.state.settings
    limit = VERIFIER_LIMITS.max_evidence_bytes
    try:
        body: bytes | None = await _read_bounded(request, limit)
    except _BodyTooLargeError:
        body = None

    def work() -> Response:
        if body is None:
            failure = AttestationFailure(FailureCode.EVIDENCE_TOO_LARGE, f"the evidence is larger than {limit} bytes")
            record_refused(engine, failure, now=now)
            return _failure_response(failure)
        try:
            outcome = attest(
                engine,
                body,
                now=now,
                master_key=settings.master_key,
                challenge_key=challenge_key,
                limits=VERIFIER_LIMITS,
                caches=caches,
            )
        except AttestationFailure as failure:
            return _failure_response(failure)
        return _json(200, _outcome_body(outcome))

    return await _run(request, work)
