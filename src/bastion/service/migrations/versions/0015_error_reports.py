"""Error reports: accepted batches, buckets and their counters, raw events, daily roll-ups, release activity.

Revision ID: 0015_error_reports
Revises: 0005_ownership
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015_error_reports"
down_revision = "0005_ownership"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)
_BIGPK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_DEVICE = "devices.device_id"


def upgrade() -> None:
    op.create_table(
        "error_report_batches",
        sa.Column("id", _BIGPK, primary_key=True, autoincrement=True),
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column(
            "device_id", sa.String(64), sa.ForeignKey(_DEVICE, name="fk_error_report_batches_device"), nullable=False
        ),
        sa.Column("batch_id", sa.String(32), nullable=False),
        sa.Column("iat", sa.BigInteger(), nullable=False),
        sa.Column("received_at", _TS, nullable=False),
        sa.Column("records", sa.Integer(), nullable=False),
        sa.Column("dropped", sa.Integer(), nullable=False),
        sa.UniqueConstraint("device_id", "batch_id", name="uq_error_report_batches_device_batch"),
    )
    op.create_index("ix_error_report_batches_received_at", "error_report_batches", ["received_at"])
    op.create_table(
        "error_buckets",
        sa.Column("id", sa.String(20), primary_key=True),
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("algorithm", sa.Integer(), nullable=False),
        sa.Column("category", sa.String(16), nullable=False),
        sa.Column("event_type", sa.String(48), nullable=False),
        sa.Column("component_id", sa.String(64), nullable=False),
        sa.Column("title", sa.String(256), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("first_seen", _TS, nullable=False),
        sa.Column("last_seen", _TS, nullable=False),
        sa.Column("event_count", sa.BigInteger(), nullable=False),
        sa.Column("device_count", sa.Integer(), nullable=False),
        sa.Column("first_version", sa.String(64), nullable=False),
        sa.Column("last_version", sa.String(64), nullable=False),
        sa.Column("resolved_at", _TS, nullable=True),
        sa.Column("resolved_by", sa.String(100), nullable=True),
        sa.Column("resolved_version", sa.String(64), nullable=True),
        sa.Column("regressed_at", _TS, nullable=True),
        sa.UniqueConstraint("tenant_id", "fingerprint", name="uq_error_buckets_tenant_fingerprint"),
    )
    op.create_index("ix_error_buckets_tenant_last_seen", "error_buckets", ["tenant_id", "last_seen", "id"])
    op.create_table(
        "error_bucket_versions",
        sa.Column(
            "bucket_id",
            sa.String(20),
            sa.ForeignKey("error_buckets.id", name="fk_error_bucket_versions_bucket"),
            primary_key=True,
        ),
        sa.Column("version", sa.String(64), primary_key=True),
        sa.Column("event_count", sa.BigInteger(), nullable=False),
        sa.Column("device_count", sa.Integer(), nullable=False),
        sa.Column("first_seen", _TS, nullable=False),
        sa.Column("last_seen", _TS, nullable=False),
    )
    op.create_table(
        "error_bucket_devices",
        sa.Column(
            "bucket_id",
            sa.String(20),
            sa.ForeignKey("error_buckets.id", name="fk_error_bucket_devices_bucket"),
            primary_key=True,
        ),
        sa.Column(
            "device_id", sa.String(64), sa.ForeignKey(_DEVICE, name="fk_error_bucket_devices_device"), primary_key=True
        ),
        sa.Column("event_count", sa.BigInteger(), nullable=False),
        sa.Column("first_seen", _TS, nullable=False),
        sa.Column("last_seen", _TS, nullable=False),
    )
    op.create_index("ix_error_bucket_devices_device_id", "error_bucket_devices", ["device_id"])
    op.create_table(
        "error_events",
        sa.Column("id", _BIGPK, primary_key=True, autoincrement=True),
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("device_id", sa.String(64), sa.ForeignKey(_DEVICE, name="fk_error_events_device"), nullable=False),
        sa.Column(
            "batch_pk",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            sa.ForeignKey("error_report_batches.id", name="fk_error_events_batch"),
            nullable=False,
        ),
        sa.Column("bucket_id", sa.String(20), nullable=True),
        sa.Column("group_id", sa.String(36), nullable=True),
        sa.Column("os_version", sa.String(64), nullable=False),
        sa.Column("component_id", sa.String(64), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("category", sa.String(16), nullable=False),
        sa.Column("event_class", sa.String(8), nullable=False),
        sa.Column("event_type", sa.String(48), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("first_at", _TS, nullable=False),
        sa.Column("last_at", _TS, nullable=False),
        sa.Column("description", sa.String(256), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("received_at", _TS, nullable=False),
    )
    op.create_index("ix_error_events_tenant_last_at", "error_events", ["tenant_id", "last_at"])
    op.create_index(
        "ix_error_events_tenant_release", "error_events", ["tenant_id", "component_id", "version", "last_at"]
    )
    op.create_index("ix_error_events_tenant_os", "error_events", ["tenant_id", "os_version", "last_at"])
    op.create_index("ix_error_events_bucket_id", "error_events", ["bucket_id"])
    op.create_index("ix_error_events_batch_pk", "error_events", ["batch_pk"])
    op.create_index("ix_error_events_device_bucket", "error_events", ["device_id", "bucket_id", "version"])
    op.create_table(
        "error_daily_counts",
        sa.Column("id", _BIGPK, primary_key=True, autoincrement=True),
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("bucket_id", sa.String(20), nullable=True),
        sa.Column("category", sa.String(16), nullable=False),
        sa.Column("event_type", sa.String(48), nullable=False),
        sa.Column("component_id", sa.String(64), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("os_version", sa.String(64), nullable=False),
        sa.Column("group_id", sa.String(36), nullable=True),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.Column("devices", sa.Integer(), nullable=False),
    )
    op.create_index("ix_error_daily_counts_tenant_day", "error_daily_counts", ["tenant_id", "day"])
    op.create_table(
        "device_release_activity",
        sa.Column("tenant_id", sa.String(36), primary_key=True),
        sa.Column(
            "device_id",
            sa.String(64),
            sa.ForeignKey(_DEVICE, name="fk_device_release_activity_device"),
            primary_key=True,
        ),
        sa.Column("component_id", sa.String(64), primary_key=True),
        sa.Column("version", sa.String(64), primary_key=True),
        sa.Column("day", sa.Date(), primary_key=True),
        sa.Column("group_id", sa.String(36), nullable=True),
        sa.Column("first_seen", _TS, nullable=False),
        sa.Column("last_seen", _TS, nullable=False),
    )
    op.create_index(
        "ix_device_release_activity_release", "device_release_activity", ["tenant_id", "component_id", "version", "day"]
    )
    op.create_index("ix_device_release_activity_device_id", "device_release_activity", ["device_id"])


def downgrade() -> None:
    for table in (
        "device_release_activity",
        "error_daily_counts",
        "error_events",
        "error_bucket_devices",
        "error_bucket_versions",
        "error_buckets",
        "error_report_batches",
    ):
        op.drop_table(table)
