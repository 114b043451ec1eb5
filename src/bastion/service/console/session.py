"""Console sessions: a token verified once at sign-in, then a cookie that names a stored session.

The cookie carries 32 random bytes (base64url); the database keeps only their
SHA-256, so a copy of the table signs nobody in. A session ends at the first of:
sign-out, :attr:`ConsoleSettings.idle_timeout` without a request, the absolute
:attr:`ConsoleSettings.max_age` after sign-in, and its token being revoked or
expiring (checked on every request: the token row is read with the session).

Example:
    >>> ConsoleSettings.from_env({"BASTION_CONSOLE_IDLE_TIMEOUT_S": "600"}).idle_timeout.seconds
    600

Environment:
    ``BASTION_CONSOLE_IDLE_TIMEOUT_S``: seconds without a request before a session ends (default 1800).
    ``BASTION_CONSOLE_SESSION_MAX_S``: seconds after sign-in at which a session ends anyway (default 43200).
    ``BASTION_CONSOLE_FLEET_MAX_AGE_S``: age at which the fleet page's counts are refreshed (default 30; 0: always).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field

from fastapi import Request, Response
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from bastion.service.auth.service import Principal, token_state
from bastion.service.errors import ConfigError
from bastion.service.models import ApiToken, ConsoleSession, Tenant

__all__ = [
    "COOKIE_NAME",
    "COOKIE_PATH",
    "SECURE_COOKIE_NAME",
    "SESSION_ID_BYTES",
    "ConsoleSettings",
    "Ended",
    "NewSession",
    "SessionLookup",
    "clear_cookie",
    "cookie_name",
    "create_session",
    "delete_session",
    "get_console_settings",
    "hash_session_id",
    "is_secure",
    "look_up",
    "presented_cookie",
    "set_cookie",
]

#: The session cookie's name over plain http (a browser refuses a ``__Host-`` cookie without Secure).
COOKIE_NAME = "bastion_console"
#: Its path over plain http.
COOKIE_PATH = "/console"
#: The session cookie's name over https: the ``__Host-`` prefix makes the browser take it only with
#: Secure, ``Path=/`` and no ``Domain`` (RFC 6265bis §4.1.3.2), so neither a sibling host nor a
#: plain-http answer can plant or overwrite it.
SECURE_COOKIE_NAME = "__Host-bastion_console"
SESSION_ID_BYTES = 32
#: Bound on a presented cookie value, checked before decoding (43 characters is the real length).
MAX_COOKIE_CHARS = 64
_IDLE_ENV = "BASTION_CONSOLE_IDLE_TIMEOUT_S"
_MAX_ENV = "BASTION_CONSOLE_SESSION_MAX_S"
_FLEET_ENV = "BASTION_CONSOLE_FLEET_MAX_AGE_S"
#: Largest age a deployment may give the fleet page's counts (one hour).
MAX_FLEET_AGE_SECONDS = 3600
#: Largest idle timeout or maximum age a deployment may set (30 days).
MAX_SESSION_SECONDS = 30 * 24 * 3600


@dataclass(frozen=True)
class ConsoleSettings:
    """The named bounds of console sessions."""

    #: A session unused for this long ends.
    idle_timeout: dt.timedelta = dt.timedelta(minutes=30)
    #: A session ends this long after sign-in, however busy (and never after its token's expiry).
    max_age: dt.timedelta = dt.timedelta(hours=12)
    #: At most this many live sessions per token; signing in again ends the oldest.
    max_sessions_per_token: int = 20
    #: ``last_seen_at`` is written at most once per this interval (a page view is not a write each time).
    touch_interval: dt.timedelta = dt.timedelta(seconds=30)
    #: The fleet page's counts are recomputed in the background once they are this old (0: on every view).
    fleet_max_age: dt.timedelta = dt.timedelta(seconds=30)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ConsoleSettings:
        """Read the ``BASTION_CONSOLE_*`` variables from ``env`` (default ``os.environ``).

        Raises:
            ConfigError: a value is not a whole number of seconds from 1 to :data:`MAX_SESSION_SECONDS`.
        """
        env = os.environ if env is None else env
        values: dict[str, dt.timedelta] = {}
        for name, attr in ((_IDLE_ENV, "idle_timeout"), (_MAX_ENV, "max_age")):
            raw = env.get(name)
            if not raw:
                continue
            if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= MAX_SESSION_SECONDS):
                raise ConfigError(f"{name} must be a whole number of seconds from 1 to {MAX_SESSION_SECONDS}")
            values[attr] = dt.timedelta(seconds=int(raw))
        raw = env.get(_FLEET_ENV)
        if raw:
            if not (raw.isascii() and raw.isdigit() and int(raw) <= MAX_FLEET_AGE_SECONDS):
                raise ConfigError(f"{_FLEET_ENV} must be a whole number of seconds from 0 to {MAX_FLEET_AGE_SECONDS}")
            values["fleet_max_age"] = dt.timedelta(seconds=int(raw))
        return cls(**values)  # type: ignore[arg-type] # only timedelta fields are set


def get_console_settings(request: Request) -> ConsoleSettings:
    """The app's console settings: ``app.state.console_settings``, else read once from the environment."""
    found = getattr(request.app.state, "console_settings", None)
    if isinstance(found, ConsoleSettings):
        return found
    built = ConsoleSettings.from_env()
    request.app.state.console_settings = built
    return built


def hash_session_id(raw: bytes) -> str:
    """The stored name of a session: hex SHA-256 of the cookie's random bytes."""
    return hashlib.sha256(raw).hexdigest()


@dataclass(frozen=True)
class NewSession:
    """A session just created; ``cookie`` goes to the browser once and is never stored."""

    id_hash: str
    cookie: str = field(repr=False)
    raw: bytes = field(repr=False)


def _encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cookie(value: str | None) -> bytes | None:
    """The random bytes a cookie value carries, or None when it is missing or malformed."""
    if not value or len(value) > MAX_COOKIE_CHARS or not value.isascii():
        return None
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == SESSION_ID_BYTES else None


def create_session(
    session: Session, principal: Principal, *, now: dt.datetime, settings: ConsoleSettings
) -> NewSession:
    """Add a new session for a verified token (no commit); the id is always fresh (no fixation).

    Sessions past their end are pruned, and the token's oldest live sessions beyond
    :attr:`ConsoleSettings.max_sessions_per_token` are ended.
    """
    session.execute(
        delete(ConsoleSession).where(
            (ConsoleSession.expires_at <= now) | (ConsoleSession.last_seen_at <= now - settings.idle_timeout)
        )
    )
    live = session.scalars(
        select(ConsoleSession.id_hash)
        .where(ConsoleSession.token_id == principal.token_id)
        .order_by(ConsoleSession.created_at.desc(), ConsoleSession.id_hash)
        .offset(settings.max_sessions_per_token - 1)
    ).all()
    if live:
        session.execute(delete(ConsoleSession).where(ConsoleSession.id_hash.in_(live)))
    raw = secrets.token_bytes(SESSION_ID_BYTES)
    expires_at = now + settings.max_age
    if principal.expires_at is not None:
        expires_at = min(expires_at, principal.expires_at)
    id_hash = hash_session_id(raw)
    session.add(
        ConsoleSession(
            id_hash=id_hash,
            tenant_id=principal.tenant_id,
            token_id=principal.token_id,
            created_at=now,
            last_seen_at=now,
            expires_at=expires_at,
        )
    )
    return NewSession(id_hash=id_hash, cookie=_encode(raw), raw=raw)


class Ended(Exception):  # noqa: N818 - a reason, not a failure of the code
    """The presented session is over; ``reason`` says why, for the sign-in page."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


#: Why a session ended, as the sign-in page says it.
END_REASONS = {
    "expired": "your console session expired; sign in again",
    "token_revoked": "the token of your console session was revoked; sign in with another token",
    "token_expired": "the token of your console session expired; sign in with a new token",
}


@dataclass(frozen=True)
class SessionLookup:
    """A live session: who it acts for, and its cookie's random bytes (the CSRF key)."""

    principal: Principal
    id_hash: str
    raw: bytes = field(repr=False)


def look_up(
    session: Session, cookie: str | None, *, now: dt.datetime, settings: ConsoleSettings
) -> SessionLookup | None:
    """The live session a cookie names; None when there is no (well-formed, known) cookie.

    A session found but over is deleted (and committed), then :class:`Ended` is raised.

    Raises:
        Ended: the session expired, or its token was revoked or expired.
    """
    raw = decode_cookie(cookie)
    if raw is None:
        return None
    id_hash = hash_session_id(raw)
    row = session.execute(
        select(ConsoleSession, ApiToken, Tenant.name)
        .join(ApiToken, ApiToken.id == ConsoleSession.token_id)
        .join(Tenant, Tenant.id == ConsoleSession.tenant_id)
        .where(ConsoleSession.id_hash == id_hash)
    ).first()
    if row is None:
        return None
    console_session, token, tenant_name = row[0], row[1], row[2]
    state = token_state(token, now)
    reason = None
    if state != "active":
        reason = f"token_{state}"
    elif now >= console_session.expires_at or now - console_session.last_seen_at >= settings.idle_timeout:
        reason = "expired"
    if reason is not None or token.tenant_id != console_session.tenant_id:
        session.execute(delete(ConsoleSession).where(ConsoleSession.id_hash == id_hash))
        session.commit()
        raise Ended(reason or "expired")
    if now - console_session.last_seen_at >= settings.touch_interval:
        console_session.last_seen_at = now
        session.commit()
    principal = Principal(
        tenant_id=token.tenant_id,
        tenant_name=tenant_name,
        token_id=token.id,
        role=token.role,
        expires_at=token.expires_at,
    )
    return SessionLookup(principal=principal, id_hash=id_hash, raw=raw)


def delete_session(session: Session, id_hash: str) -> None:
    """End a session (sign-out); no commit."""
    session.execute(delete(ConsoleSession).where(ConsoleSession.id_hash == id_hash))


def is_secure(request: Request) -> bool:
    """Whether the console is served over TLS here (its cookies are then Secure and ``__Host-``)."""
    return request.url.scheme == "https"


def cookie_name(request: Request) -> str:
    """The session cookie's name for this request: :data:`SECURE_COOKIE_NAME` over https, else :data:`COOKIE_NAME`."""
    return SECURE_COOKIE_NAME if is_secure(request) else COOKIE_NAME


def presented_cookie(request: Request) -> str | None:
    """The session cookie the request carries, under this scheme's name only.

    Over https the unprefixed name is ignored: anyone on the network path can set that
    one from a plain-http answer (cookie tossing), but not a ``__Host-`` one.
    """
    return request.cookies.get(cookie_name(request))


def set_cookie(response: Response, request: Request, cookie: str, *, max_age: dt.timedelta) -> None:
    """Give the browser its session cookie: HttpOnly, SameSite=Strict; over https ``__Host-``, Secure, Path=/.

    Over plain http it is ``bastion_console`` with Path=/console.
    """
    secure = is_secure(request)
    response.set_cookie(
        cookie_name(request),
        cookie,
        max_age=int(max_age.total_seconds()),
        path="/" if secure else COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=secure,
    )


def clear_cookie(response: Response, request: Request) -> None:
    """Tell the browser to drop its session cookie (the same name, path and flags it was set with)."""
    secure = is_secure(request)
    response.delete_cookie(
        cookie_name(request),
        path="/" if secure else COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=secure,
    )
