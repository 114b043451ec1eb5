"""Attestation appraisal: the rules a tenant relaxed per device group.

Revision ID: 0009_appraisal
Revises: 0007_crl_rotation
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_appraisal"
down_revision = "0007_crl_rotation"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "group_appraisal_policies",
        sa.Column("group_id", sa.String(36), sa.ForeignKey("device_groups.id"), primary_key=True),
        sa.Column("tenant_id", sa.String(36), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("relaxed", sa.JSON(), nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.Column("updated_by", sa.String(100), nullable=False),
    )
    op.create_index("ix_group_appraisal_policies_tenant_id", "group_appraisal_policies", ["tenant_id"])


def downgrade() -> None:
    op.drop_table("group_appraisal_policies")
