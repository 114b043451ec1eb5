"""Device configuration, and the named bounds and intervals of the OS runtime.

The device config is a small JSON document, kept in the chip's ``config`` flash
partition (``DEV/flash/config.bin``) and written by ``bastion device run --service``::

    {"service_url": "http://127.0.0.1:8443", "ca_file": null,
     "retry_initial_s": 5, "retry_max_s": 300,
     "app_signing_keys": ["-----BEGIN PUBLIC KEY-----\n..."],
     "update_interval_s": 72000, "app_updates": true,
     "insecure_no_sandbox": false}

Only ``service_url`` is required. ``ca_file`` names a PEM bundle used to verify
the service over HTTPS. ``app_signing_keys`` are the tenant app-signing keys
pinned by ``bastion device provision``: the only keys whose apps the device
installs. ``update_interval_s`` is the time between update checks (20 h by
default); ``app_updates: false`` makes the device skip app targets.
``insecure_no_sandbox: true`` (``bastion device provision --insecure-no-sandbox``,
or ``device run --insecure-no-sandbox``) runs the OS and its apps without their
sandboxes: the only way round a host without bubblewrap. It is written only by
the host CLI (the OS cannot write this partition), printed at every boot, shown
by ``device info`` and claimed in the attestation evidence.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bastion.crypto.errors import CryptoError
from bastion.crypto.keys import PublicKey, load_public_key_pem
from bastion.os.errors import ConfigError

__all__ = [
    "DEFAULT_UPDATE_INTERVAL_S",
    "MAX_APP_SIGNING_KEYS",
    "MAX_CONFIG_BYTES",
    "AttestationPolicy",
    "DeviceConfig",
    "app_public_keys",
    "config_from_json",
    "encode_config",
    "load_config",
    "parse_config",
]

#: Bound on the device config file.
MAX_CONFIG_BYTES = 16 * 1024
#: Bound on the service URL.
MAX_URL_CHARS = 2048
#: Bound on the pinned app-signing keys.
MAX_APP_SIGNING_KEYS = 8
#: Bound on one PEM public key.
MAX_KEY_PEM_CHARS = 1024
#: Time between update checks: 20 h.
DEFAULT_UPDATE_INTERVAL_S = 72000.0
#: Shortest accepted update interval (tests and demos use short ones).
MIN_UPDATE_INTERVAL_S = 1.0


@dataclass(frozen=True)
class AttestationPolicy:
    """When to attest, how to retry, and the bounds on what the service may send.

    Attributes:
        renew_fraction: renew once this fraction of the certificate's lifetime
            (from its own validity window) has passed.
        retry_initial_s: first back-off after a failed attempt.
        retry_multiplier: back-off growth per consecutive failure.
        retry_max_s: ceiling of the back-off.
        http_timeout_s: connect/read/write timeout of one HTTP request.
        max_response_bytes: bound on one HTTP response body.
        max_ca_chain: bound on the number of CA certificates returned.
        clock_skew_s: how far ahead of ours the service's clock may be when it
            dates a new certificate.
    """

    renew_fraction: float = 0.8
    retry_initial_s: float = 5.0
    retry_multiplier: float = 2.0
    retry_max_s: float = 300.0
    http_timeout_s: float = 10.0
    max_response_bytes: int = 64 * 1024
    max_ca_chain: int = 4
    clock_skew_s: float = 300.0

    def backoff(self, failures: int) -> float:
        """Seconds to wait after ``failures`` consecutive failures (``failures >= 1``)."""
        exponent = max(failures - 1, 0)
        delay = self.retry_initial_s * self.retry_multiplier ** min(exponent, 64)
        return float(min(delay, self.retry_max_s))


@dataclass(frozen=True)
class DeviceConfig:
    """What the OS needs to know about its service.

    Attributes:
        service_url: base URL of the Security Service (``http`` or ``https``).
        ca_file: PEM file of CAs that verify the service's TLS certificate.
        policy: attestation timing and bounds.
        app_signing_keys: pinned tenant app-signing keys, PEM (``bastion device provision``).
        update_interval_s: time between update checks.
        app_updates: install app targets (False: skip them whatever the group offers).
        insecure_no_sandbox: run the OS and its apps without sandboxes (loud, attested).
    """

    service_url: str
    ca_file: str | None = None
    policy: AttestationPolicy = field(default_factory=AttestationPolicy)
    app_signing_keys: tuple[str, ...] = ()
    update_interval_s: float = DEFAULT_UPDATE_INTERVAL_S
    app_updates: bool = True
    insecure_no_sandbox: bool = False


def app_public_keys(config: DeviceConfig) -> tuple[PublicKey, ...]:
    """The pinned app-signing keys as public keys.

    Raises:
        ConfigError: a key is not a P-256 public key in PEM.
    """
    return tuple(_load_app_key(pem) for pem in config.app_signing_keys)


def _load_app_key(pem: object) -> PublicKey:
    if not isinstance(pem, str) or len(pem) > MAX_KEY_PEM_CHARS:
        raise ConfigError("app_signing_keys entries must be PEM strings")
    try:
        return load_public_key_pem(pem.encode())
    except CryptoError as exc:
        raise ConfigError("an app signing key is not a P-256 public key") from exc


def _update_fields(value: dict[str, Any]) -> dict[str, Any]:
    keys = value.get("app_signing_keys", [])
    if not isinstance(keys, list) or len(keys) > MAX_APP_SIGNING_KEYS:
        raise ConfigError(f"app_signing_keys must be a list of at most {MAX_APP_SIGNING_KEYS} PEM keys")
    for pem in keys:
        _load_app_key(pem)
    interval = value.get("update_interval_s", DEFAULT_UPDATE_INTERVAL_S)
    if isinstance(interval, bool) or not isinstance(interval, int | float) or interval < MIN_UPDATE_INTERVAL_S:
        raise ConfigError(f"update_interval_s must be a number >= {MIN_UPDATE_INTERVAL_S}")
    app_updates = value.get("app_updates", True)
    if not isinstance(app_updates, bool):
        raise ConfigError("app_updates must be true or false")
    insecure = value.get("insecure_no_sandbox", False)
    if not isinstance(insecure, bool):
        raise ConfigError("insecure_no_sandbox must be true or false")
    return {
        "app_signing_keys": tuple(keys),
        "update_interval_s": float(interval),
        "app_updates": app_updates,
        "insecure_no_sandbox": insecure,
    }


def _check_url(url: object) -> str:
    if not isinstance(url, str) or not url or len(url) > MAX_URL_CHARS:
        raise ConfigError("service_url must be a non-empty URL")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError("service_url must be an http:// or https:// URL")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ConfigError("service_url must not carry credentials, a query or a fragment")
    return url.rstrip("/")


def config_from_json(value: dict[str, Any]) -> DeviceConfig:
    """Build a config from its JSON object.

    Raises:
        ConfigError: a field is missing or has the wrong type.
    """
    ca_file = value.get("ca_file")
    if ca_file is not None and not isinstance(ca_file, str):
        raise ConfigError("ca_file must be a path or null")
    overrides: dict[str, Any] = {}
    for item in fields(AttestationPolicy):
        if item.name in value:
            raw = value[item.name]
            if isinstance(raw, bool) or not isinstance(raw, int | float) or raw <= 0:
                raise ConfigError(f"{item.name} must be a positive number")
            overrides[item.name] = type(getattr(AttestationPolicy(), item.name))(raw)
    return DeviceConfig(
        service_url=_check_url(value.get("service_url")),
        ca_file=ca_file,
        policy=AttestationPolicy(**overrides),
        **_update_fields(value),
    )


def parse_config(data: bytes) -> DeviceConfig:
    """Parse the device config from its JSON bytes.

    Raises:
        ConfigError: too large, not JSON, or invalid.
    """
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"device config is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        value = json.loads(data)
    except ValueError as exc:
        raise ConfigError("device config is not valid JSON") from exc
    if not isinstance(value, dict):
        raise ConfigError("device config must be a JSON object")
    return config_from_json(value)


def load_config(path: Path) -> DeviceConfig:
    """Read the device config from a file (the config flash partition).

    Raises:
        ConfigError: the file is missing, too large, not JSON, or invalid.
    """
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError as exc:
        raise ConfigError(f"no device config at {path}") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read the device config at {path}") from exc
    return parse_config(data)


def encode_config(config: DeviceConfig) -> bytes:
    """Encode the device config as JSON (policy values only where they differ from the defaults)."""
    value: dict[str, Any] = {"service_url": _check_url(config.service_url), "ca_file": config.ca_file}
    defaults = asdict(AttestationPolicy())
    value.update({k: v for k, v in asdict(config.policy).items() if defaults[k] != v})
    if config.app_signing_keys:
        value["app_signing_keys"] = list(config.app_signing_keys)
    if config.update_interval_s != DEFAULT_UPDATE_INTERVAL_S:
        value["update_interval_s"] = config.update_interval_s
    if not config.app_updates:
        value["app_updates"] = False
    if config.insecure_no_sandbox:
        value["insecure_no_sandbox"] = True
    return json.dumps(value, indent=2, sort_keys=True).encode() + b"\n"
