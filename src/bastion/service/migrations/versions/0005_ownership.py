"""Device ownership history: claims with proof, unclaims and releases.

Revision ID: 0005_ownership
Revises: 0009_appraisal
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_ownership"
down_revision = "0009_appraisal"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "device_ownership_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("tenant_id", sa.String(36), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("event", sa.String(16), nullable=False),
        sa.Column("at", _TS, nullable=False),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("method", sa.String(16), nullable=True),
        sa.Column("voucher_id", sa.String(32), nullable=True),
        sa.Column("vendor_fingerprint", sa.String(64), nullable=True),
        sa.Column("to_tenant_id", sa.String(36), sa.ForeignKey("tenants.id"), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
    )
    op.create_index("ix_device_ownership_events_device_id", "device_ownership_events", ["device_id", "id"])
    op.create_index("ix_device_ownership_events_tenant_id", "device_ownership_events", ["tenant_id"])
    op.create_index("ix_device_ownership_events_to_tenant_id", "device_ownership_events", ["to_tenant_id"])


def downgrade() -> None:
    op.drop_table("device_ownership_events")
