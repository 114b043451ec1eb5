"""Image integrity: the service-wide OS-publisher keys, and who signed and who revoked an OS image.

Revision ID: 0010_image_integrity
Revises: 0006_token_expiry
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_image_integrity"
down_revision = "0006_token_expiry"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def _os_image_columns() -> list[sa.Column[str]]:
    return [
        sa.Column("signer_key_id", sa.String(64), nullable=True),
        sa.Column("revoked_by", sa.String(100), nullable=True),
    ]


def upgrade() -> None:
    # Plain ADD/DROP COLUMN, no batch rebuild (see 0004_capabilities).
    for column in _os_image_columns():
        op.add_column("os_images", column)
    op.create_table(
        "os_publisher_keys",
        sa.Column("key_id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("public_key_pem", sa.Text(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("created_by", sa.String(100), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("os_publisher_keys")
    for column in reversed(_os_image_columns()):
        op.drop_column("os_images", column.name)
