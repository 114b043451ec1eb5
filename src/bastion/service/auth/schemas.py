"""Request and response bodies of the auth endpoints."""

from __future__ import annotations

from pydantic import BaseModel, Field

from bastion.service.auth.tokens import Role

__all__ = ["TokenCreate", "TokenCreated", "WhoAmI"]


class WhoAmI(BaseModel):
    tenant_id: str
    tenant_name: str
    token_id: str
    role: str


class TokenCreate(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    role: Role


class TokenCreated(BaseModel):
    token_id: str
    token: str
    role: str
