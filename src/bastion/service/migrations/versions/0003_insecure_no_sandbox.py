"""Attestation records say whether the device claimed ``--insecure-no-sandbox`` (EAT claim -70006).

Revision ID: 0003_insecure_no_sandbox
Revises: 0002_fleet
Create Date: 2026-12-01

Rows recorded before this migration keep NULL: their evidence was not read for it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_insecure_no_sandbox"
down_revision = "0002_fleet"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("attestations") as batch:
        batch.add_column(sa.Column("insecure_no_sandbox", sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("attestations") as batch:
        batch.drop_column("insecure_no_sandbox")
