"""Device log requests: an operator asks a device for an app's log tail (issue 8, section 4).

Revision ID: 0016_fleet_health
Revises: 0015_error_reports (chained here because this branch holds errsvc's 0015; rechain at merge)
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016_fleet_health"
down_revision = "0017_rollouts"  # rechained at the fleetsim merge (one head)
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "device_log_requests",
        sa.Column("id", sa.String(20), primary_key=True),
        sa.Column(
            "tenant_id",
            sa.String(36),
            sa.ForeignKey("tenants.id", name="fk_device_log_requests_tenant"),
            nullable=False,
        ),
        sa.Column(
            "device_id",
            sa.String(64),
            sa.ForeignKey("devices.device_id", name="fk_device_log_requests_device"),
            nullable=False,
        ),
        sa.Column("component_id", sa.String(64), nullable=False),
        sa.Column("requested_by", sa.String(100), nullable=False),
        sa.Column("requested_at", _TS, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("delivered_at", _TS, nullable=True),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("truncated", sa.Boolean(), nullable=False),
        sa.Column("max_bytes", sa.Integer(), nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
    )
    op.create_index("ix_device_log_requests_device_state", "device_log_requests", ["device_id", "state", "expires_at"])


def downgrade() -> None:
    op.drop_table("device_log_requests")
