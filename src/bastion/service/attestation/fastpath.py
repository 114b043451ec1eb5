"""The device endpoints as hand-written ASGI: ``POST /attestation/challenge`` and ``POST /attestation``.

No operator token: the evidence authenticates the device. This is the
service's hot path (issue 2 targets 1,000 full attestations/s on two cores), so
the app dispatches these two exact paths here *before* FastAPI's middleware
and routing (see :class:`bastion.service.app.ServiceApp`). The handlers apply
the same bounds the rest of the API does, by name: the body is read up to a
limit (413 beyond it, before buffering more), the evidence must carry its media
type (415), the challenge body is parsed with orjson and validated by hand;
errors have the API's one shape ``{"error": code, "detail": ...}``.

They are not FastAPI routes, so :data:`OPENAPI_PATHS` documents them and the
app merges it into its OpenAPI schema.

Status codes (docs/api.md, "Device endpoints"): 200 issued; 400 malformed
evidence or request; 403 refused attestation; 405 another method; 413
oversized body; 415 wrong content type; 422 malformed device ID.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Callable
from typing import Any, TypeVar

import orjson
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import State
from starlette.types import Receive, Scope, Send

from bastion.service import metrics
from bastion.service.attestation.caches import AttestationCaches
from bastion.service.attestation.challenges import NONCE_BYTES, ChallengeKey, issue_challenge
from bastion.service.attestation.errors import AttestationFailure, FailureCode
from bastion.service.attestation.service import AttestationOutcome, attest, record_refused
from bastion.service.attestation.verifier import DEFAULT_LIMITS
from bastion.service.config import Settings
from bastion.service.errors import InvalidDeviceId, InvalidRequest
from bastion.service.fleet.targets import update_pointers

__all__ = [
    "ATTESTATION_MEDIA_TYPE",
    "ATTESTATION_PATH",
    "CHALLENGE_PATH",
    "MAX_CHALLENGE_BODY_BYTES",
    "OPENAPI_PATHS",
    "DeviceEndpoints",
]

#: Paths under the API prefix.
CHALLENGE_PATH = "/attestation/challenge"
ATTESTATION_PATH = "/attestation"
#: The media type of evidence (RFC 9711 / RFC 8392 CWT in COSE_Sign1).
ATTESTATION_MEDIA_TYPE = "application/eat+cwt"
#: Bound on the JSON body of a challenge request.
MAX_CHALLENGE_BODY_BYTES = 1024
#: Bounds applied to evidence (the body bound is ``max_evidence_bytes``: 16 KiB).
VERIFIER_LIMITS = DEFAULT_LIMITS
#: Bound on the content-type header value we look at.
MAX_CONTENT_TYPE_CHARS = 256

T = TypeVar("T")

_JSON_HEADERS = [(b"content-type", b"application/json")]
_CHALLENGE_USAGE = 'the body must be JSON: {"device_id": "<64 hex>"}'


class _BodyTooLargeError(Exception):
    pass


class _DisconnectedError(Exception):
    pass


def _error(code: str, detail: str) -> bytes:
    return orjson.dumps({"error": code, "detail": detail})


_INTERNAL_ERROR = _error("internal_error", "the service could not complete this request")
_METHOD_NOT_ALLOWED = _error("method_not_allowed", "use POST")


async def _send(send: Send, status: int, body: bytes, extra_headers: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = [*_JSON_HEADERS, (b"content-length", b"%d" % len(body))]
    if extra_headers:
        headers.extend(extra_headers)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


async def _read_bounded(scope: Scope, receive: Receive, limit: int) -> bytes:
    """Read the request body, raising :class:`_BodyTooLargeError` as soon as it exceeds ``limit``."""
    declared = _header(scope, b"content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise _BodyTooLargeError
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise _DisconnectedError
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _BodyTooLargeError
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _outcome_body(outcome: AttestationOutcome, updates: dict[str, Any] | None) -> bytes:
    return orjson.dumps(
        {
            "device_id": outcome.device_id,
            "tenant_id": outcome.tenant_id,
            "certificate": outcome.certificate_pem,
            "ca_chain": list(outcome.ca_chain_pem),
            "not_after": outcome.not_after.isoformat(),
            # Where the device's group publishes its TUF repository (docs/updates.md);
            # an empty list when the device is in no group.
            "updates": updates if updates is not None else [],
        }
    )


def _failure(failure: AttestationFailure) -> tuple[int, bytes]:
    metrics.ATTESTATIONS.labels("refused", metrics.bounded_label(failure.code.value)).inc()
    if failure.code is FailureCode.EVIDENCE_TOO_LARGE:
        status = 413
    elif failure.malformed:
        status = 400
    else:
        status = 403
    return status, _error(failure.code.value, failure.detail)


class DeviceEndpoints:
    """The two device endpoints, bound to one app's state.

    The state is read when a request arrives, not at construction: the engine
    is created in the app's lifespan.
    """

    def __init__(self, state: State) -> None:
        """Serve requests with the settings, clock and engine on ``state``."""
        self._state = state
        self._settings: Settings = state.settings
        self._clock: Callable[[], dt.datetime] = state.clock
        self._challenge_key = ChallengeKey.from_master_key(self._settings.master_key)
        self._caches = AttestationCaches()
        self._inline: bool | None = None

    @property
    def caches(self) -> AttestationCaches:
        """The per-process attestation caches (clear them after changing trusted vendors)."""
        return self._caches

    @property
    def paths(self) -> dict[str, Callable[[Scope, Receive, Send], Any]]:
        """Path (without the API prefix) -> ASGI handler."""
        return {CHALLENGE_PATH: self.challenge, ATTESTATION_PATH: self.attestation}

    async def _run(self, engine: Engine, work: Callable[[], T]) -> T:
        """Run the blocking domain work for a request.

        On SQLite it runs inline on the event loop: a local database call takes
        microseconds, a thread hop costs more, and threads of one process would
        only contend for SQLite's single write lock. On a server database it
        runs in the thread pool so network round trips do not stall the loop.
        """
        if self._inline is None:
            self._inline = engine.dialect.name == "sqlite"
        if self._inline:
            return work()
        return await run_in_threadpool(work)

    async def _serve(self, scope: Scope, send: Send, handle: Callable[[], Any]) -> None:
        if scope["method"] != "POST":
            await _send(send, 405, _METHOD_NOT_ALLOWED, [(b"allow", b"POST")])
            return
        try:
            status, body = await handle()
        except _DisconnectedError:
            return
        except Exception:
            # The API's error shape for the client; the server logs the exception.
            await _send(send, 500, _INTERNAL_ERROR)
            raise
        await _send(send, status, body)

    async def challenge(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``POST /attestation/challenge``: a nonce bound to a device ID, valid for 60 s. Writes nothing."""

        async def handle() -> tuple[int, bytes]:
            try:
                body = await _read_bounded(scope, receive, MAX_CHALLENGE_BODY_BYTES)
            except _BodyTooLargeError:
                return 413, _error(
                    "payload_too_large", f"the request body is larger than {MAX_CHALLENGE_BODY_BYTES} bytes"
                )
            try:
                parsed = orjson.loads(body)
            except orjson.JSONDecodeError:
                return 400, _error(InvalidRequest.code, _CHALLENGE_USAGE)
            device_id = parsed.get("device_id") if isinstance(parsed, dict) else None
            if not isinstance(device_id, str):
                return 400, _error(InvalidRequest.code, _CHALLENGE_USAGE)
            try:
                issued = issue_challenge(self._challenge_key, device_id, now=self._clock())
            except InvalidDeviceId as exc:
                return 422, _error(exc.code, exc.detail)
            nonce = base64.urlsafe_b64encode(issued.nonce).rstrip(b"=").decode("ascii")
            return 200, orjson.dumps({"nonce": nonce, "expires_at": issued.expires_at.isoformat()})

        await self._serve(scope, send, handle)

    async def attestation(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``POST /attestation``: verify evidence (an EAT) and answer with a 24-hour device certificate."""

        async def handle() -> tuple[int, bytes]:
            content_type = (_header(scope, b"content-type") or b"")[:MAX_CONTENT_TYPE_CHARS]
            media_type = content_type.split(b";", 1)[0].strip().lower()
            if media_type != ATTESTATION_MEDIA_TYPE.encode("ascii"):
                return 415, _error("unsupported_media_type", f"send the EAT as {ATTESTATION_MEDIA_TYPE}")
            now = self._clock()
            engine: Engine = self._state.engine
            limit = VERIFIER_LIMITS.max_evidence_bytes
            try:
                token: bytes | None = await _read_bounded(scope, receive, limit)
            except _BodyTooLargeError:
                token = None

            def work() -> tuple[int, bytes]:
                if token is None:
                    failure = AttestationFailure(
                        FailureCode.EVIDENCE_TOO_LARGE, f"the evidence is larger than {limit} bytes"
                    )
                    record_refused(engine, failure, now=now)
                    return _failure(failure)
                try:
                    outcome = attest(
                        engine,
                        token,
                        now=now,
                        master_key=self._settings.master_key,
                        challenge_key=self._challenge_key,
                        caches=self._caches,
                        limits=VERIFIER_LIMITS,
                    )
                except AttestationFailure as failure:
                    return _failure(failure)
                # A plain connection: an ORM session here costs more than the query.
                with engine.connect() as conn:
                    updates = update_pointers(
                        conn,
                        outcome.device_id,
                        settings=self._settings,
                        publisher=getattr(self._state, "tuf_publisher", None),
                    )
                metrics.ATTESTATIONS.labels("ok", "").inc()
                metrics.CERTIFICATES_ISSUED.inc()
                return 200, _outcome_body(outcome, updates)

            return await self._run(engine, work)

        await self._serve(scope, send, handle)


def _error_schema(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["error", "detail"],
                    "properties": {"error": {"type": "string"}, "detail": {"type": "string"}},
                }
            }
        },
    }


#: OpenAPI path items of the device endpoints (relative to the API prefix).
OPENAPI_PATHS: dict[str, dict[str, Any]] = {
    CHALLENGE_PATH: {
        "post": {
            "tags": ["attestation"],
            "summary": "Get a single-use attestation nonce for a device",
            "operationId": "post_challenge",
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["device_id"],
                            "properties": {"device_id": {"type": "string", "pattern": "^[0-9a-f]{64}$"}},
                        }
                    }
                },
            },
            "responses": {
                "200": {
                    "description": f"a {NONCE_BYTES}-byte nonce (base64url, unpadded), valid for 60 s",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["nonce", "expires_at"],
                                "properties": {
                                    "nonce": {"type": "string"},
                                    "expires_at": {"type": "string", "format": "date-time"},
                                },
                            }
                        }
                    },
                },
                "400": _error_schema("the body is not the JSON object above"),
                "413": _error_schema(f"the body is larger than {MAX_CHALLENGE_BODY_BYTES} bytes"),
                "422": _error_schema("the device ID is not 64 lowercase hex characters"),
            },
        }
    },
    ATTESTATION_PATH: {
        "post": {
            "tags": ["attestation"],
            "summary": "Attest with an EAT and receive a 24-hour device certificate",
            "operationId": "post_attestation",
            "requestBody": {
                "required": True,
                "content": {ATTESTATION_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
            },
            "responses": {
                "200": {
                    "description": "the device certificate",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["device_id", "tenant_id", "certificate", "ca_chain", "not_after"],
                                "properties": {
                                    "device_id": {"type": "string"},
                                    "tenant_id": {"type": "string"},
                                    "certificate": {"type": "string"},
                                    "ca_chain": {"type": "array", "items": {"type": "string"}},
                                    "not_after": {"type": "string", "format": "date-time"},
                                    "updates": {"type": "array", "items": {}},
                                },
                            }
                        }
                    },
                },
                "400": _error_schema("malformed evidence"),
                "403": _error_schema("attestation refused; `error` is the failure code"),
                "413": _error_schema(f"the evidence is larger than {VERIFIER_LIMITS.max_evidence_bytes} bytes"),
                "415": _error_schema(f"the body is not {ATTESTATION_MEDIA_TYPE}"),
            },
        }
    },
}
