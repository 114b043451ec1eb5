"""Service clears of device-side blocklisted OS images (issue 8 §6, ADR 0018).

Revision ID: 0018_tuf_outbox
Revises: 0005_ownership
Create Date: 2026-12-02

The id is the one reserved for the faults work; commit-then-publish needed no outbox
table (the publish runs after the commit from a fresh read, and start-up reconciles),
so the revision holds the blocklist clears instead.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018_tuf_outbox"
down_revision = "0017_rollouts"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "os_blocklist_clears",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("tenant_id", sa.String(36), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("group_id", sa.String(36), sa.ForeignKey("device_groups.id"), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("device_id", sa.String(64), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("created_by", sa.String(100), nullable=False),
    )
    op.create_index("ix_os_blocklist_clears_tenant_id", "os_blocklist_clears", ["tenant_id"])
    op.create_index("ix_os_blocklist_clears_group", "os_blocklist_clears", ["group_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_os_blocklist_clears_group", table_name="os_blocklist_clears")
    op.drop_index("ix_os_blocklist_clears_tenant_id", table_name="os_blocklist_clears")
    op.drop_table("os_blocklist_clears")
