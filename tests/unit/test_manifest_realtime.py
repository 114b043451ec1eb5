"""RealTimeCapable manifests: Azure Sphere's rules for real-time apps, with JSON paths; the schema agrees."""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonschema
import pytest

from bastion.images.manifest import MANIFEST_JSON_SCHEMA, ManifestError, validate_manifest

CID = "0c5d4f2e-1b6a-4c57-9a2e-3f1d2b7a9e10"
PARTNER = "25025d2c-66da-4448-bae1-ac26fcdd3627"


def _rt(capabilities: dict[str, Any]) -> dict[str, Any]:
    return {
        "SchemaVersion": 1,
        "Name": "rt",
        "ComponentId": CID,
        "EntryPoint": "main.py",
        "ApplicationType": "RealTimeCapable",
        "Capabilities": capabilities,
    }


GOOD = [
    {},
    {"AllowedApplicationConnections": [PARTNER]},
    {"Gpio": [8, 9], "Uart": ["ISU0"], "I2cMaster": ["ISU1"], "SpiMaster": ["ISU2"]},
    {"Adc": ["ADC-CONTROLLER-0"], "Pwm": ["PWM-CONTROLLER-0"], "AllowedApplicationConnections": [PARTNER]},
]

FORBIDDEN: list[tuple[str, Any]] = [
    ("AllowedConnections", ["example.com"]),
    ("AllowedConnections", []),
    ("AllowedTcpServerPorts", [8080]),
    ("AllowedUdpServerPorts", [53]),
    ("MutableStorage", {"SizeKB": 8}),
    ("DeviceAuthentication", PARTNER),
    ("CertStore", True),
    ("PowerControls", ["ForceReboot"]),
    ("SystemTime", True),
    ("SoftwareUpdateDeferral", True),
    ("SystemEventNotifications", True),
]


def _issues(value: dict[str, Any]) -> list[tuple[str, str]]:
    try:
        validate_manifest(json.dumps(value).encode())
    except ManifestError as exc:
        return [(issue.path, issue.message) for issue in exc.errors]
    return []


@pytest.mark.parametrize("caps", GOOD)
def test_realtime_app_with_peripherals_and_partners_is_valid(caps: dict[str, Any]) -> None:
    manifest = validate_manifest(json.dumps(_rt(caps)).encode())
    assert manifest.application_type == "RealTimeCapable"


@pytest.mark.parametrize(("name", "value"), FORBIDDEN)
def test_realtime_app_cannot_declare_os_services(name: str, value: Any) -> None:
    issues = _issues(_rt({"Gpio": [8], name: value}))
    assert len(issues) == 1
    path, message = issues[0]
    assert path == f"$.Capabilities.{name}"
    assert f"cannot declare {name}" in message


def test_realtime_app_uses_raw_peripheral_values() -> None:
    issues = _issues(_rt({"Gpio": [8, "$SAMPLE_LED"], "Uart": ["$SAMPLE_UART_LOOPBACK"]}))
    assert [path for path, _ in issues] == ["$.Capabilities.Gpio[1]", "$.Capabilities.Uart[0]"]
    assert all("raw value" in message for _, message in issues)


def test_every_problem_is_listed() -> None:
    issues = _issues(_rt({"AllowedConnections": ["a.com"], "MutableStorage": {"SizeKB": 1}, "Gpio": ["$X"]}))
    assert [path for path, _ in issues] == [
        "$.Capabilities.AllowedConnections",
        "$.Capabilities.MutableStorage",
        "$.Capabilities.Gpio[0]",
    ]


def test_a_default_app_keeps_every_capability_and_names() -> None:
    value = _rt({"AllowedConnections": ["a.com"], "Gpio": ["$SAMPLE_LED"], "Adc": ["ADC-CONTROLLER-0"]})
    value["ApplicationType"] = "Default"
    manifest = validate_manifest(json.dumps(value).encode())
    assert manifest.application_type == "Default"
    assert manifest.capabilities.gpio == ("$SAMPLE_LED",)
    assert manifest.capabilities.adc == ("ADC-CONTROLLER-0",)


def _examples() -> list[tuple[dict[str, Any], bool]]:
    examples = [(_rt(caps), True) for caps in GOOD]
    examples += [(_rt({name: value}), False) for name, value in FORBIDDEN]
    examples.append((_rt({"Gpio": ["$SAMPLE_LED"]}), False))
    examples.append((_rt({"Adc": ["$-bad"]}), False))
    default = _rt({"SystemTime": True, "Gpio": ["$SAMPLE_LED"]})
    default["ApplicationType"] = "Default"
    examples.append((default, True))
    return examples


@pytest.mark.parametrize(("value", "valid"), _examples())
def test_schema_and_validator_agree_on_realtime_rules(value: dict[str, Any], valid: bool) -> None:
    schema_ok = jsonschema.Draft202012Validator(MANIFEST_JSON_SCHEMA).is_valid(copy.deepcopy(value))
    assert (schema_ok, not _issues(value)) == (valid, valid)
