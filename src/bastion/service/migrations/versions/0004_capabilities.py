"""Device capabilities: issued capability files, and the capability a device attests under.

Revision ID: 0004_capabilities
Revises: 0003_insecure_no_sandbox
Create Date: 2026-12-20
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_capabilities"
down_revision = "0003_insecure_no_sandbox"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def _device_columns() -> list[sa.Column[str]]:
    return [
        sa.Column("capability_id", sa.String(36), nullable=True),
        sa.Column("capability_kind", sa.String(32), nullable=True),
        sa.Column("group_before_development", sa.String(36), nullable=True),
    ]


def upgrade() -> None:
    # Plain ALTER TABLE ADD/DROP COLUMN (SQLite >= 3.35 has both), never a batch
    # rebuild: rebuilding devices fails while other tables' rows point at it.
    for column in _device_columns():
        op.add_column("devices", column)
    op.create_table(
        "device_capabilities",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("tenant_id", sa.String(36), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("device_id", sa.String(64), sa.ForeignKey("devices.device_id"), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("developer_key_ids", sa.JSON(), nullable=False),
        sa.Column("group_id", sa.String(36), sa.ForeignKey("device_groups.id"), nullable=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("issued_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.Column("issued_by", sa.String(100), nullable=False),
        sa.Column("revoked_at", _TS, nullable=True),
        sa.Column("revoked_by", sa.String(100), nullable=True),
    )
    op.create_index("ix_device_capabilities_tenant_id", "device_capabilities", ["tenant_id"])
    op.create_index("ix_device_capabilities_device_id", "device_capabilities", ["device_id"])


def downgrade() -> None:
    op.drop_table("device_capabilities")
    for column in reversed(_device_columns()):
        op.drop_column("devices", column.name)
