"""Fleet model: products, device groups, app keys and images, deployments, OS feeds, device update status.

Revision ID: 0002_fleet
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_fleet"
down_revision = "0001"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)
_BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "products",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("tenant_id", sa.String(36), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.UniqueConstraint("tenant_id", "name", name="uq_products_tenant_name"),
    )
    op.create_index("ix_products_tenant_id", "products", ["tenant_id"])
    op.create_table(
        "device_groups",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("tenant_id", sa.String(36), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("product_id", sa.String(36), sa.ForeignKey("products.id"), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("update_policy", sa.String(32), nullable=False),
        sa.Column("os_feed", sa.String(16), nullable=False),
        sa.Column("window_start", sa.String(5), nullable=True),
        sa.Column("window_minutes", sa.Integer(), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.UniqueConstraint("product_id", "name", name="uq_device_groups_product_name"),
    )
    op.create_index("ix_device_groups_tenant_id", "device_groups", ["tenant_id"])
    op.create_index("ix_device_groups_product_id", "device_groups", ["product_id"])
    # SQLite cannot add a foreign key in place: batch mode rebuilds the table there.
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("group_id", sa.String(36), nullable=True))
        batch.create_foreign_key("fk_devices_group_id", "device_groups", ["group_id"], ["id"])
        batch.create_index("ix_devices_group_id", ["group_id"])
    with op.batch_alter_table("os_images") as batch:
        batch.add_column(sa.Column("feed", sa.String(16), nullable=False, server_default="retail"))
        batch.add_column(sa.Column("promoted_at", _TS, nullable=True))
    op.create_table(
        "app_signing_keys",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("tenant_id", sa.String(36), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("public_key_pem", sa.Text(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("created_by", sa.String(100), nullable=False),
        sa.UniqueConstraint("tenant_id", "key_id", name="uq_app_signing_keys_tenant_key"),
    )
    op.create_index("ix_app_signing_keys_tenant_id", "app_signing_keys", ["tenant_id"])
    op.create_table(
        "app_images",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("tenant_id", sa.String(36), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("component_id", sa.String(36), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("security_version", sa.Integer(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("signer_key_id", sa.String(64), nullable=False),
        sa.Column("uploaded_at", _TS, nullable=False),
        sa.Column("uploaded_by", sa.String(100), nullable=False),
        sa.UniqueConstraint("tenant_id", "sha256", name="uq_app_images_tenant_sha256"),
        sa.UniqueConstraint("tenant_id", "component_id", "version", name="uq_app_images_tenant_component_version"),
    )
    op.create_index("ix_app_images_tenant_id", "app_images", ["tenant_id"])
    op.create_table(
        "deployments",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("tenant_id", sa.String(36), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("group_id", sa.String(36), sa.ForeignKey("device_groups.id"), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("created_by", sa.String(100), nullable=False),
    )
    op.create_index("ix_deployments_tenant_id", "deployments", ["tenant_id"])
    op.create_index("ix_deployments_group_id", "deployments", ["group_id"])
    op.create_table(
        "deployment_images",
        sa.Column("deployment_id", sa.Integer(), sa.ForeignKey("deployments.id"), primary_key=True),
        sa.Column("image_id", sa.Integer(), sa.ForeignKey("app_images.id"), primary_key=True),
    )
    op.create_table(
        "device_update_status",
        sa.Column("device_id", sa.String(64), sa.ForeignKey("devices.device_id"), primary_key=True),
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("group_id", sa.String(36), nullable=True),
        sa.Column("deployment_id", sa.Integer(), nullable=True),
        sa.Column("os_version", sa.String(64), nullable=False),
        sa.Column("boot_slot", sa.String(8), nullable=False),
        sa.Column("installed", sa.JSON(), nullable=False),
        sa.Column("last_result", sa.String(32), nullable=True),
        sa.Column("last_result_at", _TS, nullable=True),
        sa.Column("last_report_iat", sa.BigInteger(), nullable=False),
        sa.Column("reported_at", _TS, nullable=False),
    )
    op.create_index("ix_device_update_status_tenant_id", "device_update_status", ["tenant_id"])
    op.create_table(
        "device_update_events",
        sa.Column("id", _BIGID, primary_key=True, autoincrement=True),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("at", _TS, nullable=False),
        sa.Column("received_at", _TS, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("component_id", sa.String(64), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("deployment_id", sa.Integer(), nullable=True),
    )
    op.create_index("ix_device_update_events_device_at", "device_update_events", ["device_id", "at"])
    op.create_index("ix_device_update_events_tenant_id", "device_update_events", ["tenant_id"])


def downgrade() -> None:
    for table in (
        "device_update_events",
        "device_update_status",
        "deployment_images",
        "deployments",
        "app_images",
        "app_signing_keys",
    ):
        op.drop_table(table)
    with op.batch_alter_table("os_images") as batch:
        batch.drop_column("promoted_at")
        batch.drop_column("feed")
    with op.batch_alter_table("devices") as batch:
        batch.drop_index("ix_devices_group_id")
        batch.drop_constraint("fk_devices_group_id", type_="foreignkey")
        batch.drop_column("group_id")
    op.drop_table("device_groups")
    op.drop_table("products")
