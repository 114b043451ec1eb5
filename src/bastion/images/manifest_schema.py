"""The app manifest's bounds, patterns and its JSON Schema (draft 2020-12) for editors.

The validator in :mod:`bastion.images.manifest` and the schema below are built
from the same constants, so they agree; a test checks both against the same
good and bad manifests, and that the shipped file
``bastion/images/schemas/app_manifest.schema.json`` holds
:func:`schema_file_text` (the test prints how to regenerate it).

JSON Schema counts ``80.0`` as an integer; the validator does not (a port or a
size must be written as an integer). Otherwise the two agree.

Patterns use ``[0-9]`` rather than ``\\d``: JSON Schema regexes are ECMA-262,
where ``\\d`` is ASCII only, while Python's matches every Unicode digit.
"""

from __future__ import annotations

import json
from typing import Any, Final

__all__ = [
    "APPLICATION_TYPES",
    "BOOL_CAPABILITIES",
    "CAPABILITY_NAMES",
    "COMPONENT_ID_PATTERN",
    "ENTRY_POINT_PATTERN",
    "HOSTNAME_PATTERN",
    "IPV4_PATTERN",
    "MANIFEST_JSON_SCHEMA",
    "MAX_CMD_ARGS",
    "MAX_CMD_ARG_LENGTH",
    "MAX_CONNECTIONS",
    "MAX_ENTRY_POINT_LENGTH",
    "MAX_HOSTNAME_LENGTH",
    "MAX_LIST_ITEMS",
    "MAX_MANIFEST_BYTES",
    "MAX_MUTABLE_STORAGE_KB",
    "MAX_NAME_LENGTH",
    "MAX_PERIPHERAL_INDEX",
    "MAX_PERIPHERAL_NAME_LENGTH",
    "MAX_VERSION_LENGTH",
    "NAME_PATTERN",
    "NUMERIC_NAME_PATTERN",
    "PERIPHERAL_CAPABILITIES",
    "PERIPHERAL_NAME_PATTERN",
    "POWER_CONTROLS",
    "REALTIME_CAPABILITIES",
    "REALTIME_TYPE",
    "SCHEMA_VERSION",
    "VERSION_PATTERN",
    "schema_file_text",
]

#: The only manifest schema version this code reads.
SCHEMA_VERSION: Final = 1
#: Bound on the manifest file itself.
MAX_MANIFEST_BYTES: Final = 64 * 1024
#: ``Name``: 1..31 characters (Azure Sphere's limit), plain characters only.
MAX_NAME_LENGTH: Final = 31
NAME_PATTERN: Final = r"^[A-Za-z0-9_][A-Za-z0-9 _.-]{0,30}$"
#: ``ComponentId``: a UUID in its 8-4-4-4-12 hex form (either case).
COMPONENT_ID_PATTERN: Final = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
#: ``EntryPoint``: a relative path of plain parts (a part cannot start with a dot, so no ``.``/``..``).
MAX_ENTRY_POINT_LENGTH: Final = 255
ENTRY_POINT_PATTERN: Final = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}(/[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})*$"
#: ``CmdArgs``: at most this many arguments of at most this many characters.
MAX_CMD_ARGS: Final = 32
MAX_CMD_ARG_LENGTH: Final = 256
#: ``Version``: a semantic version, as in the image header.
MAX_VERSION_LENGTH: Final = 64
VERSION_PATTERN: Final = r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$"
#: ``Default`` runs on the application core; ``RealTimeCapable`` on a real-time core.
APPLICATION_TYPES: Final = ("Default", "RealTimeCapable")
REALTIME_TYPE: Final = "RealTimeCapable"
#: ``AllowedConnections``: host names (RFC 1123, optionally ``*.``-wildcarded) or IPv4 addresses.
MAX_CONNECTIONS: Final = 100
MAX_HOSTNAME_LENGTH: Final = 253
HOSTNAME_PATTERN: Final = (
    r"^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
#: A dotted name made only of digits and dots must be a valid IPv4 address.
NUMERIC_NAME_PATTERN: Final = r"^[0-9.]+$"
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
IPV4_PATTERN: Final = rf"^{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}$"
#: Any other capability list (ports, app connections, peripherals) holds at most this many items.
MAX_LIST_ITEMS: Final = 64
#: Peripherals are numbered (GPIO 8), raw names (``ISU0``, ``ADC-CONTROLLER-0``), or
#: hardware-definition names (``$SAMPLE_LED``, identifiers as in Azure Sphere's headers).
MAX_PERIPHERAL_NAME_LENGTH: Final = 64
PERIPHERAL_NAME_PATTERN: Final = r"^(\$[A-Za-z_][A-Za-z0-9_]{0,62}|[A-Za-z_][A-Za-z0-9_-]{0,62})$"
MAX_PERIPHERAL_INDEX: Final = 1023
#: ``MutableStorage.SizeKB``: 1 KiB .. 64 MiB.
MAX_MUTABLE_STORAGE_KB: Final = 64 * 1024
POWER_CONTROLS: Final = ("ForcePowerDown", "ForceReboot", "SetPowerProfile")
PERIPHERAL_CAPABILITIES: Final = ("Gpio", "Uart", "I2cMaster", "SpiMaster", "Adc", "Pwm")
BOOL_CAPABILITIES: Final = ("CertStore", "SystemTime", "SoftwareUpdateDeferral", "SystemEventNotifications")
#: What a ``RealTimeCapable`` app may declare (Azure Sphere: its peripherals and its partners).
REALTIME_CAPABILITIES: Final = (*PERIPHERAL_CAPABILITIES, "AllowedApplicationConnections")
#: Every capability name, exactly as Azure Sphere spells it.
CAPABILITY_NAMES: Final = (
    "AllowedConnections",
    "AllowedTcpServerPorts",
    "AllowedUdpServerPorts",
    "AllowedApplicationConnections",
    *PERIPHERAL_CAPABILITIES,
    "MutableStorage",
    "DeviceAuthentication",
    "CertStore",
    "PowerControls",
    "SystemTime",
    "SoftwareUpdateDeferral",
    "SystemEventNotifications",
)


def _list_of(item: dict[str, Any], max_items: int) -> dict[str, Any]:
    return {"type": "array", "items": item, "maxItems": max_items, "uniqueItems": True}


_UUID: dict[str, Any] = {"type": "string", "pattern": COMPONENT_ID_PATTERN}
_PORT: dict[str, Any] = {"type": "integer", "minimum": 1, "maximum": 65535}
_PERIPHERAL: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "pattern": PERIPHERAL_NAME_PATTERN},
        {"type": "integer", "minimum": 0, "maximum": MAX_PERIPHERAL_INDEX},
    ]
}
_HOST: dict[str, Any] = {
    "type": "string",
    "maxLength": MAX_HOSTNAME_LENGTH,
    "anyOf": [
        {"pattern": HOSTNAME_PATTERN, "not": {"pattern": NUMERIC_NAME_PATTERN}},
        {"pattern": IPV4_PATTERN},
    ],
}
_CAPABILITIES: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "AllowedConnections": _list_of(_HOST, MAX_CONNECTIONS),
        "AllowedTcpServerPorts": _list_of(_PORT, MAX_LIST_ITEMS),
        "AllowedUdpServerPorts": _list_of(_PORT, MAX_LIST_ITEMS),
        "AllowedApplicationConnections": _list_of(_UUID, MAX_LIST_ITEMS),
        **{name: _list_of(_PERIPHERAL, MAX_LIST_ITEMS) for name in PERIPHERAL_CAPABILITIES},
        "MutableStorage": {
            "type": "object",
            "additionalProperties": False,
            "required": ["SizeKB"],
            "properties": {"SizeKB": {"type": "integer", "minimum": 1, "maximum": MAX_MUTABLE_STORAGE_KB}},
        },
        "DeviceAuthentication": _UUID,
        "PowerControls": _list_of({"enum": list(POWER_CONTROLS)}, len(POWER_CONTROLS)),
        **{name: {"type": "boolean"} for name in BOOL_CAPABILITIES},
    },
}

#: The JSON Schema (draft 2020-12) of ``app_manifest.json``, schema version 1.
MANIFEST_JSON_SCHEMA: Final[dict[str, Any]] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "urn:bastion:schema:app-manifest:1",
    "title": "Bastion app manifest (app_manifest.json), schema version 1",
    "type": "object",
    "additionalProperties": False,
    "required": ["SchemaVersion", "Name", "ComponentId", "EntryPoint", "ApplicationType"],
    "properties": {
        "SchemaVersion": {"type": "integer", "const": SCHEMA_VERSION},
        "Name": {"type": "string", "minLength": 1, "maxLength": MAX_NAME_LENGTH, "pattern": NAME_PATTERN},
        "ComponentId": _UUID,
        "EntryPoint": {"type": "string", "maxLength": MAX_ENTRY_POINT_LENGTH, "pattern": ENTRY_POINT_PATTERN},
        "CmdArgs": {
            "type": "array",
            "maxItems": MAX_CMD_ARGS,
            "items": {"type": "string", "maxLength": MAX_CMD_ARG_LENGTH, "pattern": "^[^\\u0000]*$"},
        },
        "ApplicationType": {"enum": list(APPLICATION_TYPES)},
        "Version": {"type": "string", "maxLength": MAX_VERSION_LENGTH, "pattern": VERSION_PATTERN},
        "Capabilities": _CAPABILITIES,
    },
    # A real-time app declares only its peripherals (by raw value) and its partner apps.
    "if": {"properties": {"ApplicationType": {"const": REALTIME_TYPE}}, "required": ["ApplicationType"]},
    "then": {
        "properties": {
            "Capabilities": {
                "propertyNames": {"enum": list(REALTIME_CAPABILITIES)},
                "properties": {
                    name: {"items": {"not": {"type": "string", "pattern": "^\\$"}}} for name in PERIPHERAL_CAPABILITIES
                },
            }
        }
    },
}


def schema_file_text() -> str:
    """Return the text of the shipped schema file (stable formatting)."""
    return json.dumps(MANIFEST_JSON_SCHEMA, indent=2) + "\n"
