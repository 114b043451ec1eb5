"""The app manifest (``app_manifest.json``, schema version 1) and its validator.

The format is Azure Sphere's: ``SchemaVersion``, ``Name``, ``ComponentId``,
``EntryPoint``, ``CmdArgs``, ``ApplicationType``, ``Capabilities`` (with Azure
Sphere's capability names), plus an optional ``Version``. Bastion is stricter
in three ways: unknown keys and duplicate keys are errors, ``EntryPoint`` is a
relative path inside the app, and every list and string has a bound (see
:mod:`bastion.images.manifest_schema`, which also holds the JSON Schema for
editors).

The validator takes bytes and reports *every* problem with its JSON path, not
only the first one.

Example:
    >>> m = validate_manifest(b'{"SchemaVersion": 1, "Name": "hello", '
    ...     b'"ComponentId": "0c5d4f2e-1b6a-4c57-9a2e-3f1d2b7a9e10", "EntryPoint": "main.py", '
    ...     b'"CmdArgs": [], "ApplicationType": "Default", '
    ...     b'"Capabilities": {"AllowedTcpServerPorts": [8080]}}')
    >>> m.capabilities.allowed_tcp_server_ports
    (8080,)
    >>> try:
    ...     validate_manifest(b'{"SchemaVersion": 2, "Name": "hello", "ComponentId": "x", '
    ...         b'"EntryPoint": "../main.py", "ApplicationType": "Default", '
    ...         b'"Capabilities": {"AllowedTcpServerPorts": [80, 70000]}}')
    ... except ManifestError as exc:
    ...     for issue in exc.errors:
    ...         print(issue)
    $.SchemaVersion: 2 is not a supported schema version (1)
    $.ComponentId: "x" is not a UUID
    $.EntryPoint: "../main.py" is not a relative path inside the app (no '..', no leading '/')
    $.Capabilities.AllowedTcpServerPorts[1]: 70000 is not a port (1..65535)
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bastion.images import manifest_schema as schema
from bastion.images.errors import ImageError
from bastion.images.manifest_schema import MANIFEST_JSON_SCHEMA, MAX_MANIFEST_BYTES, SCHEMA_VERSION

__all__ = [
    "MANIFEST_JSON_SCHEMA",
    "MANIFEST_NAME",
    "MAX_MANIFEST_BYTES",
    "SCHEMA_VERSION",
    "AppManifest",
    "Capabilities",
    "ManifestError",
    "ManifestIssue",
    "validate_manifest",
]

#: The manifest's file name at the root of an app.
MANIFEST_NAME = "app_manifest.json"
_REQUIRED = ("SchemaVersion", "Name", "ComponentId", "EntryPoint", "ApplicationType")
_TOP_KEYS = frozenset({*_REQUIRED, "CmdArgs", "Version", "Capabilities"})


@dataclass(frozen=True)
class ManifestIssue:
    """One problem in a manifest: where (a JSON path such as ``$.Capabilities.Gpio[0]``) and what."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class ManifestError(ImageError):
    """An app manifest is invalid; ``errors`` lists every problem found, in document order."""

    def __init__(self, errors: list[ManifestIssue]) -> None:
        self.errors = list(errors)
        count = len(self.errors)
        summary = "; ".join(str(issue) for issue in self.errors[:5])
        more = f" (and {count - 5} more)" if count > 5 else ""
        super().__init__(f"app manifest has {count} error{'s' if count != 1 else ''}: {summary}{more}")


Peripheral = str | int


@dataclass(frozen=True)
class Capabilities:
    """The capabilities an app asks for; anything absent is denied."""

    allowed_connections: tuple[str, ...] = ()
    allowed_tcp_server_ports: tuple[int, ...] = ()
    allowed_udp_server_ports: tuple[int, ...] = ()
    allowed_application_connections: tuple[str, ...] = ()
    gpio: tuple[Peripheral, ...] = ()
    uart: tuple[Peripheral, ...] = ()
    i2c_master: tuple[Peripheral, ...] = ()
    spi_master: tuple[Peripheral, ...] = ()
    adc: tuple[Peripheral, ...] = ()
    pwm: tuple[Peripheral, ...] = ()
    mutable_storage_kb: int | None = None
    device_authentication: str | None = None
    cert_store: bool = False
    power_controls: tuple[str, ...] = ()
    system_time: bool = False
    software_update_deferral: bool = False
    system_event_notifications: bool = False


@dataclass(frozen=True)
class AppManifest:
    """A valid app manifest. ``component_id`` is lowercase canonical (as image headers carry it)."""

    name: str
    component_id: str
    entry_point: str
    cmd_args: tuple[str, ...] = ()
    application_type: str = "Default"
    version: str | None = None
    capabilities: Capabilities = field(default_factory=Capabilities)
    schema_version: int = SCHEMA_VERSION
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def to_json(self, *, version: str | None = None) -> bytes:
        """Return the manifest as canonical JSON (sorted keys), optionally with ``Version`` replaced."""
        value = dict(self.raw)
        value["ComponentId"] = self.component_id
        if version is not None:
            value["Version"] = version
        return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=True).encode() + b"\n"


class _Object(dict[str, Any]):
    """A JSON object that remembers the keys it saw more than once."""

    duplicates: list[str]


def _pairs(pairs: list[tuple[str, Any]]) -> _Object:
    obj = _Object()
    obj.duplicates = []
    for key, value in pairs:
        if key in obj and key not in obj.duplicates:
            obj.duplicates.append(key)
        obj[key] = value
    return obj


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=True) if not isinstance(value, _Object) else "an object"
    return text if len(text) <= 40 else text[:37] + "..."


def _key_path(path: str, key: str) -> str:
    return f"{path}.{key}" if re.fullmatch(r"[A-Za-z_$][A-Za-z0-9_$]*", key) else f"{path}[{json.dumps(key)}]"


class _Checker:
    """Walks a parsed manifest, collecting every issue."""

    def __init__(self) -> None:
        self.issues: list[ManifestIssue] = []

    def bad(self, path: str, message: str) -> None:
        self.issues.append(ManifestIssue(path, message))

    def obj(self, value: Any, path: str, allowed: frozenset[str] | tuple[str, ...]) -> dict[str, Any] | None:
        if not isinstance(value, _Object):
            self.bad(path, f"{_show(value)} is not an object")
            return None
        for key in value.duplicates:
            self.bad(_key_path(path, key), "duplicate key")
        for key in value:
            if key not in allowed:
                self.bad(_key_path(path, key), "unknown key")
        return value

    def string(self, value: Any, path: str, *, max_length: int, pattern: str, what: str) -> str | None:
        if not isinstance(value, str):
            self.bad(path, f"{_show(value)} is not a string")
        elif not value or len(value) > max_length:
            self.bad(path, f"{what} must be 1..{max_length} characters long")
        elif not re.fullmatch(pattern, value):
            self.bad(path, f"{_show(value)} is not {what}")
        else:
            return value
        return None

    def integer(self, value: Any, path: str, low: int, high: int, what: str) -> int | None:
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            self.bad(path, f"{_show(value)} is not {what} ({low}..{high})")
            return None
        return value

    def boolean(self, value: Any, path: str) -> bool:
        if not isinstance(value, bool):
            self.bad(path, f"{_show(value)} is not true or false")
            return False
        return value

    def items(
        self, value: Any, path: str, max_items: int, check: Callable[[Any, str], Any], *, unique: bool = True
    ) -> tuple[Any, ...]:
        if not isinstance(value, list):
            self.bad(path, f"{_show(value)} is not a list")
            return ()
        if len(value) > max_items:
            self.bad(path, f"has {len(value)} items; at most {max_items} are allowed")
        out: list[Any] = []
        seen: set[tuple[type, Any]] = set()
        for index, item in enumerate(value[: max_items + 1]):
            item_path = f"{path}[{index}]"
            checked = check(item, item_path)
            if checked is None:
                continue
            if unique and (type(checked), checked) in seen:
                self.bad(item_path, f"{_show(item)} is listed twice")
                continue
            seen.add((type(checked), checked))
            out.append(checked)
        return tuple(out)

    # -- value kinds -------------------------------------------------------

    def uuid(self, value: Any, path: str) -> str | None:
        text = self.string(value, path, max_length=36, pattern=schema.COMPONENT_ID_PATTERN, what="a UUID")
        return text.lower() if text else None

    def port(self, value: Any, path: str) -> int | None:
        return self.integer(value, path, 1, 65535, "a port")

    def host(self, value: Any, path: str) -> str | None:
        text = self.string(
            value,
            path,
            max_length=schema.MAX_HOSTNAME_LENGTH,
            pattern=schema.HOSTNAME_PATTERN,
            what="a host name or IPv4 address",
        )
        if text and re.fullmatch(schema.NUMERIC_NAME_PATTERN, text) and not re.fullmatch(schema.IPV4_PATTERN, text):
            self.bad(path, f"{_show(text)} is not an IPv4 address")
            return None
        return text

    def peripheral(self, value: Any, path: str) -> Peripheral | None:
        if isinstance(value, int) and not isinstance(value, bool):
            return self.integer(value, path, 0, schema.MAX_PERIPHERAL_INDEX, "a peripheral number")
        if isinstance(value, str):
            return self.string(
                value,
                path,
                max_length=schema.MAX_PERIPHERAL_NAME_LENGTH,
                pattern=schema.PERIPHERAL_NAME_PATTERN,
                what="a peripheral name",
            )
        self.bad(path, f"{_show(value)} is not a peripheral name or number")
        return None

    def power_control(self, value: Any, path: str) -> str | None:
        if value not in schema.POWER_CONTROLS or not isinstance(value, str):
            self.bad(path, f"{_show(value)} is not one of {', '.join(schema.POWER_CONTROLS)}")
            return None
        return str(value)

    def cmd_arg(self, value: Any, path: str) -> str | None:
        if not isinstance(value, str) or len(value) > schema.MAX_CMD_ARG_LENGTH or "\x00" in value:
            self.bad(
                path, f"{_show(value)} is not a string of at most {schema.MAX_CMD_ARG_LENGTH} characters without NUL"
            )
            return None
        return value

    # -- sections ----------------------------------------------------------

    def capabilities(self, value: Any, path: str) -> Capabilities:
        caps = self.obj(value, path, schema.CAPABILITY_NAMES)
        if caps is None:
            return Capabilities()
        fields: dict[str, Any] = {}
        lists: dict[str, tuple[str, int, Callable[[Any, str], Any]]] = {
            "AllowedConnections": ("allowed_connections", schema.MAX_CONNECTIONS, self.host),
            "AllowedTcpServerPorts": ("allowed_tcp_server_ports", schema.MAX_LIST_ITEMS, self.port),
            "AllowedUdpServerPorts": ("allowed_udp_server_ports", schema.MAX_LIST_ITEMS, self.port),
            "AllowedApplicationConnections": ("allowed_application_connections", schema.MAX_LIST_ITEMS, self.uuid),
            "Gpio": ("gpio", schema.MAX_LIST_ITEMS, self.peripheral),
            "Uart": ("uart", schema.MAX_LIST_ITEMS, self.peripheral),
            "I2cMaster": ("i2c_master", schema.MAX_LIST_ITEMS, self.peripheral),
            "SpiMaster": ("spi_master", schema.MAX_LIST_ITEMS, self.peripheral),
            "Adc": ("adc", schema.MAX_LIST_ITEMS, self.peripheral),
            "Pwm": ("pwm", schema.MAX_LIST_ITEMS, self.peripheral),
            "PowerControls": ("power_controls", len(schema.POWER_CONTROLS), self.power_control),
        }
        flags = {
            "CertStore": "cert_store",
            "SystemTime": "system_time",
            "SoftwareUpdateDeferral": "software_update_deferral",
            "SystemEventNotifications": "system_event_notifications",
        }
        for key, item in caps.items():
            sub = _key_path(path, key)
            if key in lists:
                attr, bound, check = lists[key]
                fields[attr] = self.items(item, sub, bound, check)
            elif key in flags:
                fields[flags[key]] = self.boolean(item, sub)
            elif key == "DeviceAuthentication":
                fields["device_authentication"] = self.uuid(item, sub)
            elif key == "MutableStorage":
                storage = self.obj(item, sub, ("SizeKB",))
                if storage is not None and "SizeKB" not in storage:
                    self.bad(sub, "SizeKB is required")
                elif storage is not None:
                    fields["mutable_storage_kb"] = self.integer(
                        storage["SizeKB"], f"{sub}.SizeKB", 1, schema.MAX_MUTABLE_STORAGE_KB, "a size in KiB"
                    )
        return Capabilities(**fields)

    def realtime_rules(self, value: Any, path: str) -> None:
        """Azure Sphere's rules for a real-time app: only peripherals (by raw value) and partner apps."""
        if not isinstance(value, _Object):
            return
        for key, item in value.items():
            sub = _key_path(path, key)
            if key in schema.CAPABILITY_NAMES and key not in schema.REALTIME_CAPABILITIES:
                self.bad(
                    sub,
                    f"a {schema.REALTIME_TYPE} app cannot declare {key} "
                    "(it gets only its peripherals and AllowedApplicationConnections)",
                )
            elif key in schema.PERIPHERAL_CAPABILITIES and isinstance(item, list):
                for index, entry in enumerate(item[: schema.MAX_LIST_ITEMS]):
                    if isinstance(entry, str) and entry.startswith("$"):
                        self.bad(
                            f"{sub}[{index}]",
                            f"a {schema.REALTIME_TYPE} app names peripherals by raw value, "
                            f"not a hardware-definition name ({_show(entry)})",
                        )

    def manifest(self, value: Any) -> AppManifest | None:
        top = self.obj(value, "$", _TOP_KEYS)
        if top is None:
            return None
        for key in _REQUIRED:
            if key not in top:
                self.bad("$", f"{key} is required")
        if "SchemaVersion" in top and (
            top["SchemaVersion"] != SCHEMA_VERSION or isinstance(top["SchemaVersion"], bool | float)
        ):
            self.bad("$.SchemaVersion", f"{_show(top['SchemaVersion'])} is not a supported schema version (1)")
        name = None
        if "Name" in top:
            name = self.string(
                top["Name"],
                "$.Name",
                max_length=schema.MAX_NAME_LENGTH,
                pattern=schema.NAME_PATTERN,
                what="a valid app name",
            )
        component_id = self.uuid(top["ComponentId"], "$.ComponentId") if "ComponentId" in top else None
        entry_point = None
        if "EntryPoint" in top:
            entry_point = self.string(
                top["EntryPoint"],
                "$.EntryPoint",
                max_length=schema.MAX_ENTRY_POINT_LENGTH,
                pattern=schema.ENTRY_POINT_PATTERN,
                what="a relative path inside the app (no '..', no leading '/')",
            )
        cmd_args: tuple[str, ...] = ()
        if "CmdArgs" in top:
            cmd_args = self.items(top["CmdArgs"], "$.CmdArgs", schema.MAX_CMD_ARGS, self.cmd_arg, unique=False)
        application_type = "Default"
        if "ApplicationType" in top and top["ApplicationType"] not in schema.APPLICATION_TYPES:
            self.bad("$.ApplicationType", f"{_show(top['ApplicationType'])} is not one of {schema.APPLICATION_TYPES}")
        elif "ApplicationType" in top:
            application_type = str(top["ApplicationType"])
        version = None
        if "Version" in top:
            version = self.string(
                top["Version"],
                "$.Version",
                max_length=schema.MAX_VERSION_LENGTH,
                pattern=schema.VERSION_PATTERN,
                what="a semantic version (e.g. 1.2.3)",
            )
        capabilities = self.capabilities(top.get("Capabilities", _pairs([])), "$.Capabilities")
        if application_type == schema.REALTIME_TYPE:
            self.realtime_rules(top.get("Capabilities"), "$.Capabilities")
        if self.issues or name is None or component_id is None or entry_point is None:
            return None
        return AppManifest(
            name=name,
            component_id=component_id,
            entry_point=entry_point,
            cmd_args=cmd_args,
            application_type=application_type,
            version=version,
            capabilities=capabilities,
            raw=dict(top),
        )


def validate_manifest(data: bytes, *, max_bytes: int = MAX_MANIFEST_BYTES) -> AppManifest:
    """Parse and validate an ``app_manifest.json``.

    Args:
        data: the file's bytes (UTF-8 JSON).
        max_bytes: the size bound (default :data:`MAX_MANIFEST_BYTES`).

    Raises:
        ManifestError: with every problem and its JSON path; for a file that is
            oversized, not UTF-8 or not JSON, the one problem at ``$``.
    """
    if len(data) > max_bytes:
        raise ManifestError([ManifestIssue("$", f"manifest is {len(data)} bytes; the limit is {max_bytes}")])
    try:
        text = data.decode("utf-8")
        value = json.loads(text, object_pairs_hook=_pairs, parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        raise ManifestError([ManifestIssue("$", "manifest is not UTF-8 text")]) from exc
    except RecursionError as exc:
        raise ManifestError([ManifestIssue("$", "manifest is nested too deeply")]) from exc
    except ValueError as exc:
        raise ManifestError([ManifestIssue("$", f"manifest is not valid JSON: {str(exc)[:120]}")]) from exc
    checker = _Checker()
    manifest = checker.manifest(value)
    if checker.issues or manifest is None:
        raise ManifestError(checker.issues)
    return manifest
