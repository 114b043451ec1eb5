"""The applibs choke point: the wire format, the table, and refusals that name the capability."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from bastion.applibs import _wire
from bastion.applibs._client import Connection
from bastion.applibs.errors import InvalidArgumentError, PermissionDeniedError, TransportError
from bastion.images.manifest import validate_manifest
from bastion.os.appservices.denials import DenialBudget
from bastion.os.appservices.registry import AppContext, Operation, Reply
from bastion.os.appservices.server import AppServer
from bastion.os.appservices.table import OPERATIONS, build_table

CID = "0c5d4f2e-1b6a-4c57-9a2e-3f1d2b7a9e10"


def _manifest(capabilities: dict[str, object], app_type: str = "Default") -> bytes:
    return json.dumps(
        {
            "SchemaVersion": 1,
            "Name": "t",
            "ComponentId": CID,
            "EntryPoint": "main.py",
            "CmdArgs": [],
            "ApplicationType": app_type,
            "Capabilities": capabilities,
        }
    ).encode()


def _serve(tmp_path: Path, capabilities: dict[str, object], table: dict[str, Operation] | None = None):
    records: list[tuple[str, str]] = []
    ctx = AppContext(
        component_id=CID,
        version="1.0.0",
        manifest=validate_manifest(_manifest(capabilities)),
        storage_dir=tmp_path,
        record=lambda kind, detail: records.append((kind, detail)),
    )
    os_end, app_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    server = AppServer(ctx, os_end, table)
    server.start()
    return Connection(app_end), server, records


def _needs_storage(ctx: AppContext, args: object) -> Reply:
    del ctx, args
    return Reply({"done": True})


def test_core_ops_round_trip(tmp_path: Path) -> None:
    client, server, records = _serve(tmp_path, {})
    assert client.call("app.ping", {"echo": "hi"}) == {"echo": "hi"}
    assert client.call("app.whoami")["component_id"] == CID
    assert records == []
    client.close()
    server.close()


def test_unknown_op_is_denied_and_recorded(tmp_path: Path) -> None:
    client, server, records = _serve(tmp_path, {})
    with pytest.raises(PermissionDeniedError, match="no such operation"):
        client.call("chip.read_uds")
    assert records == [("app_denied", "chip.read_uds: no such operation")]
    client.close()
    server.close()


def test_missing_capability_is_named(tmp_path: Path) -> None:
    table = build_table((Operation("storage.write", _needs_storage, capability="MutableStorage"),))
    client, server, records = _serve(tmp_path, {}, table)
    with pytest.raises(PermissionDeniedError) as info:
        client.call("storage.write")
    assert info.value.capability == "MutableStorage"
    assert records[0][0] == "app_denied"
    assert "MutableStorage" in records[0][1]
    client.close()
    server.close()
    client2, server2, records2 = _serve(tmp_path, {"MutableStorage": {"SizeKB": 8}}, table)
    assert client2.call("storage.write") == {"done": True}
    assert records2 == []
    client2.close()
    server2.close()


def test_fds_beyond_the_op_are_refused(tmp_path: Path) -> None:
    client, server, _ = _serve(tmp_path, {})
    r, w = socket.socketpair()
    with pytest.raises(InvalidArgumentError, match="fds"):
        client.call("app.ping", {}, (r.fileno(),))
    r.close()
    w.close()
    client.close()
    server.close()


def test_garbage_gets_an_error_not_a_dead_server(tmp_path: Path) -> None:
    os_end, app_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ctx = AppContext(CID, "1.0.0", validate_manifest(_manifest({})), tmp_path)
    server = AppServer(ctx, os_end)
    server.start()
    app_end.sendall(b"\xff not json")
    reply, _ = _wire.recv_message(app_end) or ({}, [])
    assert reply["ok"] is False
    assert reply["error"]["code"] == "bad_request"
    app_end.sendall(b"x" * (_wire.MAX_MESSAGE_BYTES + 4096))
    reply, _ = _wire.recv_message(app_end) or ({}, [])
    assert reply["error"]["code"] == "bad_request"
    assert Connection(app_end).call("app.ping", {"echo": "still"}) == {"echo": "still"}
    app_end.close()
    server.close()


def test_a_nesting_bomb_or_a_huge_id_gets_an_error_not_a_dead_server(tmp_path: Path) -> None:
    # Regression: json.loads raised RecursionError (not ValueError) and ended the server's thread;
    # a 120 KB id was echoed into an answer too large to send, which ended it too.
    os_end, app_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ctx = AppContext(CID, "1.0.0", validate_manifest(_manifest({})), tmp_path)
    server = AppServer(ctx, os_end)
    server.start()
    app_end.sendall(b"[" * 100_000)
    reply, _ = _wire.recv_message(app_end) or ({}, [])
    assert reply == {
        "id": None,
        "ok": False,
        "error": {"code": "bad_request", "message": "message is nested too deeply"},
    }
    app_end.sendall(b'{"id": "' + b"i" * 120_000 + b'", "op": "no.such"}')
    reply, _ = _wire.recv_message(app_end) or ({}, [])
    assert reply["id"] is None
    assert reply["error"]["code"] == "permission_denied"
    assert Connection(app_end).call("app.ping", {"echo": "still"}) == {"echo": "still"}
    app_end.close()
    server.close()


def test_a_flood_of_refusals_is_recorded_once_per_kind_and_counted(tmp_path: Path) -> None:
    # Regression: every refusal was an event, so a few hundred refused requests flushed the bounded
    # event queue (other apps' violations, the app's own first refusal) and rewrote it on flash each time.
    table = build_table(
        tuple(OPERATIONS.values()), (Operation("storage.write", _needs_storage, capability="MutableStorage"),)
    )
    client, server, records = _serve(tmp_path, {}, table)
    for index in range(300):
        for op in (f"no.such.op{index}", "storage.write"):
            with pytest.raises(PermissionDeniedError):
                client.call(op)
    assert records == [
        ("app_denied", "no.such.op0: no such operation"),
        ("app_denied", "MutableStorage: storage.write: the app manifest does not grant MutableStorage"),
    ]
    client.close()
    server.close()
    assert records[-1] == ("app_denied", "598 more refusals of this app start were not recorded one by one")
    server.close()  # said once
    assert len(records) == 3


def test_distinct_refusals_past_the_bound_are_counted_not_recorded() -> None:
    records: list[tuple[str, str]] = []
    budget = DenialBudget(lambda kind, detail: records.append((kind, detail)), max_recorded=2)
    for detail in ("a: x", "b: x", "c: x", "a: x"):
        budget.record("app_denied", detail)
    budget.record("app_watchdog", "other kinds pass")
    budget.close()
    assert records == [
        ("app_denied", "a: x"),
        ("app_denied", "b: x"),
        ("app_watchdog", "other kinds pass"),
        ("app_denied", "2 more refusals of this app start were not recorded one by one"),
    ]


@pytest.mark.parametrize(
    "value", [{}, {"a": [1, 2.5, None, True, False, "é\n\u2028"], "b": {"c": -(2**70)}}, {"x": "\U0001f600" * 3}]
)
def test_the_wire_carries_json_objects_exactly(value: dict[str, object]) -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    _wire.send_message(a, value)
    assert _wire.recv_message(b) == (value, [])
    a.close()
    b.close()


@pytest.mark.parametrize(
    "data", [b"{} x", b" {}", b'{"a": 1,}', "{}".encode("utf-16"), b'{"a": "\xff"}', b"1", b"{" * 3]
)
def test_the_wire_refuses_what_is_not_exactly_one_json_object(data: bytes) -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    a.send(data)
    with pytest.raises(_wire.WireError):
        _wire.recv_message(b)
    a.close()
    b.close()


def test_closed_os_is_a_transport_error(tmp_path: Path) -> None:
    client, server, _ = _serve(tmp_path, {})
    server.close()
    with pytest.raises(TransportError):
        client.call("app.ping")
    client.close()


def test_table_has_no_duplicates_and_every_capability_is_known() -> None:
    with pytest.raises(ValueError, match="twice"):
        build_table(OPERATIONS and tuple(OPERATIONS.values()), tuple(OPERATIONS.values()))
    with pytest.raises(ValueError, match="unknown capability"):
        Operation("x.y", _needs_storage, capability="ReadUds")
