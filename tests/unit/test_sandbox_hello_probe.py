"""``sandbox.hello`` is accepted once, first, from a sandboxed app only; the probe names what is missing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bastion.images.manifest import validate_manifest
from bastion.os.appservices.registry import AppContext, BadRequestError, DeniedError
from bastion.os.appservices.sandbox_ops import HELLO_OP, SandboxSession
from bastion.os.appservices.server import dispatch
from bastion.os.appservices.table import OPERATIONS
from bastion.os.sandbox import probe as probe_module
from bastion.os.sandbox.errors import SandboxUnavailableError
from bastion.os.sandbox.probe import probe

CID = "6f0e4c1a-2b3d-4e5f-8a9b-0c1d2e3f4a5b"
HELLO: dict[str, Any] = {
    "landlock": {"abi": 7, "fs": True, "net": True, "scoped": ["abstract_unix_socket", "signal"]},
    "rlimits": {"nproc": 32, "as": 1 << 28, "nofile": 64, "fsize": 1 << 24, "core": 0},
    "seccomp_filters": 1,
    "no_new_privs": True,
    "capabilities": 0,
    "uid": 10001,
}


def context(tmp_path: Path, session: SandboxSession, recorded: list[tuple[str, str]]) -> AppContext:
    manifest = validate_manifest(
        json.dumps(
            {
                "SchemaVersion": 1,
                "Name": "x",
                "ComponentId": CID,
                "EntryPoint": "main.py",
                "ApplicationType": "Default",
                "Capabilities": {},
            }
        ).encode()
    )
    return AppContext(
        component_id=CID,
        version="1.0.0",
        manifest=manifest,
        storage_dir=tmp_path,
        services={SandboxSession: session},
        record=lambda kind, detail: recorded.append((kind, detail)),
    )


def hello(ctx: AppContext, args: dict[str, Any] | None = None) -> dict[str, Any]:
    return dispatch(ctx, {"op": HELLO_OP, "args": HELLO if args is None else args}, [], OPERATIONS).result


def test_the_first_hello_is_recorded_and_a_second_is_refused(tmp_path: Path) -> None:
    session = SandboxSession({"sandbox": "bubblewrap", "uid": 10001}, expect_hello=True)
    recorded: list[tuple[str, str]] = []
    ctx = context(tmp_path, session, recorded)
    assert session.layers()["landlock"] == "pending"
    assert hello(ctx) == {"accepted": True}
    layers = session.layers()
    assert layers["landlock"] == HELLO["landlock"]
    assert layers["confirmed"] is True
    assert layers["seccomp_filters"] == 1
    with pytest.raises(DeniedError, match="already said hello"):
        hello(ctx, {**HELLO, "landlock": {"abi": 0, "unavailable": "forged"}})
    assert recorded[0][0] == "app_denied"
    assert session.layers()["landlock"] == HELLO["landlock"]


def test_a_hello_after_another_request_or_without_a_sandbox_is_refused(tmp_path: Path) -> None:
    late = SandboxSession({}, expect_hello=True)
    late.request_count = lambda: 2
    with pytest.raises(DeniedError, match="first request"):
        hello(context(tmp_path, late, []))
    plain = SandboxSession({"sandbox": "none (insecure-no-sandbox)"}, expect_hello=False)
    with pytest.raises(DeniedError, match="without a sandbox"):
        hello(context(tmp_path, plain, []))
    assert plain.layers() == {"sandbox": "none (insecure-no-sandbox)"}


@pytest.mark.parametrize(
    "bad",
    [
        {"landlock": "seven"},
        {"landlock": {"abi": 999}},
        {"landlock": {"abi": 0}},
        {"landlock": {"abi": 7, "scoped": ["x"] * 20}},
        {"rlimits": {"stack": 1}},
        {"seccomp_filters": "1"},
        {"uid": True},
    ],
)
def test_malformed_hellos_are_bad_requests(tmp_path: Path, bad: dict[str, Any]) -> None:
    session = SandboxSession({}, expect_hello=True)
    with pytest.raises(BadRequestError):
        hello(context(tmp_path, session, []), {**HELLO, **bad})
    assert session.hello is None


def test_a_landlock_less_kernel_is_recorded_as_such(tmp_path: Path) -> None:
    session = SandboxSession({}, expect_hello=True)
    hello(context(tmp_path, session, []), {**HELLO, "landlock": {"abi": 0, "unavailable": "not in this kernel"}})
    assert session.layers()["landlock"] == "unavailable: not in this kernel"


def test_the_probe_finds_every_feature_here() -> None:
    features = probe()
    assert Path(features.bwrap).name == "bwrap"
    assert features.landlock_abi >= 1
    assert features.landlock_missing is None
    assert features.seccomp_bpf


def test_the_probe_names_a_missing_bwrap_and_its_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SandboxUnavailableError) as missing:
        probe(bwrap=str(tmp_path / "bwrap"))
    assert missing.value.fix == "apt-get install bubblewrap"
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SandboxUnavailableError, match=r"bubblewrap \(bwrap\) is not on PATH"):
        probe()


def test_the_probe_names_a_bwrap_that_cannot_make_namespaces(tmp_path: Path) -> None:
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: setting up uid map: Permission denied' >&2\nexit 1\n")
    fake.chmod(0o755)
    with pytest.raises(SandboxUnavailableError, match="setting up uid map: Permission denied") as failed:
        probe(bwrap=str(fake))
    assert "user namespaces" in failed.value.fix


def test_the_probe_names_disabled_user_namespaces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(probe_module, "_read_int", lambda path: 0)
    with pytest.raises(SandboxUnavailableError, match=r"user\.max_user_namespaces") as failed:
        probe()
    assert failed.value.fix == "sysctl -w user.max_user_namespaces=15000"
