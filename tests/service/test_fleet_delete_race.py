"""Deleting a product or device group races no writer: what arrives meanwhile is refused or waits and fails.

Each test runs an intruder in another thread, on its own connection, right after
the delete's in-use check: it puts a device into the group, gives the group a
deployment, or adds a group to the product. Before the delete locked its rows,
the intruder committed at once and the delete then failed with a foreign-key
``IntegrityError`` (a 500) or, for a column without a foreign key, left a device
pointing at a deleted group. Now the intruder waits for the delete's transaction
and then fails its own foreign key, and nothing dangles. Both databases (the
``db_url`` fixture runs each test on SQLite and on PostgreSQL).
"""

from __future__ import annotations

import datetime as dt
import secrets
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from fleet_world import FakePublisher
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from bastion.service.auth.service import Principal
from bastion.service.config import Settings
from bastion.service.errors import Conflict, NotFound
from bastion.service.fleet import lifecycle, repository
from bastion.service.fleet import service as fleet_service
from bastion.service.models import AuditEvent, Deployment, Device, DeviceGroup, Product
from bastion.service.tenants.service import CreatedTenant
from conftest import T0

#: How long the delete lets the intruder run before it goes on (the intruder commits in well under this
#: when nothing holds it back; held back, it waits for the delete's commit).
INTRUDER_HEAD_START_S = 1.5


def _who(tenant: CreatedTenant) -> Principal:
    return Principal(tenant_id=tenant.tenant_id, tenant_name=tenant.name, token_id="t-race", role="admin")


def _product(sessions: sessionmaker[Session], tenant_id: str, *, groups: tuple[str, ...]) -> tuple[str, list[str]]:
    with sessions() as session:
        product = Product(id=str(uuid.uuid4()), tenant_id=tenant_id, name="Lamp", description="", created_at=T0)
        session.add(product)
        session.flush()
        ids = []
        for name in groups:
            group = _group_row(tenant_id, product.id, name)
            session.add(group)
            ids.append(group.id)
        session.commit()
        return product.id, ids


def _group_row(tenant_id: str, product_id: str, name: str) -> DeviceGroup:
    return DeviceGroup(
        id=str(uuid.uuid4()),
        tenant_id=tenant_id,
        product_id=product_id,
        name=name,
        update_policy="UpdateAll",
        os_feed="retail",
        created_at=T0,
        updated_at=T0,
    )


def _device_row(tenant_id: str, **fields: object) -> Device:
    return Device(device_id=secrets.token_hex(32), tenant_id=tenant_id, claimed_at=T0, claimed_by="test", **fields)


@dataclass
class Intruder:
    """A writer in another thread; ``error`` is what its commit raised (None: it committed)."""

    sessions: sessionmaker[Session]
    write: Callable[[Session], None]
    error: BaseException | None = None
    #: How long the delete waits for it before going on (held back by the delete's locks, it waits longer).
    head_start_s: float = INTRUDER_HEAD_START_S
    done: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def _run(self) -> None:
        try:
            with self.sessions() as session:
                self.write(session)
                session.commit()
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            self.error = exc
        finally:
            self.done.set()

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.done.wait(self.head_start_s)

    def join(self) -> None:
        assert self.thread is not None
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "the intruder never finished"


@pytest.fixture
def after_check(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Intruder]]:
    """Intruders to start right after the delete's (first) in-use check."""
    intruders: list[Intruder] = []
    original = lifecycle.group_uses
    started = False

    def checked_then_intrude(session: Session, group_id: str) -> list[str]:
        nonlocal started
        uses = original(session, group_id)
        if not started:
            started = True
            for intruder in intruders:
                intruder.start()
        return uses

    monkeypatch.setattr(lifecycle, "group_uses", checked_then_intrude)
    yield intruders
    for intruder in intruders:
        if intruder.thread is not None:
            intruder.join()


def _delete_group(sessions: sessionmaker[Session], tenant: CreatedTenant, group_id: str) -> None:
    with sessions() as session:
        lifecycle.delete_group(session, _who(tenant), group_id, now=T0)


def _delete_product(sessions: sessionmaker[Session], tenant: CreatedTenant, product_id: str) -> None:
    with sessions() as session:
        lifecycle.delete_product(session, _who(tenant), product_id, now=T0)


def _no_dangling_references(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        groups = set(session.scalars(select(DeviceGroup.id)).all())
        for device in session.scalars(select(Device)).all():
            assert device.group_id is None or device.group_id in groups
            assert device.group_before_development is None or device.group_before_development in groups
        for deployment in session.scalars(select(Deployment)).all():
            assert deployment.group_id in groups


def test_a_device_put_into_the_group_during_its_delete_waits_and_fails(
    session_factory: sessionmaker[Session], tenant: CreatedTenant, after_check: list[Intruder]
) -> None:
    _, (night,) = _product(session_factory, tenant.tenant_id, groups=("Night",))
    intruder = Intruder(session_factory, lambda s: s.add(_device_row(tenant.tenant_id, group_id=night)))
    after_check.append(intruder)
    _delete_group(session_factory, tenant, night)
    intruder.join()
    assert isinstance(intruder.error, IntegrityError)  # it waited for the delete, then its group was gone
    with session_factory() as session:
        assert session.get(DeviceGroup, night) is None
        assert session.scalars(select(Device)).all() == []
    _no_dangling_references(session_factory)


def test_a_deployment_made_during_the_group_delete_waits_and_fails(
    session_factory: sessionmaker[Session], tenant: CreatedTenant, after_check: list[Intruder]
) -> None:
    _, (night,) = _product(session_factory, tenant.tenant_id, groups=("Night",))
    intruder = Intruder(
        session_factory,
        lambda s: s.add(Deployment(tenant_id=tenant.tenant_id, group_id=night, created_at=T0, created_by="race")),
    )
    after_check.append(intruder)
    _delete_group(session_factory, tenant, night)
    intruder.join()
    assert isinstance(intruder.error, IntegrityError)
    _no_dangling_references(session_factory)


def test_a_group_added_to_the_product_during_its_delete_waits_and_fails(
    session_factory: sessionmaker[Session], tenant: CreatedTenant, after_check: list[Intruder]
) -> None:
    product_id, _ = _product(session_factory, tenant.tenant_id, groups=("Field Test", "Production"))
    intruder = Intruder(session_factory, lambda s: s.add(_group_row(tenant.tenant_id, product_id, "Late")))
    after_check.append(intruder)
    _delete_product(session_factory, tenant, product_id)
    intruder.join()
    assert isinstance(intruder.error, IntegrityError)
    with session_factory() as session:
        assert session.get(Product, product_id) is None
        assert session.scalars(select(DeviceGroup)).all() == []


def test_a_device_put_into_a_default_group_during_the_product_delete_waits_and_fails(
    session_factory: sessionmaker[Session], tenant: CreatedTenant, after_check: list[Intruder]
) -> None:
    product_id, (field_test, _) = _product(session_factory, tenant.tenant_id, groups=("Field Test", "Production"))
    intruder = Intruder(session_factory, lambda s: s.add(_device_row(tenant.tenant_id, group_id=field_test)))
    after_check.append(intruder)
    _delete_product(session_factory, tenant, product_id)
    intruder.join()
    assert isinstance(intruder.error, IntegrityError)
    _no_dangling_references(session_factory)


def test_a_foreign_key_refusing_the_delete_is_a_409_not_a_500(
    session_factory: sessionmaker[Session],
    tenant: CreatedTenant,
    after_check: list[Intruder],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The net under the locks: with them off, the intruder wins and the delete says so as a Conflict."""
    monkeypatch.setattr(repository, "lock_for_delete", lambda *_a, **_k: None)
    _, (night,) = _product(session_factory, tenant.tenant_id, groups=("Night",))
    # Nothing holds it back here: the delete waits until it has committed, however loaded the machine.
    intruder = Intruder(
        session_factory, lambda s: s.add(_device_row(tenant.tenant_id, group_id=night)), head_start_s=30
    )
    after_check.append(intruder)
    with pytest.raises(Conflict) as refused:
        _delete_group(session_factory, tenant, night)
    assert refused.value.code == "changed_while_deleting"
    assert "changed while it was being deleted" in refused.value.detail
    intruder.join()
    assert intruder.error is None
    with session_factory() as session:
        assert session.get(DeviceGroup, night) is not None
        outcomes = session.scalars(select(AuditEvent.outcome).where(AuditEvent.action == "device_group.delete")).all()
        assert outcomes == ["refused"]
    _no_dangling_references(session_factory)


def test_assigning_a_development_device_to_a_group_deleted_meanwhile_is_not_found(
    session_factory: sessionmaker[Session], tenant: CreatedTenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``group_before_development`` has no foreign key: the assignment holds the group instead."""
    _, (dev, night) = _product(session_factory, tenant.tenant_id, groups=("Development", "Night"))
    with session_factory() as session:
        device = _device_row(tenant.tenant_id, group_id=dev, capability_kind="appDevelopment")
        session.add(device)
        session.commit()
        device_id = device.device_id
    original = fleet_service.get_group_for

    def found_then_deleted(session: Session, who: Principal, ref: str, *, action: str, now: dt.datetime) -> object:
        group = original(session, who, ref, action=action, now=now)
        _delete_group(session_factory, tenant, night)  # another operator deletes it right after the lookup
        return group

    monkeypatch.setattr(fleet_service, "get_group_for", found_then_deleted)
    with session_factory() as session, pytest.raises(NotFound, match="deleted meanwhile"):
        fleet_service.assign_device(session, _who(tenant), device_id, night, now=T0)
    with session_factory() as session:
        assert session.get(DeviceGroup, night) is None
        assert session.get(Device, device_id).group_before_development is None  # type: ignore[union-attr]
    _no_dangling_references(session_factory)


def test_the_cli_gives_no_misleading_hint_for_a_delete_that_met_a_change() -> None:
    import httpx

    from bastion.cli._client import ServiceClient

    answer = httpx.Response(409, json={"error": "changed_while_deleting", "detail": "device group 'x' changed"})
    error = ServiceClient._error(answer)
    assert "changed_while_deleting, HTTP 409" in error.message
    assert error.hint is None  # not "nothing to do: it already exists"


def test_assigning_a_development_device_names_the_group_it_returns_to(
    session_factory: sessionmaker[Session], tenant: CreatedTenant
) -> None:
    _, (dev, night) = _product(session_factory, tenant.tenant_id, groups=("Development", "Night"))
    with session_factory() as session:
        device = _device_row(tenant.tenant_id, group_id=dev, capability_kind="appDevelopment")
        session.add(device)
        session.commit()
        device_id = device.device_id
    with session_factory() as session:
        fleet_service.assign_device(session, _who(tenant), device_id, night, now=T0)
    with session_factory() as session:
        row = session.get(Device, device_id)
        assert row is not None
        assert (row.group_id, row.group_before_development) == (dev, night)
        details = session.scalars(select(AuditEvent.detail).where(AuditEvent.action == "device.assign")).all()
        assert details == [f"group={night} (after development mode)"]
    # And the group it returns to is in use: it cannot be deleted.
    with session_factory() as session, pytest.raises(Conflict, match="is in use: it has 1 device"):
        lifecycle.delete_group(session, _who(tenant), night, now=T0)


@pytest.fixture
def deleted_after_lookup(
    session_factory: sessionmaker[Session], tenant: CreatedTenant, monkeypatch: pytest.MonkeyPatch
) -> Callable[[object, str], None]:
    """Make ``module.get_group_for`` delete the group it found right after the lookup (another operator's delete)."""

    def patch(module: object, group_id: str) -> None:
        original = fleet_service.get_group_for

        def found_then_deleted(session: Session, who: Principal, ref: str, *, action: str, now: dt.datetime) -> object:
            group = original(session, who, ref, action=action, now=now)
            _delete_group(session_factory, tenant, group_id)
            return group

        monkeypatch.setattr(module, "get_group_for", found_then_deleted)

    return patch


def test_assigning_a_device_to_a_group_deleted_meanwhile_is_not_found_not_a_500(
    session_factory: sessionmaker[Session],
    tenant: CreatedTenant,
    deleted_after_lookup: Callable[[object, str], None],
) -> None:
    _, (night,) = _product(session_factory, tenant.tenant_id, groups=("Night",))
    with session_factory() as session:
        device = _device_row(tenant.tenant_id)
        session.add(device)
        session.commit()
        device_id = device.device_id
    deleted_after_lookup(fleet_service, night)
    with session_factory() as session, pytest.raises(NotFound, match="deleted meanwhile"):
        fleet_service.assign_device(session, _who(tenant), device_id, night, now=T0)
    _no_dangling_references(session_factory)


def test_a_deployment_to_a_group_deleted_meanwhile_is_not_found_not_a_500(
    session_factory: sessionmaker[Session],
    tenant: CreatedTenant,
    settings: Settings,
    deleted_after_lookup: Callable[[object, str], None],
) -> None:
    from bastion.service.deployments import service as deployments
    from bastion.service.models import AppImage

    _, (night,) = _product(session_factory, tenant.tenant_id, groups=("Night",))
    with session_factory() as session:
        image = AppImage(
            tenant_id=tenant.tenant_id,
            sha256="ab" * 32,
            component_id=str(uuid.UUID(int=7)),
            version="1.0.0",
            security_version=1,
            size=1,
            signer_key_id="cd" * 32,
            uploaded_at=T0,
            uploaded_by="test",
        )
        session.add(image)
        session.commit()
        image_id = image.id
    deleted_after_lookup(deployments, night)
    with session_factory() as session, pytest.raises(NotFound, match="deleted meanwhile"):
        deployments.create_deployment(
            session, _who(tenant), night, [str(image_id)], settings=settings, now=T0, publisher=FakePublisher()
        )
    with session_factory() as session:
        assert session.scalars(select(Deployment)).all() == []
    _no_dangling_references(session_factory)
