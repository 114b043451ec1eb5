"""Claims with proof, unclaim, release to a tenant, and the ownership history (docs/adr/0011-ownership.md).

A device ID is public, so a claim needs proof of one of two kinds:

* **evidence** (physical access): the device's attestation EAT over a claim
  challenge that the service issued to the caller's tenant for that device
  (:mod:`bastion.service.ownership.challenge`); the DICE chain must verify to a
  trusted vendor CA, exactly as at attestation;
* a **voucher** (bulk): the silicon vendor's signed list of device IDs for the
  caller's tenant (:mod:`bastion.crypto.voucher`), single use per device.

A claimed device stays claimed until its owner unclaims it (anyone with proof
may then claim it) or releases it to a named tenant (only that tenant may claim
it next, with fresh proof). Every step writes a :class:`DeviceOwnershipEvent`
and an audit event; every refused attempt is audited as denied.
"""

from __future__ import annotations

import datetime as dt
import hmac
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bastion.crypto.errors import InvalidSignature, MalformedInput
from bastion.crypto.voucher import VoucherLimits, ca_fingerprint, verify_voucher
from bastion.service.attestation.caches import load_trust_anchors
from bastion.service.attestation.errors import AttestationFailure
from bastion.service.attestation.verifier import verify_evidence
from bastion.service.audit.service import record, record_denied
from bastion.service.auth.service import Principal
from bastion.service.ca.revocation import revoke_device_certificates
from bastion.service.devices import repository as devices_repository
from bastion.service.devices.service import get_device_for, validate_device_id
from bastion.service.errors import AlreadyClaimed, ClaimRefused, Conflict, InvalidRequest, NotFound
from bastion.service.models import Challenge, Device, DeviceOwnershipEvent, Tenant
from bastion.service.ownership import repository
from bastion.service.ownership.challenge import ClaimKey, IssuedClaimChallenge, check_claim_nonce, issue_claim_challenge

__all__ = [
    "VOUCHER_CLOCK_SKEW",
    "VoucherClaim",
    "claim_challenge",
    "claim_with_evidence",
    "claim_with_voucher",
    "ownership_history",
    "release_device",
    "unclaim_device",
]

#: How far ahead of our clock a voucher's issue time may be (the vendor's clock may run ahead).
VOUCHER_CLOCK_SKEW = dt.timedelta(minutes=5)
_ACTION = "device.claim"


@dataclass
class VoucherClaim:
    """What a voucher claim did: the devices it claimed and, per device, why it did not claim the rest."""

    voucher_id: str
    claimed: list[Device] = field(default_factory=list)
    refused: list[tuple[str, str, str]] = field(default_factory=list)  # (device_id, error code, detail)


def claim_challenge(who: Principal, device_id: str, *, key: ClaimKey, now: dt.datetime) -> IssuedClaimChallenge:
    """Issue a claim challenge for ``device_id``, bound to the caller's tenant. Writes nothing.

    Raises:
        InvalidDeviceId: malformed device ID.
    """
    validate_device_id(device_id)
    return issue_claim_challenge(key, who.tenant_id, device_id, now=now)


def _deny(session: Session, who: Principal, device_id: str | None, detail: str, *, now: dt.datetime) -> None:
    record_denied(
        session,
        now=now,
        tenant_id=who.tenant_id,
        actor=who.actor,
        action=_ACTION,
        target=f"device:{device_id or 'unknown'}",
        detail=detail,
    )


def _refusal(session: Session, who: Principal, device_id: str) -> ClaimRefused | AlreadyClaimed | None:
    """Why ``device_id`` cannot be claimed by the caller now (None: it can)."""
    existing = devices_repository.get_device(session, device_id)
    if existing is not None and existing.tenant_id == who.tenant_id:
        return AlreadyClaimed(f"device {device_id} is already claimed by your tenant; see 'bastion device list'")
    if existing is not None:
        return AlreadyClaimed(
            f"device {device_id} is already claimed by another tenant; its owner must release it to you first "
            "('bastion device release ID --to TENANT'), then claim it with fresh proof"
        )
    last = repository.latest_event(session, device_id)
    if last is not None and last.event == "release" and last.to_tenant_id != who.tenant_id:
        return ClaimRefused(
            f"device {device_id} was released to another tenant; only that tenant may claim it",
            code="released_to_another_tenant",
        )
    return None


def _add_claim(
    session: Session,
    who: Principal,
    device_id: str,
    *,
    now: dt.datetime,
    method: str,
    vendor_fingerprint: str,
    voucher_id: str | None = None,
) -> Device:
    device = Device(device_id=device_id, tenant_id=who.tenant_id, claimed_at=now, claimed_by=who.actor)
    session.add(device)
    session.add(
        DeviceOwnershipEvent(
            device_id=device_id,
            tenant_id=who.tenant_id,
            event="claim",
            at=now,
            actor=who.actor,
            method=method,
            voucher_id=voucher_id,
            vendor_fingerprint=vendor_fingerprint,
            detail="",
        )
    )
    via = f"voucher {voucher_id}" if voucher_id else "claim challenge evidence"
    record(
        session, now=now, tenant_id=who.tenant_id, actor=who.actor, action=_ACTION, target=f"device:{device_id}",
        detail=f"proof: {via}",
    )  # fmt: skip
    return device


def claim_with_evidence(session: Session, who: Principal, token: bytes, *, key: ClaimKey, now: dt.datetime) -> Device:
    """Claim the device whose attestation evidence over a claim challenge of the caller's tenant is ``token``; commit.

    Raises:
        ClaimRefused: the evidence does not verify (``claim_evidence_invalid``),
            its nonce is not a live claim challenge of this tenant for this
            device (``claim_challenge_invalid``/``_expired``/``_replayed``), or
            the device was released to another tenant.
        AlreadyClaimed: the device has an owner (release comes first).
    """
    try:
        evidence = verify_evidence(token, trust_anchors=load_trust_anchors(session.connection()), now=now)
    except AttestationFailure as exc:
        _deny(session, who, exc.device_id, f"claim evidence refused: {exc.code.value}", now=now)
        raise ClaimRefused(
            f"the claim evidence was refused ({exc.code.value}): {exc.detail}", code="claim_evidence_invalid"
        ) from exc
    device_id = evidence.device_id
    try:
        expires_at = check_claim_nonce(key, evidence.claims.nonce, who.tenant_id, device_id, now=now)
    except ClaimRefused as exc:
        _deny(session, who, device_id, exc.code, now=now)
        raise
    refusal = _refusal(session, who, device_id)
    if refusal is not None:
        _deny(session, who, device_id, refusal.code, now=now)
        raise refusal
    session.add(Challenge(nonce=evidence.claims.nonce, device_id=device_id, expires_at=expires_at))
    try:
        session.flush()
    except IntegrityError as exc:  # the nonce was consumed before: a replay
        session.rollback()
        _deny(session, who, device_id, "claim_challenge_replayed", now=now)
        raise ClaimRefused(
            "this claim challenge was used already; run 'bastion device claim --dir DEV' again",
            code="claim_challenge_replayed",
        ) from exc
    device = _add_claim(
        session, who, device_id, now=now, method="evidence", vendor_fingerprint=ca_fingerprint(evidence.vendor_ca)
    )
    try:
        session.commit()
    except IntegrityError as exc:  # a concurrent claim won the race
        session.rollback()
        _deny(session, who, device_id, "already_claimed (concurrent claim)", now=now)
        raise AlreadyClaimed(f"device {device_id} was claimed concurrently; a device can be claimed only once") from exc
    return device


def claim_with_voucher(
    session: Session,
    who: Principal,
    data: bytes,
    *,
    now: dt.datetime,
    limits: VoucherLimits | None = None,
) -> VoucherClaim:
    """Claim every device of a vendor voucher for the caller's tenant that can be claimed; commit.

    A device already claimed, released to another tenant, or claimed with this
    voucher before (a voucher is single use per device, also after an unclaim)
    is reported in ``refused`` and audited as denied; the others are claimed.

    Raises:
        InvalidRequest: ``invalid_voucher``: the bytes are not a voucher.
        ClaimRefused: ``voucher_untrusted`` (forged, or signed by a vendor CA
            this service does not trust), ``voucher_wrong_tenant``,
            ``voucher_not_yet_valid`` or ``voucher_expired``.
    """
    bounds = limits or VoucherLimits()
    try:
        voucher = verify_voucher(data, trusted=load_trust_anchors(session.connection()), limits=bounds)
    except MalformedInput as exc:
        _deny(session, who, None, f"invalid voucher: {exc}", now=now)
        raise InvalidRequest(
            f"the voucher cannot be read: {exc}; ask the silicon vendor for a voucher made by 'bastion vendor voucher'",
            code="invalid_voucher",
        ) from exc
    except InvalidSignature as exc:
        _deny(session, who, None, f"voucher refused: {exc}", now=now)
        raise ClaimRefused(
            f"the voucher was refused: {exc}; only vouchers signed by a trusted vendor CA are accepted "
            "(see 'bastion service vendors')",
            code="voucher_untrusted",
        ) from exc
    if not hmac.compare_digest(voucher.tenant_id.encode(), who.tenant_id.encode()):
        _deny(session, who, None, f"voucher {voucher.voucher_id} names another tenant", now=now)
        raise ClaimRefused(
            "the voucher is made out to another tenant; ask the vendor for a voucher naming your tenant ID "
            "(shown by 'bastion login')",
            code="voucher_wrong_tenant",
        )
    if now < voucher.issued_at - VOUCHER_CLOCK_SKEW:
        _deny(session, who, None, f"voucher {voucher.voucher_id} not valid yet", now=now)
        raise ClaimRefused("the voucher is not valid yet; check the vendor's clock", code="voucher_not_yet_valid")
    if now >= voucher.expires_at:
        _deny(session, who, None, f"voucher {voucher.voucher_id} expired", now=now)
        raise ClaimRefused(
            f"the voucher expired at {voucher.expires_at.isoformat()}; ask the vendor for a new one",
            code="voucher_expired",
        )
    result = VoucherClaim(voucher_id=voucher.voucher_id)
    for device_id in voucher.device_ids:
        refusal = _refusal(session, who, device_id)
        if refusal is None and repository.voucher_used(session, device_id, voucher.voucher_id):
            refusal = ClaimRefused(
                f"voucher {voucher.voucher_id} was already used to claim device {device_id}; "
                "a voucher claims a device once: claim it with 'bastion device claim --dir DEV' or a new voucher",
                code="voucher_used",
            )
        if refusal is not None:
            result.refused.append((device_id, refusal.code, refusal.detail))
            record(
                session, now=now, tenant_id=who.tenant_id, actor=who.actor, action=_ACTION,
                target=f"device:{device_id}", outcome="denied", detail=f"voucher {voucher.voucher_id}: {refusal.code}",
            )  # fmt: skip
            continue
        result.claimed.append(
            _add_claim(
                session,
                who,
                device_id,
                now=now,
                method="voucher",
                vendor_fingerprint=voucher.signer_fingerprint,
                voucher_id=voucher.voucher_id,
            )
        )
    try:
        session.commit()
    except IntegrityError as exc:  # a concurrent claim took one of the devices
        session.rollback()
        raise Conflict(
            "another claim of one of these devices ran at the same time; run the voucher claim again",
            code="already_claimed",
        ) from exc
    return result


def _end_ownership(
    session: Session,
    who: Principal,
    device_id: str,
    *,
    event: str,
    now: dt.datetime,
    to_tenant_id: str | None = None,
) -> DeviceOwnershipEvent:
    device = get_device_for(session, who, device_id, action=f"device.{event}", now=now)
    capabilities, _statuses = repository.delete_device_dependents(session, device_id)
    # The old tenant's unexpired certificates go on its CRL (the caller re-signs it after the commit).
    revoked_certs = revoke_device_certificates(session, who.tenant_id, device_id, reason="affiliation_changed", now=now)
    session.delete(device)
    notes = [f"revoked at {device.revoked_at.isoformat()}"] if device.revoked_at is not None else []
    if capabilities:
        notes.append(f"capabilities removed: {', '.join(capabilities)}")
    if revoked_certs:
        notes.append(f"{revoked_certs} unexpired certificate(s) revoked")
    detail = "; ".join(notes)
    row = DeviceOwnershipEvent(
        device_id=device_id,
        tenant_id=who.tenant_id,
        event=event,
        at=now,
        actor=who.actor,
        to_tenant_id=to_tenant_id,
        detail=detail,
    )
    session.add(row)
    target = f"device:{device_id}"
    audit_detail = f"to tenant {to_tenant_id}; {detail}" if to_tenant_id else detail
    record(
        session, now=now, tenant_id=who.tenant_id, actor=who.actor, action=f"device.{event}", target=target,
        detail=audit_detail.strip("; "),
    )  # fmt: skip
    if to_tenant_id is not None:
        record(
            session, now=now, tenant_id=to_tenant_id, actor=who.actor, action="device.release_received",
            target=target, detail="claim it with 'bastion device claim --dir DEV' or a voucher",
        )  # fmt: skip
    session.commit()
    return row


def unclaim_device(session: Session, who: Principal, device_id: str, *, now: dt.datetime) -> DeviceOwnershipEvent:
    """Give up a device: its row goes (no certificate, no update for this tenant), the history stays; commit.

    Raises:
        InvalidDeviceId: malformed device ID.
        NotFound: no such device in the caller's tenant.
    """
    return _end_ownership(session, who, device_id, event="unclaim", now=now)


def release_device(
    session: Session, who: Principal, device_id: str, to_tenant_id: str, *, now: dt.datetime
) -> DeviceOwnershipEvent:
    """Release a device to the tenant ``to_tenant_id``: it is unclaimed, and only that tenant may claim it; commit.

    Raises:
        InvalidDeviceId: malformed device ID.
        InvalidRequest: the target is the caller's own tenant.
        NotFound: no such device in the caller's tenant, or no such tenant.
    """
    # The caller's device first: a release of a device it does not hold must not tell a real
    # tenant ID from a made-up one.
    get_device_for(session, who, device_id, action="device.release", now=now)
    if to_tenant_id == who.tenant_id:
        raise InvalidRequest("a device cannot be released to its own tenant; name the receiving tenant's ID")
    if session.get(Tenant, to_tenant_id) is None:
        raise NotFound(f"no tenant {to_tenant_id!r}; ask the receiving tenant for its ID (shown by 'bastion login')")
    return _end_ownership(session, who, device_id, event="release", now=now, to_tenant_id=to_tenant_id)


def ownership_history(
    session: Session, who: Principal, device_id: str, *, limit: int, offset: int = 0
) -> Sequence[DeviceOwnershipEvent]:
    """The device's ownership events that concern the caller's tenant, newest first (after an unclaim too).

    Raises:
        InvalidDeviceId: malformed device ID.
    """
    validate_device_id(device_id)
    return repository.history_for(session, who.tenant_id, device_id, limit=limit, offset=offset)
