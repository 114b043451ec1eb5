"""Initial schema: tenants, CAs, tokens, audit, vendor CAs, OS images, devices, challenges, attestations.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# UTCDateTime in models.py is a TypeDecorator over this type.
_TS = sa.DateTime(timezone=True)
# 64-bit ids on server databases; SQLite needs INTEGER for its rowid alias.
_BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("created_at", _TS, nullable=False),
    )
    op.create_table(
        "tenant_cas",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("tenant_id", sa.String(36), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("cert_pem", sa.Text(), nullable=False),
        sa.Column("sealed_key", sa.LargeBinary(), nullable=False),
        sa.Column("not_after", _TS, nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
    )
    op.create_index("ix_tenant_cas_tenant_id", "tenant_cas", ["tenant_id"])
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("tenant_id", sa.String(36), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("secret_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("revoked_at", _TS, nullable=True),
    )
    op.create_index("ix_api_tokens_tenant_id", "api_tokens", ["tenant_id"])
    op.create_table(
        "audit_events",
        sa.Column("id", _BIGID, primary_key=True, autoincrement=True),
        sa.Column("at", _TS, nullable=False),
        sa.Column("tenant_id", sa.String(36), nullable=True),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(200), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
    )
    op.create_index("ix_audit_events_at", "audit_events", ["at"])
    op.create_index("ix_audit_events_tenant_id", "audit_events", ["tenant_id"])
    op.create_table(
        "vendor_cas",
        sa.Column("fingerprint", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("cert_pem", sa.Text(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
    )
    op.create_table(
        "os_images",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("tenant_id", sa.String(36), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("measurement", sa.String(64), nullable=False),
        sa.Column("component_id", sa.String(36), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("security_version", sa.Integer(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("published_at", _TS, nullable=False),
        sa.Column("revoked_at", _TS, nullable=True),
        sa.UniqueConstraint("tenant_id", "measurement", name="uq_os_images_tenant_measurement"),
    )
    op.create_index("ix_os_images_tenant_id", "os_images", ["tenant_id"])
    op.create_table(
        "devices",
        sa.Column("device_id", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.String(36), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("claimed_at", _TS, nullable=False),
        sa.Column("claimed_by", sa.String(100), nullable=False),
        sa.Column("revoked_at", _TS, nullable=True),
        sa.Column("last_attested_at", _TS, nullable=True),
        sa.Column("last_result", sa.String(16), nullable=True),
        sa.Column("last_reason", sa.String(200), nullable=True),
        sa.Column("os_version", sa.String(64), nullable=True),
        sa.Column("os_measurement", sa.String(64), nullable=True),
        sa.Column("cert_serial", sa.String(64), nullable=True),
        sa.Column("cert_not_after", _TS, nullable=True),
    )
    op.create_index("ix_devices_tenant_id", "devices", ["tenant_id"])
    op.create_table(
        "challenges",
        sa.Column("nonce", sa.LargeBinary(32), primary_key=True),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
    )
    op.create_index("ix_challenges_expires_at", "challenges", ["expires_at"])
    op.create_table(
        "attestations",
        sa.Column("id", _BIGID, primary_key=True, autoincrement=True),
        sa.Column("at", _TS, nullable=False),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("tenant_id", sa.String(36), nullable=True),
        sa.Column("result", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("os_version", sa.String(64), nullable=True),
        sa.Column("os_measurement", sa.String(64), nullable=True),
        sa.Column("cert_serial", sa.String(64), nullable=True),
    )
    op.create_index("ix_attestations_device_at", "attestations", ["device_id", "at"])
    op.create_index("ix_attestations_tenant_id", "attestations", ["tenant_id"])


def downgrade() -> None:
    for table in (
        "attestations",
        "challenges",
        "devices",
        "os_images",
        "vendor_cas",
        "audit_events",
        "api_tokens",
        "tenant_cas",
        "tenants",
    ):
        op.drop_table(table)
