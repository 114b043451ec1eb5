"""Every bound of operator auth, by name, and how endpoints find them.

The app uses :data:`DEFAULT_AUTH_LIMITS` unless a deployment or a test puts
another :class:`AuthLimits` on ``app.state.auth_limits``;
``create_app_from_env`` builds it with :meth:`AuthLimits.from_env`.

Example:
    >>> AuthLimits.from_env({"BASTION_TOKEN_LIFETIME_DAYS": "30"}).token_default_lifetime.days
    30

Environment:
    ``BASTION_TOKEN_LIFETIME_DAYS``: lifetime of a new token when its creator
    names none (default 90, at most :data:`MAX_TOKEN_LIFETIME_DAYS`).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from bastion.service.errors import ConfigError

__all__ = ["DEFAULT_AUTH_LIMITS", "MAX_TOKEN_LIFETIME_DAYS", "AuthLimits", "AuthLimitsDep", "get_auth_limits"]

#: Upper bound of any token's lifetime, in days.
MAX_TOKEN_LIFETIME_DAYS = 366
_LIFETIME_ENV = "BASTION_TOKEN_LIFETIME_DAYS"


@dataclass(frozen=True)
class AuthLimits:
    """Time and count bounds of operator tokens and of the failed-authentication log."""

    #: Lifetime of a token minted without an explicit expiry.
    token_default_lifetime: dt.timedelta = dt.timedelta(days=90)
    #: Shortest and longest lifetime a token may be given.
    token_min_lifetime: dt.timedelta = dt.timedelta(minutes=5)
    token_max_lifetime: dt.timedelta = dt.timedelta(days=MAX_TOKEN_LIFETIME_DAYS)
    #: Failed authentications are counted per window of this length (one row per window and reason).
    auth_failure_window: dt.timedelta = dt.timedelta(minutes=5)
    #: Windows older than this are pruned from the failed-authentication log.
    auth_failure_keep: dt.timedelta = dt.timedelta(days=7)
    #: A revoked or expired token presented with its right secret is written into its
    #: tenant's audit log at most once per token and this window.
    stale_token_audit_window: dt.timedelta = dt.timedelta(hours=1)

    def __post_init__(self) -> None:
        if not self.token_min_lifetime <= self.token_default_lifetime <= self.token_max_lifetime:
            raise ConfigError("the default token lifetime must lie between the minimum and the maximum")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AuthLimits:
        """Read :envvar:`BASTION_TOKEN_LIFETIME_DAYS` from ``env`` (default ``os.environ``).

        Raises:
            ConfigError: the value is not a whole number of days in range.
        """
        env = os.environ if env is None else env
        raw = env.get(_LIFETIME_ENV)
        if not raw:
            return cls()
        if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= MAX_TOKEN_LIFETIME_DAYS):
            raise ConfigError(f"{_LIFETIME_ENV} must be a whole number of days from 1 to {MAX_TOKEN_LIFETIME_DAYS}")
        return cls(token_default_lifetime=dt.timedelta(days=int(raw)))


DEFAULT_AUTH_LIMITS = AuthLimits()


def get_auth_limits(request: Request) -> AuthLimits:
    """The app's auth limits (``app.state.auth_limits``, else the defaults)."""
    limits = getattr(request.app.state, "auth_limits", None)
    return limits if isinstance(limits, AuthLimits) else DEFAULT_AUTH_LIMITS


AuthLimitsDep = Annotated[AuthLimits, Depends(get_auth_limits)]
