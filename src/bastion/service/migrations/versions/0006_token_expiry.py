"""Operator token expiry and revoker, and the service-wide log of failed authentication.

Tokens minted before this revision keep ``expires_at`` NULL (they never expire);
``bastion token list`` shows them so an admin can revoke them.

Revision ID: 0006_token_expiry
Revises: 0004_capabilities
Create Date: 2026-12-02
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0006_token_expiry"
down_revision = "0004_capabilities"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def _token_columns() -> list[sa.Column[Any]]:
    return [
        sa.Column("expires_at", _TS, nullable=True),
        sa.Column("revoked_by", sa.String(100), nullable=True),
    ]


def upgrade() -> None:
    # Plain ALTER TABLE ADD/DROP COLUMN, never a batch rebuild (see 0004).
    for column in _token_columns():
        op.add_column("api_tokens", column)
    op.create_table(
        "auth_failures",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("window_start", _TS, nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("first_at", _TS, nullable=False),
        sa.Column("last_at", _TS, nullable=False),
        sa.Column("last_target", sa.String(200), nullable=False),
        sa.UniqueConstraint("window_start", "reason", name="uq_auth_failures_window_reason"),
    )
    op.create_index("ix_auth_failures_window_start", "auth_failures", ["window_start"])


def downgrade() -> None:
    op.drop_table("auth_failures")
    for column in reversed(_token_columns()):
        op.drop_column("api_tokens", column.name)
