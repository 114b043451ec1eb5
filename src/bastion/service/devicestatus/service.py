"""Accepting device status reports, and reading a device's update status and history.

A report is a COSE_Sign1 by the device's certified key with ``x5chain`` =
[device certificate]. The checks, in order (docs/updates.md "Service fleet slice"):

1. size bound, then COSE structure (``malformed_status``);
2. the certificate chains to the CA of the tenant it names, and is valid at
   ``now`` (``untrusted_certificate``, ``certificate_expired``);
3. the signature verifies under the certificate's key (``bad_signature``);
4. the payload parses (``malformed_status``);
5. ``device_id`` is the certificate's device (``device_mismatch``), which is
   claimed by that tenant (``unknown_device``) and not revoked (``device_revoked``);
6. ``iat`` is within the clock-skew bound (``stale_report``) and later than the
   last accepted report's (``replayed_report``, 409).

Refusals after step 3 (the device is authenticated) are audited as denied,
a payload that does not parse included.
"""

from __future__ import annotations

import datetime as dt
import functools
import uuid
from collections.abc import Sequence
from typing import NoReturn

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bastion.crypto.certs import device_cert_uri, load_certificate_der, load_certificate_pem, verify_chain
from bastion.crypto.cose import Sign1Message, decode_sign1, verify_sign1
from bastion.crypto.errors import CertificateError, CryptoError
from bastion.service.ca.revocation import certificate_revoked
from bastion.service.ca.service import trusted_ca_pems
from bastion.service.devices.service import validate_device_id
from bastion.service.devicestatus.report import ReportError, StatusReport, parse_report
from bastion.service.eligibility.refusals import RefusalLog, record_refusal
from bastion.service.errorreports.activity import record_activity
from bastion.service.errors import Conflict, Forbidden, InvalidDeviceId, InvalidRequest, PayloadTooLarge
from bastion.service.fleet import repository
from bastion.service.fleet.limits import DEFAULT_FLEET_LIMITS, FleetLimits
from bastion.service.models import Device, DeviceUpdateEvent, DeviceUpdateStatus

__all__ = ["RevokedCertificateError", "accept_report", "authenticate_device", "device_status", "update_history"]

_URI_PREFIX = "urn:bastion:tenant:"


def _malformed(detail: str) -> InvalidRequest:
    return InvalidRequest(f"malformed status report: {detail}", code="malformed_status")


def _is_device_id(value: str) -> bool:
    try:
        validate_device_id(value)
    except InvalidDeviceId:
        return False
    return True


def _is_tenant_id(value: str) -> bool:
    """A tenant ID is a canonical (lowercase, hyphenated) UUID string, as tenants are created."""
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


def _identity(cert: x509.Certificate) -> tuple[str, str]:
    """(tenant id, device id) named by a device certificate's URI SAN and CN."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
        cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    except (x509.ExtensionNotFound, ValueError) as exc:
        raise Forbidden("the certificate is not a Bastion device certificate", code="untrusted_certificate") from exc
    for uri in uris:
        rest = uri.removeprefix(_URI_PREFIX)
        tenant_id, sep, device_id = rest.partition(":device:")
        named = (
            rest != uri and sep and cns and cns[0].value == device_id and uri == device_cert_uri(tenant_id, device_id)
        )
        # Both in their formats before any lookup: a certificate names them, and a self-signed one
        # names anything (a NUL, which PostgreSQL text refuses with an error, or 10,000 characters).
        if named and _is_tenant_id(tenant_id) and _is_device_id(device_id):
            return tenant_id, device_id
    raise Forbidden("the certificate is not a Bastion device certificate", code="untrusted_certificate")


class RevokedCertificateError(Forbidden):
    """A verified device certificate that is on its tenant CA's CRL (the identity it names is authenticated)."""

    def __init__(self, tenant_id: str, device_id: str) -> None:
        super().__init__(
            "the device certificate has been revoked (it is on the tenant CA's CRL)", code="certificate_revoked"
        )
        self.tenant_id = tenant_id
        self.device_id = device_id


@functools.lru_cache(maxsize=256)
def _anchor(cert_pem: str) -> x509.Certificate:
    """A tenant CA's certificate, parsed once per PEM (the PEM is the cache key: a new CA is a new entry)."""
    return load_certificate_pem(cert_pem.encode("ascii"))


def _authenticate(session: Session, message: Sign1Message, *, now: dt.datetime) -> tuple[str, str]:
    if len(message.x5chain) != 1:
        raise _malformed("x5chain must hold exactly the device certificate")
    try:
        cert = load_certificate_der(message.x5chain[0])
    except CryptoError as exc:
        raise _malformed("the x5chain certificate does not parse") from exc
    tenant_id, device_id = _identity(cert)
    # Only the tenant's trusted CAs: a retired one (ADR 0012) no longer vouches for anything.
    anchors = [_anchor(pem) for pem in trusted_ca_pems(session, tenant_id, now=now)]
    try:
        verify_chain([cert], anchors, now=now)
    except CertificateError as exc:
        if exc.reason in ("expired", "not_yet_valid"):
            raise Forbidden(
                "the device certificate is outside its validity; the device must attest again for a new one",
                code="certificate_expired",
            ) from exc
        raise Forbidden(
            "the device certificate was not issued by its tenant's CA", code="untrusted_certificate"
        ) from exc
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise Forbidden("the device certificate does not hold a P-256 key", code="untrusted_certificate")
    try:
        verify_sign1(message, key)
    except CryptoError as exc:
        raise Forbidden("the report signature does not verify", code="bad_signature") from exc
    if certificate_revoked(session, device_id, cert.serial_number):
        raise RevokedCertificateError(tenant_id, device_id)
    return tenant_id, device_id


def authenticate_device(session: Session, message: Sign1Message, *, now: dt.datetime) -> tuple[str, str]:
    """Steps 2-3 for any device-signed request: ``(tenant id, device id)`` of a verified message.

    Raises:
        InvalidRequest: ``malformed_status`` (x5chain is not one parseable certificate).
        Forbidden: ``untrusted_certificate``, ``certificate_expired``, ``bad_signature``.
    """
    return _authenticate(session, message, now=now)


def accept_report(
    session: Session,
    body: bytes,
    *,
    now: dt.datetime,
    limits: FleetLimits = DEFAULT_FLEET_LIMITS,
    refusals: RefusalLog | None = None,
) -> DeviceUpdateStatus:
    """Verify a signed status report and store the status and its events; commit.

    Raises:
        PayloadTooLarge: over ``limits.max_status_bytes``.
        InvalidRequest: ``malformed_status``.
        Forbidden: ``untrusted_certificate``, ``certificate_expired``, ``bad_signature``,
            ``device_mismatch``, ``unknown_device``, ``device_revoked``, ``stale_report``.
        Conflict: ``replayed_report`` (``iat`` not later than the last accepted report's).

    With ``refusals``, a refusal is audited at most once per device and code per
    window (the next record counts the ones in between), as credential requests
    are: one device must not be able to flood its tenant's audit view.
    """

    if len(body) > limits.max_status_bytes:
        raise PayloadTooLarge(f"a status report is at most {limits.max_status_bytes} bytes", code="status_too_large")
    try:
        message = decode_sign1(body, max_size=limits.max_status_bytes)
    except CryptoError as exc:
        raise _malformed(str(exc)) from exc
    tenant_id, cert_device = _authenticate(session, message, now=now)

    def audited(code: str, detail: str) -> None:
        record_refusal(
            session,
            refusals,
            (cert_device, "status", code),
            now=now,
            tenant_id=tenant_id,
            actor=f"device:{cert_device}",
            action="device.status",
            target=f"device:{cert_device}",
            detail=detail,
        )

    try:
        report = parse_report(
            message.payload,
            max_events=limits.max_status_events,
            max_installed=limits.max_status_installed,
            max_detail_chars=limits.max_event_detail_chars,
        )
    except ReportError as exc:
        # The device is authenticated: its malformed payload is on the record (a parser bug it probes, or a bad agent).
        audited("malformed_status", f"malformed payload: {exc}")
        raise _malformed(str(exc)) from exc

    def refuse(error: Forbidden | Conflict, detail: str) -> NoReturn:
        audited(error.code, detail)
        raise error

    if report.device_id != cert_device:
        refuse(
            Forbidden("the report's device_id is not the certificate's device", code="device_mismatch"),
            "device_id differs from the certificate",
        )
    device = session.get(Device, cert_device)
    if device is None or device.tenant_id != tenant_id:
        raise Forbidden("the device is not claimed by the certificate's tenant", code="unknown_device")
    if device.revoked_at is not None:
        refuse(Forbidden("the device is revoked", code="device_revoked"), "device revoked")
    iat = dt.datetime.fromtimestamp(report.iat, dt.UTC)
    if abs(iat - now) > limits.status_clock_skew:
        refuse(
            Forbidden(
                f"the report's iat is more than {int(limits.status_clock_skew.total_seconds())} s "
                "from the service clock; check the device clock",
                code="stale_report",
            ),
            f"iat {report.iat} outside the skew bound",
        )
    status = _store(session, device, report, tenant_id=tenant_id, now=now)
    if status is None:
        refuse(
            Conflict("a report with this or a later iat was already accepted (replay)", code="replayed_report"),
            f"replayed iat {report.iat}",
        )
    return status


def _store(
    session: Session, device: Device, report: StatusReport, *, tenant_id: str, now: dt.datetime
) -> DeviceUpdateStatus | None:
    """Write status and events if ``report.iat`` is newer than the stored one; None on replay."""
    deployment = repository.current_deployment(session, device.group_id) if device.group_id else None
    deployment_id = deployment.id if deployment else None
    newest = max(report.events, key=lambda e: e.at) if report.events else None
    values: dict[str, object] = {
        "tenant_id": tenant_id,
        "group_id": device.group_id,
        "deployment_id": deployment_id,
        "os_version": report.os_version,
        "boot_slot": report.boot_slot,
        "installed": [{"component_id": i.component_id, "version": i.version} for i in report.installed],
        "last_report_iat": report.iat,
        "reported_at": now,
    }
    if newest is not None:
        values["last_result"] = newest.kind
        values["last_result_at"] = dt.datetime.fromtimestamp(newest.at, dt.UTC)
    # The iat guard is in the statement itself, so two concurrent copies of one report cannot both pass.
    updated = session.execute(
        update(DeviceUpdateStatus)
        .where(DeviceUpdateStatus.device_id == device.device_id, DeviceUpdateStatus.last_report_iat < report.iat)
        .values(**values)
    )
    if updated.rowcount == 0:  # type: ignore[attr-defined]
        exists = session.scalar(
            select(DeviceUpdateStatus.device_id).where(DeviceUpdateStatus.device_id == device.device_id)
        )
        if exists is not None:
            session.rollback()
            return None
        try:
            session.execute(insert(DeviceUpdateStatus).values(device_id=device.device_id, **values))
            session.flush()
        except IntegrityError:  # a concurrent first report won
            session.rollback()
            return None
    session.add_all(
        DeviceUpdateEvent(
            device_id=device.device_id,
            tenant_id=tenant_id,
            at=dt.datetime.fromtimestamp(e.at, dt.UTC),
            received_at=now,
            kind=e.kind,
            component_id=e.component_id,
            version=e.version,
            detail=e.detail,
            deployment_id=deployment_id,
        )
        for e in report.events
    )
    # A status report counts as "seen running" its releases (the crash-free population, ADR 0015).
    record_activity(
        session,
        tenant_id=tenant_id,
        device_id=device.device_id,
        group_id=device.group_id,
        os_version=report.os_version,
        installed=[(i.component_id, i.version) for i in report.installed],
        seen_at=now,
    )
    session.commit()
    status = session.get(DeviceUpdateStatus, device.device_id, populate_existing=True)
    if status is None:  # pragma: no cover - written above
        raise Conflict("the status could not be stored", code="replayed_report")
    return status


def device_status(session: Session, tenant_id: str, device_id: str) -> DeviceUpdateStatus | None:
    """The device's last reported update status."""
    status = session.get(DeviceUpdateStatus, device_id)
    return status if status is not None and status.tenant_id == tenant_id else None


def update_history(session: Session, tenant_id: str, device_id: str, *, limit: int) -> Sequence[DeviceUpdateEvent]:
    """The device's update events, newest first."""
    query = (
        select(DeviceUpdateEvent)
        .where(DeviceUpdateEvent.device_id == device_id, DeviceUpdateEvent.tenant_id == tenant_id)
        .order_by(DeviceUpdateEvent.at.desc(), DeviceUpdateEvent.id.desc())
        .limit(limit)
    )
    return session.scalars(query).all()
