"""FastAPI dependencies for operator auth.

Example:
    >>> from fastapi import APIRouter
    >>> router = APIRouter()
    >>> @router.get("/things")
    ... def things(who: ReaderDep) -> dict[str, str]:
    ...     return {"tenant": who.tenant_id}
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request

from bastion.service.auth.limits import AuthLimitsDep
from bastion.service.auth.service import Principal, authorize
from bastion.service.auth.tokens import Role
from bastion.service.web import NowDep, SessionDep

__all__ = ["AdminDep", "ContributorDep", "Principal", "ReaderDep", "require_role"]


def require_role(role: Role) -> Callable[..., Principal]:
    """Return a dependency that authenticates the bearer token and requires ``role``."""

    def dependency(request: Request, session: SessionDep, now: NowDep, limits: AuthLimitsDep) -> Principal:
        return authorize(
            session,
            request.headers.get("authorization"),
            role,
            now=now,
            target=f"{request.method} {request.url.path}",
            limits=limits,
        )

    dependency.__name__ = f"require_{role}"
    return dependency


ReaderDep = Annotated[Principal, Depends(require_role("reader"))]
ContributorDep = Annotated[Principal, Depends(require_role("contributor"))]
AdminDep = Annotated[Principal, Depends(require_role("admin"))]
