"""The devices counted per bucket and version, kept past the raw events' retention (ADR 0028).

Until now "has this device been counted in this bucket's version" was read from the
raw events, which retention rolls up and deletes: a device seen again after that
was counted a second time. The table is filled from the events still stored.

Revision ID: 0020_bucket_version_devices
Revises: 0019_console_sessions
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020_bucket_version_devices"
down_revision = "0019_console_sessions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "error_bucket_version_devices",
        sa.Column(
            "bucket_id",
            sa.String(20),
            sa.ForeignKey("error_buckets.id", name="fk_error_bucket_version_devices_bucket"),
            primary_key=True,
        ),
        sa.Column("version", sa.String(64), primary_key=True),
        sa.Column(
            "device_id",
            sa.String(64),
            sa.ForeignKey("devices.device_id", name="fk_error_bucket_version_devices_device"),
            primary_key=True,
        ),
    )
    op.create_index("ix_error_bucket_version_devices_device_id", "error_bucket_version_devices", ["device_id"])
    op.execute(
        "INSERT INTO error_bucket_version_devices (bucket_id, version, device_id)"
        " SELECT DISTINCT bucket_id, version, device_id FROM error_events WHERE bucket_id IS NOT NULL"
    )


def downgrade() -> None:
    op.drop_index("ix_error_bucket_version_devices_device_id", table_name="error_bucket_version_devices")
    op.drop_table("error_bucket_version_devices")
