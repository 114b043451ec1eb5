"""Request and response bodies of the auth endpoints."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, Field

from bastion.service.auth.limits import MAX_TOKEN_LIFETIME_DAYS
from bastion.service.auth.tokens import Role

__all__ = ["AuthFailureOut", "TokenCreate", "TokenCreated", "TokenOut", "WhoAmI"]

#: Bounds of ``expires_in_s`` (the service applies its own, possibly tighter, limits too).
MIN_EXPIRES_IN_S = 60
MAX_EXPIRES_IN_S = MAX_TOKEN_LIFETIME_DAYS * 24 * 3600


class WhoAmI(BaseModel):
    tenant_id: str
    tenant_name: str
    token_id: str
    role: str
    expires_at: dt.datetime | None = None


class TokenCreate(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    role: Role
    #: Seconds until the token expires; omitted: the service's default lifetime.
    expires_in_s: int | None = Field(default=None, ge=MIN_EXPIRES_IN_S, le=MAX_EXPIRES_IN_S)


class TokenCreated(BaseModel):
    token_id: str
    token: str
    role: str
    expires_at: dt.datetime | None


class TokenOut(BaseModel):
    """A token as listed: never its secret or the secret's hash."""

    token_id: str
    name: str
    role: str
    state: str  # active | expired | revoked
    created_at: dt.datetime
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None
    revoked_by: str | None


class AuthFailureOut(BaseModel):
    """One window of the service-wide failed-authentication log."""

    window_start: dt.datetime
    reason: str
    count: int
    first_at: dt.datetime
    last_at: dt.datetime
    last_target: str
