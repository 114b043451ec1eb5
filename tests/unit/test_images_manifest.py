"""App manifest v1: every capability good and bad, every error with its path, and the shipped JSON Schema."""

from __future__ import annotations

import copy
import json
from importlib import resources
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.images.errors import ImageError
from bastion.images.manifest import (
    MANIFEST_JSON_SCHEMA,
    MAX_MANIFEST_BYTES,
    AppManifest,
    ManifestError,
    ManifestIssue,
    validate_manifest,
)
from bastion.images.manifest_schema import CAPABILITY_NAMES, schema_file_text

CID = "0c5d4f2e-1b6a-4c57-9a2e-3f1d2b7a9e10"
OTHER = "D2A1C3F0-5E4B-4A1D-8C2B-0123456789AB"
BASE: dict[str, Any] = {
    "SchemaVersion": 1,
    "Name": "hello",
    "ComponentId": CID,
    "EntryPoint": "main.py",
    "CmdArgs": ["--flag", "x"],
    "ApplicationType": "Default",
}

# Each capability: values that must be accepted, and values that must be refused.
GOOD_CAPS: list[tuple[str, Any]] = [
    ("AllowedConnections", ["example.com", "*.contoso.com", "10.0.0.1", "localhost", "a-b.c1.io"]),
    ("AllowedConnections", []),
    ("AllowedTcpServerPorts", [1, 80, 65535]),
    ("AllowedUdpServerPorts", [53]),
    ("AllowedApplicationConnections", [CID, OTHER]),
    ("Gpio", [0, 8, "$SAMPLE_LED", "GPIO_12"]),
    ("Uart", ["$ISU0_UART"]),
    ("I2cMaster", ["$ISU1_I2C", 2]),
    ("SpiMaster", [1023]),
    ("Adc", ["$ADC_CONTROLLER0"]),
    ("Pwm", ["$PWM_CONTROLLER0"]),
    ("MutableStorage", {"SizeKB": 8}),
    ("MutableStorage", {"SizeKB": 65536}),
    ("DeviceAuthentication", OTHER),
    ("CertStore", True),
    ("PowerControls", ["ForcePowerDown", "ForceReboot", "SetPowerProfile"]),
    ("SystemTime", False),
    ("SoftwareUpdateDeferral", True),
    ("SystemEventNotifications", True),
]
BAD_CAPS: list[tuple[str, Any, str, str]] = [
    ("AllowedConnections", ["ok.com", "bad host"], "$.Capabilities.AllowedConnections[1]", "not a host name"),
    ("AllowedConnections", ["999.1.1.1"], "$.Capabilities.AllowedConnections[0]", "not an IPv4 address"),
    ("AllowedConnections", ["-a.com"], "$.Capabilities.AllowedConnections[0]", "not a host name"),
    ("AllowedConnections", ["a" * 254], "$.Capabilities.AllowedConnections[0]", "1..253 characters"),
    ("AllowedConnections", ["x.com"] * 2, "$.Capabilities.AllowedConnections[1]", "listed twice"),
    ("AllowedConnections", [f"h{i}.com" for i in range(101)], "$.Capabilities.AllowedConnections", "at most 100"),
    ("AllowedConnections", "example.com", "$.Capabilities.AllowedConnections", "is not a list"),
    ("AllowedTcpServerPorts", [80, 70000], "$.Capabilities.AllowedTcpServerPorts[1]", "70000 is not a port (1..65535)"),
    ("AllowedTcpServerPorts", [0], "$.Capabilities.AllowedTcpServerPorts[0]", "not a port"),
    ("AllowedTcpServerPorts", [True], "$.Capabilities.AllowedTcpServerPorts[0]", "not a port"),
    ("AllowedTcpServerPorts", ["80"], "$.Capabilities.AllowedTcpServerPorts[0]", "not a port"),
    ("AllowedUdpServerPorts", [1.5], "$.Capabilities.AllowedUdpServerPorts[0]", "not a port"),
    ("AllowedApplicationConnections", ["nope"], "$.Capabilities.AllowedApplicationConnections[0]", "not a UUID"),
    ("Gpio", [-1], "$.Capabilities.Gpio[0]", "not a peripheral number"),
    ("Gpio", [1024], "$.Capabilities.Gpio[0]", "not a peripheral number"),
    ("Uart", ["$bad-name"], "$.Capabilities.Uart[0]", "not a peripheral name"),
    ("I2cMaster", [None], "$.Capabilities.I2cMaster[0]", "not a peripheral name or number"),
    ("SpiMaster", [{"a": 1}], "$.Capabilities.SpiMaster[0]", "not a peripheral"),
    ("Adc", [1, 1], "$.Capabilities.Adc[1]", "listed twice"),
    ("Pwm", [False], "$.Capabilities.Pwm[0]", "not a peripheral"),
    ("MutableStorage", {"SizeKB": 0}, "$.Capabilities.MutableStorage.SizeKB", "not a size in KiB (1..65536)"),
    ("MutableStorage", {"SizeKB": 65537}, "$.Capabilities.MutableStorage.SizeKB", "not a size"),
    ("MutableStorage", {}, "$.Capabilities.MutableStorage", "SizeKB is required"),
    ("MutableStorage", {"SizeKB": 8, "Extra": 1}, "$.Capabilities.MutableStorage.Extra", "unknown key"),
    ("MutableStorage", 8, "$.Capabilities.MutableStorage", "not an object"),
    ("DeviceAuthentication", "tenant", "$.Capabilities.DeviceAuthentication", "not a UUID"),
    ("DeviceAuthentication", True, "$.Capabilities.DeviceAuthentication", "not a string"),
    ("CertStore", "yes", "$.Capabilities.CertStore", "not true or false"),
    ("PowerControls", ["Reboot"], "$.Capabilities.PowerControls[0]", "not one of ForcePowerDown"),
    ("SystemTime", 1, "$.Capabilities.SystemTime", "not true or false"),
    ("SoftwareUpdateDeferral", None, "$.Capabilities.SoftwareUpdateDeferral", "not true or false"),
    ("SystemEventNotifications", [], "$.Capabilities.SystemEventNotifications", "not true or false"),
]
BAD_TOP: list[tuple[dict[str, Any], str, str]] = [
    ({"SchemaVersion": 2}, "$.SchemaVersion", "not a supported schema version"),
    ({"SchemaVersion": True}, "$.SchemaVersion", "not a supported schema version"),
    ({"Name": ""}, "$.Name", "1..31 characters"),
    ({"Name": "x" * 32}, "$.Name", "1..31 characters"),
    ({"Name": "bad/name"}, "$.Name", "not a valid app name"),
    ({"ComponentId": "not-a-uuid"}, "$.ComponentId", "not a UUID"),
    ({"EntryPoint": "../escape"}, "$.EntryPoint", "relative path"),
    ({"EntryPoint": "/bin/app"}, "$.EntryPoint", "relative path"),
    ({"EntryPoint": "a/../b"}, "$.EntryPoint", "relative path"),
    ({"EntryPoint": "a//b"}, "$.EntryPoint", "relative path"),
    ({"CmdArgs": "x"}, "$.CmdArgs", "not a list"),
    ({"CmdArgs": [1]}, "$.CmdArgs[0]", "not a string"),
    ({"CmdArgs": ["a\x00b"]}, "$.CmdArgs[0]", "without NUL"),
    ({"CmdArgs": ["a"] * 33}, "$.CmdArgs", "at most 32"),
    ({"ApplicationType": "Debugger"}, "$.ApplicationType", "not one of"),
    ({"Version": "1.0"}, "$.Version", "semantic version"),
    ({"Version": "1.0.0", "Extra": True}, "$.Extra", "unknown key"),
    ({"Capabilities": {"Gpoi": [1]}}, "$.Capabilities.Gpoi", "unknown key"),
    ({"Capabilities": []}, "$.Capabilities", "not an object"),
]


def encode(value: Any) -> bytes:
    return json.dumps(value).encode()


def first_good_caps() -> dict[str, Any]:
    caps: dict[str, Any] = {}
    for name, value in GOOD_CAPS:
        caps.setdefault(name, value)
    return caps


def with_caps(caps: dict[str, Any]) -> dict[str, Any]:
    return {**BASE, "Capabilities": caps}


def issues_of(data: bytes) -> list[ManifestIssue]:
    with pytest.raises(ManifestError) as info:
        validate_manifest(data)
    return info.value.errors


def test_minimal_and_full_manifest() -> None:
    minimal = {k: v for k, v in BASE.items() if k != "CmdArgs"}
    manifest = validate_manifest(encode(minimal))
    assert manifest == AppManifest(name="hello", component_id=CID, entry_point="main.py")
    full = with_caps(first_good_caps())
    full["Version"] = "1.2.3-rc.1+build.5"
    full["ComponentId"] = CID.upper()
    manifest = validate_manifest(encode(full))
    caps = manifest.capabilities
    assert manifest.component_id == CID  # canonical lowercase, as image headers carry it
    assert manifest.version == "1.2.3-rc.1+build.5"
    assert manifest.cmd_args == ("--flag", "x")
    assert caps.allowed_connections == ("example.com", "*.contoso.com", "10.0.0.1", "localhost", "a-b.c1.io")
    assert caps.allowed_udp_server_ports == (53,)
    assert caps.allowed_application_connections == (CID, OTHER.lower())
    assert caps.gpio == (0, 8, "$SAMPLE_LED", "GPIO_12")
    assert caps.mutable_storage_kb == 8
    assert caps.device_authentication == OTHER.lower()
    assert caps.power_controls == ("ForcePowerDown", "ForceReboot", "SetPowerProfile")
    assert (caps.cert_store, caps.system_time, caps.software_update_deferral) == (True, False, True)
    assert caps.system_event_notifications is True
    assert set(CAPABILITY_NAMES) == {name for name, _ in GOOD_CAPS}


@pytest.mark.parametrize(("name", "value"), GOOD_CAPS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(GOOD_CAPS)])
def test_each_capability_accepts(name: str, value: Any) -> None:
    validate_manifest(encode(with_caps({name: value})))


@pytest.mark.parametrize(
    ("name", "value", "path", "message"), BAD_CAPS, ids=[f"{c[0]}-{i}" for i, c in enumerate(BAD_CAPS)]
)
def test_each_capability_refuses(name: str, value: Any, path: str, message: str) -> None:
    issues = issues_of(encode(with_caps({name: value})))
    assert [issue.path for issue in issues] == [path]
    assert message in issues[0].message


@pytest.mark.parametrize(("change", "path", "message"), BAD_TOP, ids=[str(i) for i in range(len(BAD_TOP))])
def test_top_level_refuses(change: dict[str, Any], path: str, message: str) -> None:
    issues = issues_of(encode({**BASE, **change}))
    assert [issue.path for issue in issues] == [path]
    assert message in issues[0].message


def test_every_error_is_reported_with_its_path() -> None:
    bad = {
        "SchemaVersion": 1,
        "Name": "",
        "ComponentId": "x",
        "EntryPoint": "../main.py",
        "ApplicationType": "Default",
        "Nope": 1,
        "Capabilities": {
            "AllowedTcpServerPorts": [80, 70000, 0],
            "AllowedConnections": ["ok.com", "bad_host!"],
            "MutableStorage": {"SizeKB": -1},
            "PowerControls": ["Explode"],
            "Unknown": True,
        },
    }
    issues = issues_of(encode(bad))
    assert [str(i).split(":")[0] for i in issues] == [
        "$.Nope",
        "$.Name",
        "$.ComponentId",
        "$.EntryPoint",
        "$.Capabilities.Unknown",
        "$.Capabilities.AllowedTcpServerPorts[1]",
        "$.Capabilities.AllowedTcpServerPorts[2]",
        "$.Capabilities.AllowedConnections[1]",
        "$.Capabilities.MutableStorage.SizeKB",
        "$.Capabilities.PowerControls[0]",
    ]
    assert "$.Capabilities.AllowedTcpServerPorts[1]: 70000 is not a port (1..65535)" in [str(i) for i in issues]


def test_missing_required_fields_are_each_reported() -> None:
    issues = issues_of(b"{}")
    assert [str(i) for i in issues] == [
        f"$: {name} is required" for name in ("SchemaVersion", "Name", "ComponentId", "EntryPoint", "ApplicationType")
    ]


def test_duplicate_keys_are_errors_at_every_level() -> None:
    text = (
        '{"SchemaVersion": 1, "Name": "a", "Name": "b", "ComponentId": "CID", "EntryPoint": "m", '
        '"ApplicationType": "Default", "Capabilities": {"Gpio": [1], "Gpio": [2], '
        '"MutableStorage": {"SizeKB": 1, "SizeKB": 2}}}'
    ).replace("CID", CID)
    issues = issues_of(text.encode())
    assert [i.path for i in issues] == [
        "$.Name",
        "$.Capabilities.Gpio",
        "$.Capabilities.MutableStorage.SizeKB",
    ]
    assert all(i.message == "duplicate key" for i in issues)


def test_odd_keys_get_bracketed_paths() -> None:
    issues = issues_of(encode({**BASE, "a b": 1}))
    assert str(issues[0]) == '$["a b"]: unknown key'


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b" " * (MAX_MANIFEST_BYTES + 1), "the limit is"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b"{", "not valid JSON"),
        (b'{"SchemaVersion": NaN}', "not valid JSON"),
        (b"[" * 50000 + b"]" * 50000, "bytes; the limit"),
        (b"[" * 30000 + b"]" * 30000, "nested too deeply"),
        (b"[]", "not an object"),
        (b"1" * 5000, "not valid JSON"),
    ],
)
def test_malformed_input_is_one_error_at_the_root(data: bytes, message: str) -> None:
    issues = issues_of(data)
    assert len(issues) == 1
    assert issues[0].path == "$"
    assert message in issues[0].message


def test_error_type_and_summary() -> None:
    with pytest.raises(ImageError, match=r"app manifest has \d+ errors: \$: SchemaVersion is required"):
        validate_manifest(b"{}")


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(st.sampled_from([*BASE, "Capabilities", *CAPABILITY_NAMES, "SizeKB", "x"]), inner)
        ),
        max_leaves=20,
    )
)
def test_arbitrary_json_only_ever_raises_manifest_error(value: Any) -> None:
    errors: list[ManifestIssue] = []
    try:
        validate_manifest(encode(value))
    except ManifestError as exc:
        errors = exc.errors or [ManifestIssue("", "empty error list")]
    assert all(issue.path.startswith("$") for issue in errors)


# -- the shipped JSON Schema agrees with the validator ---------------------------------------


def test_shipped_schema_file_is_current_and_valid() -> None:
    text = resources.files("bastion.images").joinpath("schemas/app_manifest.schema.json").read_text()
    assert text == schema_file_text(), (
        "regenerate: python -c 'from bastion.images.manifest_schema import schema_file_text; "
        'print(schema_file_text(), end="")\' > src/bastion/images/schemas/app_manifest.schema.json'
    )
    assert json.loads(text) == MANIFEST_JSON_SCHEMA
    jsonschema.Draft202012Validator.check_schema(MANIFEST_JSON_SCHEMA)


def _examples() -> list[tuple[Any, bool]]:
    examples: list[tuple[Any, bool]] = [(BASE, True), ({}, False), ([], False)]
    examples += [(with_caps({name: value}), True) for name, value in GOOD_CAPS]
    examples += [(with_caps({name: value}), False) for name, value, _, _ in BAD_CAPS]
    examples += [({**BASE, **change}, False) for change, _, _ in BAD_TOP]
    full = with_caps(first_good_caps())
    examples.append(({**full, "Version": "0.1.0"}, True))
    for key in ("SchemaVersion", "Name", "ComponentId", "EntryPoint", "ApplicationType"):
        examples.append(({k: v for k, v in BASE.items() if k != key}, False))
    return examples


@pytest.mark.parametrize(("value", "valid"), _examples())
def test_schema_and_validator_agree(value: Any, valid: bool) -> None:
    schema_ok = jsonschema.Draft202012Validator(MANIFEST_JSON_SCHEMA).is_valid(copy.deepcopy(value))
    try:
        validate_manifest(encode(value))
        validator_ok = True
    except ManifestError:
        validator_ok = False
    assert (schema_ok, validator_ok) == (valid, valid)
