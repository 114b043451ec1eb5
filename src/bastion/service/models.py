"""SQLAlchemy 2 models for the Security Service.

The schema is created and changed only through the Alembic migrations in
``bastion/service/migrations``; tests build databases with ``upgrade head``.
All timestamps are timezone-aware UTC.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A DateTime that always round-trips as timezone-aware UTC (SQLite drops tzinfo)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: object) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: dt.datetime | None, dialect: object) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    """Declarative base for every service table."""


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # UUID4 string
    name: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class TenantCA(Base):
    """A tenant's CA. The private key is sealed under the master key (aad = tenant id)."""

    __tablename__ = "tenant_cas"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    cert_pem: Mapped[str] = mapped_column(Text)
    sealed_key: Mapped[bytes] = mapped_column(LargeBinary)
    not_after: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    #: When a successor superseded it, the end of the overlap: from then on the
    #: CA is retired (out of the trust bundle, no CRL). None: not superseded
    #: (migration 0007_crl_rotation; docs/adr/0012-tenant-ca-lifecycle.md).
    retire_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    #: The number of the last CRL this CA signed (RFC 5280 5.2.3: increases monotonically).
    crl_number: Mapped[int] = mapped_column(BigInteger, server_default="0")
    #: The CA's current signed CRL (DER), published from committed state; None before the first.
    crl_der: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    #: The current CRL's thisUpdate: a revocation after it makes the CRL stale.
    crl_this_update: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    #: The current CRL's nextUpdate: it is re-signed well before this.
    crl_next_update: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class ApiToken(Base):
    """An operator token. Only the SHA-256 of its secret part is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # public token id
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(16))  # admin | contributor | reader
    secret_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    #: When the token stops working; None only for tokens minted before 0006_token_expiry.
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    #: Who revoked it (an audit actor, e.g. ``token:<id>``).
    revoked_by: Mapped[str | None] = mapped_column(String(100), nullable=True)


class AuditEvent(Base):
    """One operator write (or a denied attempt at one)."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)
    tenant_id: Mapped[str | None] = mapped_column(String(36), index=True, nullable=True)
    actor: Mapped[str] = mapped_column(String(100))  # "token:<id>", "cli:local", "device:<id>"
    action: Mapped[str] = mapped_column(String(64))  # e.g. "device.claim"
    target: Mapped[str] = mapped_column(String(200))
    outcome: Mapped[str] = mapped_column(String(16))  # "ok" | "denied" | "failed"
    detail: Mapped[str] = mapped_column(Text, default="")


class VendorCA(Base):
    """A silicon vendor CA trusted to endorse DeviceID certificates (service-wide)."""

    __tablename__ = "vendor_cas"

    fingerprint: Mapped[str] = mapped_column(String(64), primary_key=True)  # SHA-256 of DER
    name: Mapped[str] = mapped_column(String(200))
    cert_pem: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class OsImage(Base):
    """A known-good OS reference value: the measurement of a published OS image."""

    __tablename__ = "os_images"
    __table_args__ = (UniqueConstraint("tenant_id", "measurement", name="uq_os_images_tenant_measurement"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    measurement: Mapped[str] = mapped_column(String(64))  # hex SHA-256 of the image file
    component_id: Mapped[str] = mapped_column(String(36))
    version: Mapped[str] = mapped_column(String(64))
    security_version: Mapped[int] = mapped_column(Integer)
    size: Mapped[int] = mapped_column(BigInteger)
    published_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    #: The feed it was published on: "retail" or "retail-eval" (migration 0002_fleet).
    feed: Mapped[str] = mapped_column(String(16), server_default="retail")
    #: When a retail-eval image was promoted to retail too (None: not promoted).
    promoted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    #: The OS-publisher key that signed it (migration 0010_image_integrity; None: published before).
    signer_key_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: Who revoked it (migration 0010_image_integrity).
    revoked_by: Mapped[str | None] = mapped_column(String(100), nullable=True)


class Device(Base):
    """A claimed device. Unclaimed devices have no row."""

    __tablename__ = "devices"

    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    claimed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    claimed_by: Mapped[str] = mapped_column(String(100))
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_attested_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_result: Mapped[str | None] = mapped_column(String(16), nullable=True)  # "ok" | "failed"
    last_reason: Mapped[str | None] = mapped_column(String(200), nullable=True)
    os_version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    os_measurement: Mapped[str | None] = mapped_column(String(64), nullable=True)
    cert_serial: Mapped[str | None] = mapped_column(String(64), nullable=True)
    cert_not_after: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    #: The device group it is assigned to (migration 0002_fleet); None = no updates.
    group_id: Mapped[str | None] = mapped_column(
        ForeignKey("device_groups.id", name="fk_devices_group_id"), nullable=True, index=True
    )
    #: The device capability it last attested under (migration 0004_capabilities); None = none.
    capability_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    #: Its kind: "appDevelopment" (development mode) or "fieldServicing".
    capability_kind: Mapped[str | None] = mapped_column(String(32), nullable=True)
    #: The group it returns to when it leaves development mode.
    group_before_development: Mapped[str | None] = mapped_column(String(36), nullable=True)

    @property
    def development_mode(self) -> bool:
        """Whether the device last attested in development mode (an appDevelopment capability)."""
        return self.capability_kind == "appDevelopment"


class Challenge(Base):
    """A consumed attestation nonce, kept until shortly after it expires.

    Challenges are issued without a database write (a MAC binds the nonce to the
    device ID and its expiry, see ``attestation/challenges.py``); an attestation
    inserts its nonce here in its own transaction, so a second use is a
    primary-key conflict: ``nonce_replayed``.
    """

    __tablename__ = "challenges"

    nonce: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)


class Attestation(Base):
    """One attestation attempt and its verdict."""

    __tablename__ = "attestations"
    __table_args__ = (Index("ix_attestations_device_at", "device_id", "at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    device_id: Mapped[str] = mapped_column(String(64))  # as claimed, even if unverified
    tenant_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    result: Mapped[str] = mapped_column(String(16))  # "ok" | "failed"
    reason: Mapped[str] = mapped_column(String(64))  # "ok" or a failure code
    detail: Mapped[str] = mapped_column(Text, default="")
    os_version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    os_measurement: Mapped[str | None] = mapped_column(String(64), nullable=True)
    cert_serial: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: The EAT claimed the device runs without sandboxes (``--insecure-no-sandbox``); None when
    #: the evidence was not read (migration 0003_insecure_no_sandbox).
    insecure_no_sandbox: Mapped[bool | None] = mapped_column(Boolean, nullable=True)


# --- fleet model (migration 0002_fleet) -------------------------------------------


class Product(Base):
    """A tenant's product; its device groups hang off it."""

    __tablename__ = "products"
    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_products_tenant_name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # UUID4 string
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class DeviceGroup(Base):
    """A device group: an update policy, an OS feed and a maintenance window."""

    __tablename__ = "device_groups"
    __table_args__ = (UniqueConstraint("product_id", "name", name="uq_device_groups_product_name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # UUID4 string
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    product_id: Mapped[str] = mapped_column(ForeignKey("products.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    update_policy: Mapped[str] = mapped_column(String(32))  # UpdateAll | No3rdPartyAppUpdates | NoUpdates
    os_feed: Mapped[str] = mapped_column(String(16))  # retail | retail-eval
    window_start: Mapped[str | None] = mapped_column(String(5), nullable=True)  # "HH:MM" UTC
    window_minutes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class AppSigningKey(Base):
    """The public half of a tenant app-signing key (the private half never reaches the service)."""

    __tablename__ = "app_signing_keys"
    __table_args__ = (UniqueConstraint("tenant_id", "key_id", name="uq_app_signing_keys_tenant_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    key_id: Mapped[str] = mapped_column(String(64))  # hex SHA-256 of the SEC1 public key (image signer id)
    name: Mapped[str] = mapped_column(String(100))
    public_key_pem: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[str] = mapped_column(String(100))


class AppImage(Base):
    """An uploaded, signature-checked app image package, stored in the blob store by SHA-256."""

    __tablename__ = "app_images"
    __table_args__ = (
        UniqueConstraint("tenant_id", "sha256", name="uq_app_images_tenant_sha256"),
        UniqueConstraint("tenant_id", "component_id", "version", name="uq_app_images_tenant_component_version"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    sha256: Mapped[str] = mapped_column(String(64))
    component_id: Mapped[str] = mapped_column(String(36))
    version: Mapped[str] = mapped_column(String(64))
    security_version: Mapped[int] = mapped_column(Integer)
    size: Mapped[int] = mapped_column(BigInteger)
    signer_key_id: Mapped[str] = mapped_column(String(64))
    uploaded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    uploaded_by: Mapped[str] = mapped_column(String(100))


class Deployment(Base):
    """A set of app images for a device group; the group's newest deployment is current."""

    __tablename__ = "deployments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    group_id: Mapped[str] = mapped_column(ForeignKey("device_groups.id"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[str] = mapped_column(String(100))


class DeploymentImage(Base):
    """One app image of a deployment."""

    __tablename__ = "deployment_images"

    deployment_id: Mapped[int] = mapped_column(ForeignKey("deployments.id"), primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("app_images.id"), primary_key=True)


class DeviceUpdateStatus(Base):
    """The latest update status a device reported (one row per device)."""

    __tablename__ = "device_update_status"

    device_id: Mapped[str] = mapped_column(ForeignKey("devices.device_id"), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(36), index=True)
    group_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    deployment_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    os_version: Mapped[str] = mapped_column(String(64))
    boot_slot: Mapped[str] = mapped_column(String(8))
    installed: Mapped[list[dict[str, str]]] = mapped_column(JSON)  # [{"component_id", "version"}]
    last_result: Mapped[str | None] = mapped_column(String(32), nullable=True)  # kind of the newest event
    last_result_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_report_iat: Mapped[int] = mapped_column(BigInteger)  # replay guard: strictly increasing
    reported_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class DeviceUpdateEvent(Base):
    """One update event a device reported (its update history)."""

    __tablename__ = "device_update_events"
    __table_args__ = (Index("ix_device_update_events_device_at", "device_id", "at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(64))
    tenant_id: Mapped[str] = mapped_column(String(36), index=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    kind: Mapped[str] = mapped_column(String(32))
    component_id: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(Text, default="")
    deployment_id: Mapped[int | None] = mapped_column(Integer, nullable=True)


# --- device capabilities (migration 0004_capabilities) ---------------------------


class DeviceCapability(Base):
    """A capability file issued for one device (docs/compartments.md, "Development mode and sideloading").

    The file itself goes to the caller; the service keeps what it needs to
    recognise and revoke it: its id, kind, device, developer key ids and digest.
    """

    __tablename__ = "device_capabilities"
    __table_args__ = (Index("ix_device_capabilities_device_id", "device_id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # UUID4, also in the file
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.device_id"))
    kind: Mapped[str] = mapped_column(String(32))  # appDevelopment | fieldServicing
    developer_key_ids: Mapped[list[str]] = mapped_column(JSON)  # hex SHA-256 of each SEC1 key
    #: The Development group the device joins (appDevelopment only).
    group_id: Mapped[str | None] = mapped_column(ForeignKey("device_groups.id"), nullable=True)
    sha256: Mapped[str] = mapped_column(String(64))  # of the file
    issued_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    issued_by: Mapped[str] = mapped_column(String(100))
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revoked_by: Mapped[str | None] = mapped_column(String(100), nullable=True)


# --- operator token expiry, failed authentication (migration 0006_token_expiry) ---


class AuthFailure(Base):
    """Failed operator authentications, counted per time window and reason (service-wide).

    A failed authentication proves nothing about who sent it, so it is not
    written into any tenant's audit view (an outsider could flood it by
    presenting a tenant's public token id). One row per (window, reason) is
    counted up instead; old windows are pruned, so the table stays bounded.
    """

    __tablename__ = "auth_failures"
    __table_args__ = (UniqueConstraint("window_start", "reason", name="uq_auth_failures_window_reason"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    window_start: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)
    reason: Mapped[str] = mapped_column(String(32))  # an Unauthenticated error code
    count: Mapped[int] = mapped_column(Integer)
    first_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    last_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    last_target: Mapped[str] = mapped_column(String(200))  # e.g. "GET /api/v1/whoami"


# --- image integrity (migration 0010_image_integrity) ----------------------------


class OsPublisherKey(Base):
    """A public key of an OS publisher, trusted service-wide to sign OS images (issue 7, section 5).

    ``POST /os-images`` verifies every package against these keys before the
    image becomes known-good; the private half never reaches the service.
    """

    __tablename__ = "os_publisher_keys"

    key_id: Mapped[str] = mapped_column(String(64), primary_key=True)  # hex SHA-256 of the SEC1 public key
    name: Mapped[str] = mapped_column(String(200))
    public_key_pem: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[str] = mapped_column(String(100))


# --- device certificates and CRLs (migration 0007_crl_rotation) -------------------


class DeviceCertificate(Base):
    """A device certificate a tenant CA issued (one row per successful attestation).

    Written in the attestation's own write transaction, so a certificate is on
    record exactly when the device got it. No foreign keys: the insert is on the
    hot path, and the row must outlive the device's claim (an unclaimed device
    has no ``devices`` row, but its unexpired certificates still go on the CRL).
    """

    __tablename__ = "device_certificates"
    __table_args__ = (
        Index("ix_device_certificates_device_id", "device_id"),
        # Partial: only revoked rows are indexed (the CRL query), so the insert on
        # the attestation hot path writes one index, not two.
        Index(
            "ix_device_certificates_ca_revoked",
            "ca_id",
            sqlite_where=text("revoked_at IS NOT NULL"),
            postgresql_where=text("revoked_at IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    ca_id: Mapped[int] = mapped_column(Integer)  # tenant_cas.id of the issuer
    tenant_id: Mapped[str] = mapped_column(String(36))
    device_id: Mapped[str] = mapped_column(String(64))
    serial: Mapped[str] = mapped_column(String(40))  # lowercase hex, at most 159 bits
    issued_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    not_after: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    #: When it was put on its CA's CRL; None = not revoked.
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    #: The RFC 5280 CRLReason it carries there (e.g. "privilege_withdrawn").
    revocation_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)


# --- attestation appraisal (migration 0009_appraisal) ----------------------------


class GroupAppraisalPolicy(Base):
    """The appraisal rules a tenant relaxed for one device group (ADR 0014).

    No row means every rule is enforced (withdrawing the last relaxation deletes
    the row); the history of changes is in the audit log (``device_group.appraisal``).
    """

    __tablename__ = "group_appraisal_policies"

    group_id: Mapped[str] = mapped_column(ForeignKey("device_groups.id"), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    relaxed: Mapped[list[str]] = mapped_column(JSON)  # rule names, sorted (bastion.service.attestation.appraisal)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    updated_by: Mapped[str] = mapped_column(String(100))


# --- device ownership history (migration 0005_ownership) --------------------------


class DeviceOwnershipEvent(Base):
    """One change of a device's owner: a claim (with its proof), an unclaim or a release to a tenant.

    The ``devices`` row is the current owner; this table is the history, kept
    after the row is gone. The latest event of a device says whether it is
    released to one tenant (only that tenant may claim it next), and a claim's
    ``voucher_id`` makes a voucher single use per device.
    """

    __tablename__ = "device_ownership_events"
    __table_args__ = (Index("ix_device_ownership_events_device_id", "device_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(64))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)  # the owner before/after
    event: Mapped[str] = mapped_column(String(16))  # claim | unclaim | release
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    actor: Mapped[str] = mapped_column(String(100))
    #: How a claim was proven: "evidence" (a claim challenge) or "voucher"; None for unclaim/release.
    method: Mapped[str | None] = mapped_column(String(16), nullable=True)
    #: The voucher a claim used (hex of its 16-byte ID).
    voucher_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    #: The vendor CA that endorsed the device (evidence) or signed the voucher (hex SHA-256 of its DER).
    vendor_fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: The tenant a release names; only it may claim the device next.
    to_tenant_id: Mapped[str | None] = mapped_column(ForeignKey("tenants.id"), nullable=True, index=True)
    detail: Mapped[str] = mapped_column(Text, default="")


# --- error reports (migration 0015_error_reports) ---------------------------------


class ErrorReportBatch(Base):
    """One accepted error-report batch of a device: the idempotency record of its ``batch_id``.

    The unique constraint makes a replay count once, also when two copies race
    (the second insert fails and is answered ``duplicate``). Rows older than the
    dedup window are pruned (their events go first); a batch older than that is
    refused by its ``iat`` bound anyway.
    """

    __tablename__ = "error_report_batches"
    __table_args__ = (
        UniqueConstraint("device_id", "batch_id", name="uq_error_report_batches_device_batch"),
        Index("ix_error_report_batches_received_at", "received_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(36))
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.device_id", name="fk_error_report_batches_device"))
    batch_id: Mapped[str] = mapped_column(String(32))  # 32 lowercase hex
    iat: Mapped[int] = mapped_column(BigInteger)  # when the device sealed it (seconds)
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    records: Mapped[int] = mapped_column(Integer)
    dropped: Mapped[int] = mapped_column(Integer)  # records the device queue dropped before this batch


class ErrorBucket(Base):
    """A group of error records with one fingerprint (ADR 0015), with its counters and state.

    ``state``: ``open`` → ``resolved`` (an operator; ``resolved_version`` = the
    highest version seen then) → ``regressed`` when a record arrives from a
    version newer than ``resolved_version``. ``algorithm`` is the fingerprint
    version that made it; an upgrade makes new buckets, never regroups old ones.
    """

    __tablename__ = "error_buckets"
    __table_args__ = (
        UniqueConstraint("tenant_id", "fingerprint", name="uq_error_buckets_tenant_fingerprint"),
        Index("ix_error_buckets_tenant_last_seen", "tenant_id", "last_seen", "id"),
    )

    id: Mapped[str] = mapped_column(String(20), primary_key=True)  # "b" + 16 hex of the fingerprint
    tenant_id: Mapped[str] = mapped_column(String(36))
    fingerprint: Mapped[str] = mapped_column(String(64))  # hex SHA-256
    algorithm: Mapped[int] = mapped_column(Integer)
    category: Mapped[str] = mapped_column(String(16))
    event_type: Mapped[str] = mapped_column(String(48))
    component_id: Mapped[str] = mapped_column(String(64))  # "" = OS-wide
    title: Mapped[str] = mapped_column(String(256))
    state: Mapped[str] = mapped_column(String(16))  # open | resolved | regressed
    first_seen: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    last_seen: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    event_count: Mapped[int] = mapped_column(BigInteger)
    device_count: Mapped[int] = mapped_column(Integer)
    first_version: Mapped[str] = mapped_column(String(64))
    last_version: Mapped[str] = mapped_column(String(64))
    resolved_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    resolved_by: Mapped[str | None] = mapped_column(String(100), nullable=True)
    resolved_version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    regressed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class ErrorBucketVersion(Base):
    """A bucket's counters for one version of its component."""

    __tablename__ = "error_bucket_versions"

    bucket_id: Mapped[str] = mapped_column(
        ForeignKey("error_buckets.id", name="fk_error_bucket_versions_bucket"), primary_key=True
    )
    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    event_count: Mapped[int] = mapped_column(BigInteger)
    device_count: Mapped[int] = mapped_column(Integer)
    first_seen: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    last_seen: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class ErrorBucketDevice(Base):
    """A bucket's counters for one device (deleted when the device is unclaimed)."""

    __tablename__ = "error_bucket_devices"
    __table_args__ = (Index("ix_error_bucket_devices_device_id", "device_id"),)

    bucket_id: Mapped[str] = mapped_column(
        ForeignKey("error_buckets.id", name="fk_error_bucket_devices_bucket"), primary_key=True
    )
    device_id: Mapped[str] = mapped_column(
        ForeignKey("devices.device_id", name="fk_error_bucket_devices_device"), primary_key=True
    )
    event_count: Mapped[int] = mapped_column(BigInteger)
    first_seen: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    last_seen: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class ErrorBucketVersionDevice(Base):
    """A device counted in a bucket's version (migration 0020): kept when raw events are rolled up.

    ``ErrorBucketVersion.device_count`` counts these; a device is counted once per
    bucket and version, also after its events are past their retention. Deleted
    with the device's other error rows when it is unclaimed.
    """

    __tablename__ = "error_bucket_version_devices"
    __table_args__ = (Index("ix_error_bucket_version_devices_device_id", "device_id"),)

    bucket_id: Mapped[str] = mapped_column(
        ForeignKey("error_buckets.id", name="fk_error_bucket_version_devices_bucket"), primary_key=True
    )
    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    device_id: Mapped[str] = mapped_column(
        ForeignKey("devices.device_id", name="fk_error_bucket_version_devices_device"), primary_key=True
    )


class ErrorEvent(Base):
    """One raw error record of an accepted batch (kept for the raw retention, then rolled up)."""

    __tablename__ = "error_events"
    __table_args__ = (
        Index("ix_error_events_tenant_last_at", "tenant_id", "last_at"),
        Index("ix_error_events_tenant_release", "tenant_id", "component_id", "version", "last_at"),
        Index("ix_error_events_tenant_os", "tenant_id", "os_version", "last_at"),
        Index("ix_error_events_bucket_id", "bucket_id"),
        Index("ix_error_events_batch_pk", "batch_pk"),
        # The device's rows on unclaim, and "has this device hit this bucket in this version" at ingest.
        Index("ix_error_events_device_bucket", "device_id", "bucket_id", "version"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(36))
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.device_id", name="fk_error_events_device"))
    batch_pk: Mapped[int] = mapped_column(ForeignKey("error_report_batches.id", name="fk_error_events_batch"))
    bucket_id: Mapped[str | None] = mapped_column(String(20), nullable=True)
    group_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    os_version: Mapped[str] = mapped_column(String(64))
    component_id: Mapped[str] = mapped_column(String(64))  # "" = OS-wide
    version: Mapped[str] = mapped_column(String(64))
    category: Mapped[str] = mapped_column(String(16))
    event_class: Mapped[str] = mapped_column(String(8))
    event_type: Mapped[str] = mapped_column(String(48))
    count: Mapped[int] = mapped_column(BigInteger)
    first_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    last_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    description: Mapped[str] = mapped_column(String(256))
    #: exception, frames, signal, exit_code, uptime_s, capability, reason, stderr_tail (those present).
    detail: Mapped[dict[str, object]] = mapped_column(JSON)
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class ErrorDailyCount(Base):
    """Raw events past their retention, rolled up per day (no device data beyond a count)."""

    __tablename__ = "error_daily_counts"
    __table_args__ = (Index("ix_error_daily_counts_tenant_day", "tenant_id", "day"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(36))
    day: Mapped[dt.date] = mapped_column(Date)
    bucket_id: Mapped[str | None] = mapped_column(String(20), nullable=True)
    category: Mapped[str] = mapped_column(String(16))
    event_type: Mapped[str] = mapped_column(String(48))
    component_id: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(64))
    os_version: Mapped[str] = mapped_column(String(64))
    group_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    events: Mapped[int] = mapped_column(BigInteger)  # sum of the records' counts
    devices: Mapped[int] = mapped_column(Integer)  # distinct devices of that roll-up (not additive across rows)


class DeviceReleaseActivity(Base):
    """A device seen running a release on a day (an error-report batch or a status report).

    One row per installed app and one with ``component_id ""`` for the OS
    (``version`` = the OS version); the population that crash-free rates divide by.
    """

    __tablename__ = "device_release_activity"
    __table_args__ = (
        Index("ix_device_release_activity_release", "tenant_id", "component_id", "version", "day"),
        Index("ix_device_release_activity_device_id", "device_id"),
    )

    tenant_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    device_id: Mapped[str] = mapped_column(
        ForeignKey("devices.device_id", name="fk_device_release_activity_device"), primary_key=True
    )
    component_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    group_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    first_seen: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    last_seen: Mapped[dt.datetime] = mapped_column(UTCDateTime())


# --- staged rollouts (migration 0017_rollouts) ------------------------------------


class Rollout(Base):
    """A staged rollout of one deployment, or of one OS promotion, to one device group (docs/adr/0017).

    ``stages`` are shares of the group in basis points (``bastion.images.rollout``);
    the devices of a stage are those whose rollout point for ``seed`` falls below it.
    ``state`` is ``running`` (the stage is offered; no device of it installed yet),
    ``soaking`` (the soak clock runs from ``soak_started_at``), ``halted`` (a rule
    fired, or an operator will resume it), ``completed`` or ``aborted``. ``previous``
    names the images the group ran before (the fallback a halted or aborted rollout
    offers again). ``version`` makes every update a compare-and-set, so two service
    workers evaluating the same rollout never both advance it.
    """

    __tablename__ = "rollouts"
    __table_args__ = (Index("ix_rollouts_state", "state"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    group_id: Mapped[str] = mapped_column(ForeignKey("device_groups.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # deployment | os
    deployment_id: Mapped[int | None] = mapped_column(ForeignKey("deployments.id"), nullable=True, index=True)
    os_image_id: Mapped[int | None] = mapped_column(ForeignKey("os_images.id"), nullable=True, index=True)
    seed: Mapped[str] = mapped_column(String(64))
    stages: Mapped[list[int]] = mapped_column(JSON)  # basis points, increasing, the last 10000
    stage: Mapped[int] = mapped_column(Integer)  # index into stages
    state: Mapped[str] = mapped_column(String(16))
    stage_started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    soak_started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    soak_seconds: Mapped[int] = mapped_column(Integer)
    #: {"crash_drop_points": float | None, "new_bucket": bool, "install_failures": int | None, "min_sample": int}
    halt_rules: Mapped[dict[str, object]] = mapped_column(JSON)
    halt_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: The release the group ran before: [{"image_id"|"os_image_id", "component_id", "version"}].
    previous: Mapped[list[dict[str, object]]] = mapped_column(JSON)
    #: Stage changes, oldest first (bounded): [{"at", "event", "stage", "percent_bp", "by", "reason"}].
    history: Mapped[list[dict[str, object]]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[str] = mapped_column(String(100))
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    version: Mapped[int] = mapped_column(Integer)

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012 - SQLAlchemy's declarative hook


# --- device log requests (migration 0016_fleet_health) -----------------------------


class DeviceLogRequest(Base):
    """An operator's request for an app's recent log from one device, and the tail it uploaded.

    ``state``: ``pending`` (handed to the device in every error-report answer
    until ``expires_at``) → ``delivered`` (text stored, once) or ``expired``.
    """

    __tablename__ = "device_log_requests"
    __table_args__ = (Index("ix_device_log_requests_device_state", "device_id", "state", "expires_at"),)

    id: Mapped[str] = mapped_column(String(20), primary_key=True)  # "lr" + 16 random hex
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", name="fk_device_log_requests_tenant"))
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.device_id", name="fk_device_log_requests_device"))
    component_id: Mapped[str] = mapped_column(String(64))
    requested_by: Mapped[str] = mapped_column(String(100))
    requested_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    state: Mapped[str] = mapped_column(String(16))  # pending | delivered | expired
    delivered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    text: Mapped[str | None] = mapped_column(Text, nullable=True)
    truncated: Mapped[bool] = mapped_column(Boolean, default=False)
    max_bytes: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


# --- faults (migration 0018) ---


class OsBlocklistClear(Base):
    """An operator's clear of a device-side blocklisted OS image, for a group or one device (ADR 0018).

    Carried to devices in the group's signed TUF targets ``custom``
    (``bastion.blocklist_clears``); ``device_id`` None clears it for the whole group.
    """

    __tablename__ = "os_blocklist_clears"
    __table_args__ = (Index("ix_os_blocklist_clears_group", "group_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    group_id: Mapped[str] = mapped_column(ForeignKey("device_groups.id"))
    sha256: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(64))
    device_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[str] = mapped_column(String(100))


# --- operator console (migration 0019_console_sessions, ADR 0022) ---


class ConsoleSession(Base):
    """A signed-in console session: a browser holding a cookie, on behalf of one operator token.

    Only the SHA-256 of the cookie's 32 random bytes is stored, never the cookie itself. The
    session dies with its token (revoked or expired), after an idle time and at an absolute end.
    """

    __tablename__ = "console_sessions"

    #: Hex SHA-256 of the session id the cookie carries.
    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    token_id: Mapped[str] = mapped_column(ForeignKey("api_tokens.id"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    #: The absolute end: sign-in time plus the session's maximum age, or the token's expiry if sooner.
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)
