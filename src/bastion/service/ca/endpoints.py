"""HTTP endpoints of the tenant CA: trust bundle, CRL, issued certificates, rotation.

``GET /ca`` (PEM bundle of every trusted CA), ``GET /ca/crl`` (PEM bundle of
their CRLs, or one CRL as DER), ``GET /ca/authorities``, ``GET /ca/certificates``
and ``POST /ca/rotate`` (admin).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from bastion.crypto.certs import certificate_fingerprint, load_certificate_pem
from bastion.crypto.crl import crl_pem
from bastion.service.auth.deps import AdminDep, ReaderDep
from bastion.service.ca.crl import current_crls, publish_tenant_crls
from bastion.service.ca.revocation import device_certificates
from bastion.service.ca.rotation import list_authorities, rotate_tenant_ca
from bastion.service.ca.schemas import AuthorityOut, CertificateOut, RotateRequest, RotationOut
from bastion.service.ca.service import ca_state, trust_bundle_pem, trusted_cas
from bastion.service.devices.service import validate_device_id
from bastion.service.errors import NotFound
from bastion.service.models import TenantCA
from bastion.service.web import NowDep, SessionDep, SettingsDep

router = APIRouter(tags=["ca"])

#: Largest CA id a query may name (the column is a 32-bit integer).
_MAX_ID = 2**31 - 1


@router.get(
    "/ca",
    response_class=Response,
    responses={200: {"description": "PEM bundle of CA certificates", "content": {"application/x-pem-file": {}}}},
)
def get_ca(who: ReaderDep, session: SessionDep, now: NowDep) -> Response:
    """The trust bundle: every CA of the tenant that is not retired, signing CA first (PEM)."""
    return Response(trust_bundle_pem(session, who.tenant_id, now=now), media_type="application/x-pem-file")


_CRL_CONTENT: dict[int | str, dict[str, object]] = {
    200: {
        "description": "PEM bundle of CRLs, or one DER CRL",
        "content": {"application/x-pem-file": {}, "application/pkix-crl": {}},
    }
}


@router.get("/ca/crl", response_class=Response, responses=_CRL_CONTENT)
def get_crl(
    who: ReaderDep,
    *,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    fmt: Annotated[
        Literal["pem", "der"], Query(alias="format", description="pem: every trusted CA's CRL; der: one CRL")
    ] = "pem",
    ca_id: Annotated[int | None, Query(ge=1, le=_MAX_ID, description="der: which CA (default: the signing CA)")] = None,
) -> Response:
    """The CRLs of the tenant's trusted CAs (RFC 5280), re-signed first if stale."""
    crls = current_crls(session, who.tenant_id, master_key=settings.master_key, now=now)
    if ca_id is not None:
        crls = [crl for crl in crls if crl.ca_id == ca_id]
        if not crls:
            raise NotFound(
                f"no trusted CA {ca_id} in your tenant (a retired CA has no CRL); "
                "list them with 'bastion tenant ca list'"
            )
    if fmt == "der":
        return Response(crls[0].der, media_type="application/pkix-crl")
    body = b"".join(crl_pem(crl.load()) for crl in crls)
    return Response(body, media_type="application/x-pem-file")


def _authority(row: TenantCA, signing_id: int | None, now: dt.datetime) -> AuthorityOut:
    cert = load_certificate_pem(row.cert_pem.encode("ascii"))
    return AuthorityOut(
        id=row.id,
        state=ca_state(row, signing_id, now=now),
        fingerprint=certificate_fingerprint(cert),
        subject=cert.subject.rfc4514_string(),
        not_after=row.not_after,
        created_at=row.created_at,
        retire_at=row.retire_at,
        crl_number=row.crl_number,
        crl_next_update=row.crl_next_update,
    )


def _signing_id(rows: list[TenantCA]) -> int | None:
    return rows[0].id if rows else None


@router.get("/ca/authorities")
def get_authorities(
    who: ReaderDep,
    *,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    limit: Annotated[int | None, Query(ge=1, le=_MAX_ID)] = None,
    offset: Annotated[int, Query(ge=0, le=_MAX_ID)] = 0,
) -> list[AuthorityOut]:
    """The tenant's CAs, newest first, with their state (signing, retiring, retired)."""
    signing = _signing_id(list(trusted_cas(session, who.tenant_id, now=now)))
    rows = list_authorities(session, who.tenant_id, limit=settings.limits.page(limit), offset=offset)
    return [_authority(row, signing, now) for row in rows]


@router.get("/ca/certificates")
def get_certificates(
    who: ReaderDep,
    *,
    session: SessionDep,
    settings: SettingsDep,
    device_id: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int | None, Query(ge=1, le=_MAX_ID)] = None,
    offset: Annotated[int, Query(ge=0, le=_MAX_ID)] = 0,
) -> list[CertificateOut]:
    """The device certificates the tenant's CAs issued, newest first (optionally one device's)."""
    if device_id is not None:
        validate_device_id(device_id)
    rows = device_certificates(
        session, who.tenant_id, device_id=device_id, limit=settings.limits.page(limit), offset=offset
    )
    return [CertificateOut.model_validate(row) for row in rows]


@router.post("/ca/rotate", status_code=201)
def rotate(
    body: RotateRequest, who: AdminDep, *, session: SessionDep, settings: SettingsDep, now: NowDep, request: Request
) -> RotationOut:
    """Create a successor CA; the current one stays trusted for ``overlap_hours`` (admin, audited)."""
    result = rotate_tenant_ca(
        session, who, overlap=dt.timedelta(hours=body.overlap_hours), master_key=settings.master_key, now=now
    )
    caches = getattr(request.app.state, "attestation_caches", None)
    if caches is not None:
        caches.forget_signing_ca(who.tenant_id)
    publish_tenant_crls(session, who.tenant_id, master_key=settings.master_key, now=now)
    signing = result.successor.id
    return RotationOut(
        successor=_authority(result.successor, signing, now), retiring=_authority(result.retiring, signing, now)
    )
