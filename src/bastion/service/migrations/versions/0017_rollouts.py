"""Staged rollouts: stages, soak, halt rules and the fallback release of a deployment or an OS promotion.

Revision ID: 0017_rollouts
Revises: 0015_error_reports (0005_ownership by the team convention; chained after errsvc here so the branch has one head)
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017_rollouts"
down_revision = "0015_error_reports"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "rollouts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("tenant_id", sa.String(36), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("group_id", sa.String(36), sa.ForeignKey("device_groups.id"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("deployment_id", sa.Integer(), sa.ForeignKey("deployments.id"), nullable=True),
        sa.Column("os_image_id", sa.Integer(), sa.ForeignKey("os_images.id"), nullable=True),
        sa.Column("seed", sa.String(64), nullable=False),
        sa.Column("stages", sa.JSON(), nullable=False),
        sa.Column("stage", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("stage_started_at", _TS, nullable=False),
        sa.Column("soak_started_at", _TS, nullable=True),
        sa.Column("soak_seconds", sa.Integer(), nullable=False),
        sa.Column("halt_rules", sa.JSON(), nullable=False),
        sa.Column("halt_reason", sa.Text(), nullable=True),
        sa.Column("previous", sa.JSON(), nullable=False),
        sa.Column("history", sa.JSON(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("created_by", sa.String(100), nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
    )
    for column in ("tenant_id", "group_id", "deployment_id", "os_image_id"):
        op.create_index(f"ix_rollouts_{column}", "rollouts", [column])
    op.create_index("ix_rollouts_state", "rollouts", ["state"])


def downgrade() -> None:
    op.drop_table("rollouts")
