"""Attestation appraisal (issue 7 section 4, ADR 0014): each boot rule, its relaxation per group, x5chain 5xx inputs.

Over HTTP through the real device endpoint, with the simulator's EATs, on
SQLite and PostgreSQL. Every refusal is a 4xx naming the failed claim, and is
recorded in ``attestations``; every change of a group's policy is audited.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
import x5chain_attacks
from attest_sim import SimDevice
from attest_world import World
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from bastion.crypto import certs, eat
from bastion.crypto.keys import generate_private_key, public_key_pem
from bastion.service.models import AuditEvent, OsImage
from bastion.service.tenants.service import CreatedTenant
from conftest import FakeClock, bearer

EAT = {"Content-Type": "application/eat+cwt"}
DEV_PEM = public_key_pem(generate_private_key().public_key()).decode()
Claims = eat.EatClaims


@pytest.fixture
def world(session_factory: sessionmaker[Session], tenant: CreatedTenant, clock: FakeClock) -> World:
    return World.build(session_factory, tenant, clock())


def nonce_for(client: TestClient, chip: SimDevice) -> bytes:
    answer = client.post("/api/v1/attestation/challenge", json={"device_id": chip.device_id})
    value: str = answer.json()["nonce"]
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def attest(client: TestClient, chip: SimDevice, clock: FakeClock, **changes: Any) -> Any:
    """Attest with the chip's honest claims, changed as given."""
    nonce = nonce_for(client, chip)
    claims = dataclasses.replace(chip.claims(nonce, now=clock()), **changes)
    return client.post("/api/v1/attestation", content=chip.eat(nonce, claims=claims), headers=EAT)


def refused(answer: Any, status: int, code: str) -> str:
    assert (answer.status_code, answer.json()["error"]) == (status, code), answer.text
    detail: str = answer.json()["detail"]
    return detail


def last_record(world: World, device_id: str) -> tuple[str, str, str]:
    record = world.records(device_id)[-1]
    return record.result, record.reason, record.detail


def product(client: TestClient, admin: str, name: str = "widget") -> dict[str, str]:
    answer = client.post("/api/v1/products", json={"name": name, "description": ""}, headers=bearer(admin))
    assert answer.status_code == 201, answer.text
    return {g["name"]: g["id"] for g in answer.json()["groups"]}


def assign(client: TestClient, admin: str, device_id: str, group: str) -> None:
    answer = client.post(f"/api/v1/devices/{device_id}/group", json={"group": group}, headers=bearer(admin))
    assert answer.status_code == 200, answer.text


def set_policy(client: TestClient, auth: str, group: str, relax: list[str]) -> Any:
    return client.put(f"/api/v1/appraisal/groups/{group}", json={"relax": relax}, headers=bearer(auth))


def audit(world: World, action: str) -> list[AuditEvent]:
    with world.sessions() as session:
        query = select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)
        return list(session.scalars(query))


def with_tcb(chip: SimDevice, **changes: Any) -> SimDevice:
    """The chip booted with an Alias certificate whose DiceTcbInfo differs as given (same Alias key)."""
    tcb = dataclasses.replace(certs.tcb_info_from_cert(chip.alias_cert), **changes)
    alias = certs.issue_alias_cert(
        chip.device_key,
        chip.device_id_cert,
        chip.alias_key.public_key(),
        tcb,
        now=chip.alias_cert.not_valid_before_utc,
    )
    return dataclasses.replace(chip, alias_cert=alias)


# --- each rule --------------------------------------------------------------------------

#: (claims changed, failure code, the claim the detail must name)
RULE_ATTACKS: dict[str, tuple[dict[str, Any], str, str]] = {
    "secure boot off": ({"secboot": False}, "secboot_off", "oemboot (262) is false"),
    "debug enabled": ({"dbgstat": eat.DebugStatus.ENABLED}, "debug_unlocked", "dbgstat (263) is 0"),
    "debug merely disabled now": ({"dbgstat": eat.DebugStatus.DISABLED}, "debug_unlocked", "dbgstat (263) is 1"),
    "counter above the image": ({"rollback_counters": {"os": 2}}, "rollback_inconsistent", "'os' is 2"),
    "swversion lies": ({"swversion": "9.9.9"}, "swversion_mismatch", "swversion (271) is '9.9.9'"),
    "no sandbox": ({"insecure_no_sandbox": True}, "sandbox_disabled", "no sandbox (-70006) is true"),
}


@pytest.mark.parametrize("attack", sorted(RULE_ATTACKS))
def test_each_rule_refuses_naming_the_claim_and_is_recorded(
    client: TestClient, world: World, clock: FakeClock, attack: str
) -> None:
    changes, code, claim = RULE_ATTACKS[attack]
    chip = world.device()
    detail = refused(attest(client, chip, clock, **changes), 403, code)
    assert claim in detail
    assert "bastion device-group appraisal set" in detail or "cannot be relaxed" in detail
    result, reason, recorded = last_record(world, chip.device_id)
    assert (result, reason) == ("failed", code)
    assert claim in recorded
    row = world.device_row(chip.device_id)
    assert row is not None
    assert (row.last_result, row.last_reason, row.cert_serial) == ("failed", code, None)
    # The honest boot of the same chip still passes.
    assert attest(client, chip, clock).status_code == 200


def test_every_failing_rule_is_named_and_the_first_gives_the_code(
    client: TestClient, world: World, clock: FakeClock
) -> None:
    chip = world.device()
    detail = refused(
        attest(client, chip, clock, secboot=False, insecure_no_sandbox=True, dbgstat=eat.DebugStatus.ENABLED),
        403,
        "secboot_off",
    )
    for rule in ("secboot:", "debug:", "sandbox:"):
        assert rule in detail


def test_a_trial_boot_attests_with_the_fuse_below_the_new_image(
    client: TestClient, world: World, clock: FakeClock
) -> None:
    """The fuse is raised only after the new OS is confirmed (design.md, "Updates"): a lower counter is consistent."""
    chip = world.device()
    assert attest(client, chip, clock, rollback_counters={"os": 0}).status_code == 200
    assert attest(client, chip, clock, rollback_counters={}).status_code == 200  # never burned
    assert attest(client, chip, clock, dbgstat=eat.DebugStatus.DISABLED_SINCE_BOOT).status_code == 200
    assert attest(client, chip, clock, dbgstat=eat.DebugStatus.DISABLED_FULLY_AND_PERMANENTLY).status_code == 200


def test_the_alias_certificate_svn_must_be_the_images_security_version(
    client: TestClient, world: World, clock: FakeClock
) -> None:
    chip = world.device()
    with world.sessions() as session:
        session.execute(update(OsImage).values(security_version=2))
        session.commit()
    detail = refused(attest(client, chip, clock), 403, "rollback_inconsistent")
    assert "DiceTcbInfo svn is 1, but the OS image's security version is 2" in detail
    assert last_record(world, chip.device_id)[1] == "rollback_inconsistent"


@pytest.mark.parametrize(
    ("tcb", "code", "named"),
    [
        ({"svn": None}, "rollback_inconsistent", "carries no svn"),
        ({"version": None}, "swversion_mismatch", "DiceTcbInfo version is None"),
        ({"version": "2.0.0"}, "swversion_mismatch", "DiceTcbInfo version is '2.0.0'"),
    ],
)
def test_the_alias_certificate_tcb_info_is_authoritative(
    client: TestClient, world: World, clock: FakeClock, *, tcb: dict[str, Any], code: str, named: str
) -> None:
    chip = with_tcb(world.device(), **tcb)
    assert named in refused(attest(client, chip, clock), 403, code)
    assert last_record(world, chip.device_id)[1] == code


# --- development capability -------------------------------------------------------------


def test_a_development_capability_unlocks_debug_and_nothing_else(
    client: TestClient, world: World, clock: FakeClock
) -> None:
    admin = world.tenant.admin_token
    product(client, admin)
    chip = world.device()
    assign(client, admin, chip.device_id, "widget/Field Test")
    issued = client.post(
        f"/api/v1/devices/{chip.device_id}/capabilities",
        json={"kind": "appDevelopment", "developer_keys": [DEV_PEM]},
        headers=bearer(admin),
    )
    assert issued.status_code == 201, issued.text
    capability = base64.b64decode(issued.json()["capability"])
    unlocked = eat.DebugStatus.ENABLED
    assert attest(client, chip, clock, dbgstat=unlocked, capability=capability).status_code == 200
    refused(attest(client, chip, clock, dbgstat=unlocked), 403, "debug_unlocked")
    refused(attest(client, chip, clock, dbgstat=unlocked, capability=capability, secboot=False), 403, "secboot_off")
    serving = client.post(
        f"/api/v1/devices/{chip.device_id}/capabilities",
        json={"kind": "fieldServicing", "developer_keys": []},
        headers=bearer(admin),
    ).json()
    field = base64.b64decode(serving["capability"])
    refused(attest(client, chip, clock, dbgstat=unlocked, capability=field), 403, "debug_unlocked")


# --- relaxation per device group --------------------------------------------------------


def test_a_group_relaxation_lets_its_devices_attest_is_recorded_and_audited(
    client: TestClient, world: World, clock: FakeClock
) -> None:
    admin = world.tenant.admin_token
    groups = product(client, admin)
    lab, field = world.device(), world.device()
    assign(client, admin, lab.device_id, "widget/Development")
    assign(client, admin, field.device_id, "widget/Field Test")
    sloppy: dict[str, Any] = {"dbgstat": eat.DebugStatus.ENABLED, "insecure_no_sandbox": True}
    refused(attest(client, lab, clock, **sloppy), 403, "debug_unlocked")

    answer = set_policy(client, admin, "widget/Development", ["sandbox", "debug"])
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["group_id"], body["relaxed"]) == (groups["Development"], ["debug", "sandbox"])
    assert {r["rule"]: r["enforced"] for r in body["rules"]} == {
        "secboot": True,
        "debug": False,
        "rollback": True,
        "swversion": True,
        "sandbox": False,
    }
    events = audit(world, "device_group.appraisal")
    assert [(e.outcome, e.target, e.detail) for e in events] == [
        ("ok", f"device_group:{groups['Development']}", "relaxed: none -> debug,sandbox")
    ]
    assert events[0].actor.startswith("token:")

    assert attest(client, lab, clock, **sloppy).status_code == 200
    result, reason, detail = last_record(world, lab.device_id)
    assert (result, reason) == ("ok", "ok")
    assert "appraisal rule debug relaxed by the device group" in detail
    assert "appraisal rule sandbox relaxed by the device group" in detail
    # Other rules, and other groups, are still enforced.
    refused(attest(client, lab, clock, secboot=False), 403, "secboot_off")
    refused(attest(client, field, clock, **sloppy), 403, "debug_unlocked")
    # A tightened policy applies at the very next attestation (the policy is never cached).
    assert set_policy(client, admin, groups["Development"], ["debug"]).json()["relaxed"] == ["debug"]
    refused(attest(client, lab, clock, **sloppy), 403, "sandbox_disabled")
    assert set_policy(client, admin, "widget/Development", []).json()["relaxed"] == []
    refused(attest(client, lab, clock, dbgstat=eat.DebugStatus.ENABLED), 403, "debug_unlocked")
    assert [e.detail for e in audit(world, "device_group.appraisal")][1:] == [
        "relaxed: debug,sandbox -> debug",
        "relaxed: debug -> none",
    ]
    # Setting the same set again changes nothing and audits nothing.
    set_policy(client, admin, "widget/Development", [])
    assert len(audit(world, "device_group.appraisal")) == 3


def test_a_development_device_is_appraised_by_the_development_groups_policy(
    client: TestClient, world: World, clock: FakeClock
) -> None:
    admin = world.tenant.admin_token
    product(client, admin)
    chip = world.device()
    assign(client, admin, chip.device_id, "widget/Field Test")
    capability = base64.b64decode(
        client.post(
            f"/api/v1/devices/{chip.device_id}/capabilities",
            json={"kind": "appDevelopment", "developer_keys": [DEV_PEM]},
            headers=bearer(admin),
        ).json()["capability"]
    )
    set_policy(client, admin, "widget/Development", ["sandbox"])
    assert attest(client, chip, clock, capability=capability, insecure_no_sandbox=True).status_code == 200
    # Leaving development mode takes it back to Field Test, whose policy relaxes nothing.
    refused(attest(client, chip, clock, insecure_no_sandbox=True), 403, "sandbox_disabled")


def test_policy_changes_need_an_admin_and_name_bad_rules(client: TestClient, world: World) -> None:
    admin = world.tenant.admin_token
    product(client, admin)
    contributor = client.post(
        "/api/v1/tokens", json={"name": "c", "role": "contributor"}, headers=bearer(admin)
    ).json()["token"]
    assert set_policy(client, contributor, "widget/Development", ["debug"]).status_code == 403
    assert client.get("/api/v1/appraisal/groups/widget/Development", headers=bearer(contributor)).status_code == 200
    for rule, named in (("swversion", "cannot be relaxed"), ("everything", "unknown appraisal rule")):
        answer = set_policy(client, admin, "widget/Development", [rule])
        assert named in refused(answer, 400, "invalid_rule")
        assert "secboot" in answer.json()["detail"]  # the detail lists the rules that can be relaxed
    too_many = client.put(
        "/api/v1/appraisal/groups/widget/Development", json={"relax": ["debug"] * 9}, headers=bearer(admin)
    )
    assert 400 <= too_many.status_code < 500
    assert audit(world, "device_group.appraisal") == []


def test_another_tenants_group_is_not_found(
    client: TestClient, world: World, make_tenant: Callable[[str], CreatedTenant]
) -> None:
    groups = product(client, world.tenant.admin_token)
    other = make_tenant("other")
    for answer in (
        set_policy(client, other.admin_token, groups["Development"], ["debug"]),
        client.get(f"/api/v1/appraisal/groups/{groups['Development']}", headers=bearer(other.admin_token)),
    ):
        refused(answer, 404, "not_found")
    assert [e.outcome for e in audit(world, "device_group.appraisal") if e.outcome == "ok"] == []


def test_the_relaxed_groups_list_pages_and_says_when_cut(client: TestClient, world: World) -> None:
    admin = world.tenant.admin_token
    for name in ("a", "b", "c"):
        product(client, admin, name)
        set_policy(client, admin, f"{name}/Development", ["debug"])
    first = client.get("/api/v1/appraisal/groups", params={"limit": 2}, headers=bearer(admin)).json()
    assert ([p["relaxed"] for p in first["items"]], first["more"]) == ([["debug"], ["debug"]], True)
    rest = client.get("/api/v1/appraisal/groups", params={"limit": 2, "offset": 2}, headers=bearer(admin)).json()
    assert (len(rest["items"]), rest["more"]) == (1, False)
    ids = {p["group_id"] for p in first["items"] + rest["items"]}
    assert len(ids) == 3
    for bad in ({"limit": 0}, {"offset": -1}, {"offset": 2**63}):
        assert 400 <= client.get("/api/v1/appraisal/groups", params=bad, headers=bearer(admin)).status_code < 500


# --- x5chain inputs that once answered 500 ----------------------------------------------


@pytest.mark.parametrize(
    ("attack", "named"),
    [
        ("unknown_key_type", "unsupported key type"),
        ("off_curve_point", "point off its curve"),
        ("duplicate_extension", "duplicate extension 1.3.6.1.4.1.55555.1"),
    ],
)
def test_x5chain_certificates_that_do_not_parse_are_a_400_and_recorded(
    client: TestClient, world: World, clock: FakeClock, attack: str, named: str
) -> None:
    chip = world.device()
    if attack == "duplicate_extension":
        bad = x5chain_attacks.duplicate_extension(chip, world.vendor, now=world.now)
    else:
        bad = getattr(x5chain_attacks, attack)(chip)
    token = x5chain_attacks.eat_with_device_id_der(chip, nonce_for(client, chip), bad)
    answer = client.post("/api/v1/attestation", content=token, headers=EAT)
    detail = refused(answer, 400, "malformed_evidence")
    assert named in detail
    assert "x5chain" in detail
    record = world.records()[-1]
    assert (record.result, record.reason, record.device_id) == ("failed", "malformed_evidence", "")
    assert named in record.detail
    # The device was not marked failing by bytes that merely name it.
    row = world.device_row(chip.device_id)
    assert row is not None
    assert row.last_result is None


def test_appraisal_happens_at_each_attestation_not_from_a_cache(
    client: TestClient, world: World, clock: FakeClock
) -> None:
    """A good standing is cached; the boot claims are still appraised every time."""
    chip = world.device()
    assert attest(client, chip, clock).status_code == 200
    clock.advance(dt.timedelta(seconds=1))
    refused(attest(client, chip, clock, secboot=False), 403, "secboot_off")


def test_the_appraisal_modules_export_what_the_slices_rely_on() -> None:
    from bastion.service.appraisal import service
    from bastion.service.attestation import appraisal

    assert sorted(appraisal.__all__) == sorted(
        [
            "LOCKED_DEBUG_STATES",
            "RELAXABLE_RULES",
            "Finding",
            "Rule",
            "appraise",
            "parse_rules",
            "verdict",
        ]
    )
    assert sorted(service.__all__) == sorted(
        [
            "MAX_PAGE",
            "MAX_RULE_NAMES",
            "PolicyPage",
            "PolicyView",
            "get_policy",
            "list_policies",
            "parse_relaxed",
            "set_policy",
        ]
    )
    assert appraisal.Rule.SWVERSION not in appraisal.RELAXABLE_RULES
