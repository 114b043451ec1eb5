"""Issued device certificates, per-CA CRL state and tenant CA rotation.

Revision ID: 0007_crl_rotation
Revises: 0010_image_integrity
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_crl_rotation"
down_revision = "0010_image_integrity"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def _ca_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("retire_at", _TS, nullable=True),
        sa.Column("crl_number", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("crl_der", sa.LargeBinary(), nullable=True),
        sa.Column("crl_this_update", _TS, nullable=True),
        sa.Column("crl_next_update", _TS, nullable=True),
    ]


def upgrade() -> None:
    # Plain ALTER TABLE ADD/DROP COLUMN, never a batch rebuild (see 0004).
    for column in _ca_columns():
        op.add_column("tenant_cas", column)
    op.create_table(
        "device_certificates",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("ca_id", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("serial", sa.String(40), nullable=False),
        sa.Column("issued_at", _TS, nullable=False),
        sa.Column("not_after", _TS, nullable=False),
        sa.Column("revoked_at", _TS, nullable=True),
        sa.Column("revocation_reason", sa.String(32), nullable=True),
    )
    op.create_index("ix_device_certificates_device_id", "device_certificates", ["device_id"])
    # Partial: the hot-path insert (revoked_at NULL) does not touch it; the CRL query reads it.
    revoked = sa.text("revoked_at IS NOT NULL")
    op.create_index(
        "ix_device_certificates_ca_revoked",
        "device_certificates",
        ["ca_id"],
        sqlite_where=revoked,
        postgresql_where=revoked,
    )


def downgrade() -> None:
    op.drop_table("device_certificates")
    for column in reversed(_ca_columns()):
        op.drop_column("tenant_cas", column.name)
