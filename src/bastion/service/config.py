"""Security Service settings, read from the environment at the entry point.

Example:
    >>> import os
    >>> settings = Settings.from_env({"BASTION_HOME": "/tmp/bastion-doc",
    ...     "BASTION_MASTER_KEY": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="})
    >>> settings.database_url
    'sqlite:////tmp/bastion-doc/service.db'

Environment:
    ``BASTION_HOME``: data directory (default ``./.bastion``).
    ``BASTION_DATABASE_URL``: SQLAlchemy URL (default SQLite at ``<home>/service.db``).
    ``BASTION_MASTER_KEY``: base64 of the 32-byte master key; if unset the key is
    read from ``<home>/master.key``, which is created (0600, atomically) on first use.
    ``BASTION_DEVICE_RATE_LIMIT``: ``RATE/BURST`` requests per second per client on the
    unauthenticated device endpoints (default ``50/200``), or ``off``.
    ``BASTION_RATE_LIMIT_EXEMPT``: comma-separated client addresses the limit skips
    (default ``127.0.0.1,::1``: a local reverse proxy limits per client itself).
    ``BASTION_DOWNLOAD_CREDENTIAL_TTL``: seconds a download credential lives, 1 to 60
    (default 60, docs/adr/0013). Shorter only: tests set it so as not to wait a minute.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bastion.crypto.aead import MASTER_KEY_SIZE
from bastion.service.errorreports.limits import ErrorReportSettings
from bastion.service.errors import ConfigError

__all__ = ["HttpLimits", "Limits", "Settings", "load_or_create_master_key", "write_private_file"]

MASTER_KEY_FILE = "master.key"
DATABASE_FILE = "service.db"
#: Lifetime of a download credential, in seconds: the default and the most the setting may say
#: (``bastion.service.eligibility.CREDENTIAL_TTL``; a test pins that the two agree).
DOWNLOAD_CREDENTIAL_TTL_S = 60


@dataclass(frozen=True)
class Limits:
    """Every size and count bound the operator API applies, by name."""

    #: Any request body not otherwise bounded (JSON bodies, tokens, claims).
    max_body_bytes: int = 64 * 1024
    #: An uploaded OS image package.
    max_image_upload_bytes: int = 256 * 1024 * 1024
    #: Read size while streaming an upload.
    upload_chunk_bytes: int = 1024 * 1024
    #: Uploads up to this size stay in memory; larger ones spill to a temp file.
    upload_spool_bytes: int = 8 * 1024 * 1024
    #: Default and maximum rows of a list (devices, OS images).
    list_page_size: int = 500
    list_max_page_size: int = 5000
    #: Audit events returned per request (newest first).
    audit_page_size: int = 200
    audit_max_page_size: int = 2000
    #: Attestation records shown with a device.
    recent_attestations: int = 20
    #: Length bound on an ``Authorization`` header value.
    max_token_chars: int = 256

    def page(self, asked: int | None) -> int:
        """Rows for a list request: ``asked`` or the default, never above the maximum."""
        return min(asked or self.list_page_size, self.list_max_page_size)

    def audit_page(self, asked: int | None) -> int:
        """Rows for an audit-log request: ``asked`` or the default, never above the maximum."""
        return min(asked or self.audit_page_size, self.audit_max_page_size)


@dataclass(frozen=True)
class HttpLimits:
    """Bounds on the HTTP layer itself: header sections and per-client request rates.

    The header bounds are applied twice: by the HTTP server while it reads the
    bytes (``bastion service run``), and by the app on the parsed headers (any
    ASGI server).
    """

    #: The whole request header section (request line and every header), in bytes.
    max_header_bytes: int = 64 * 1024
    #: Headers in one request.
    max_header_count: int = 100
    #: Sustained requests per second one client may send to the device endpoints.
    device_rate_per_s: float = 50.0
    #: Requests one client may send at once before the rate applies.
    device_rate_burst: int = 200
    #: Path prefixes of the unauthenticated device endpoints the rate limit covers.
    rate_limited_prefixes: tuple[str, ...] = ("/api/v1/attestation", "/api/v1/device/", "/tuf/")
    #: Client addresses the rate limit skips.
    rate_limit_exempt: tuple[str, ...] = ("127.0.0.1", "::1")
    #: Clients tracked at once; the least recently seen is forgotten beyond this.
    rate_limit_max_clients: int = 65536

    @property
    def rate_limited(self) -> bool:
        """Whether the device-endpoint rate limit is on."""
        return self.device_rate_per_s > 0 and bool(self.rate_limited_prefixes)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> HttpLimits:
        """Read ``BASTION_DEVICE_RATE_LIMIT`` and ``BASTION_RATE_LIMIT_EXEMPT`` (module docstring).

        Raises:
            ConfigError: the rate limit is not ``RATE/BURST`` or ``off``.
        """
        defaults = cls()
        rate, burst = defaults.device_rate_per_s, defaults.device_rate_burst
        spec = env.get("BASTION_DEVICE_RATE_LIMIT", "").strip()
        if spec.lower() == "off":
            rate = 0.0
        elif spec:
            rate_text, _, burst_text = spec.partition("/")
            try:
                rate, burst = float(rate_text), int(burst_text or rate_text)
            except ValueError:
                rate = -1.0
            if not (0 < rate <= 1e6 and 0 < burst <= 10**7):
                raise ConfigError("BASTION_DEVICE_RATE_LIMIT must be RATE/BURST (e.g. 50/200) or off")
        exempt = defaults.rate_limit_exempt
        if "BASTION_RATE_LIMIT_EXEMPT" in env:
            exempt = tuple(a.strip() for a in env["BASTION_RATE_LIMIT_EXEMPT"].split(",") if a.strip())
        return cls(device_rate_per_s=rate, device_rate_burst=burst, rate_limit_exempt=exempt)


@dataclass(frozen=True)
class Settings:
    """Resolved service settings. Build with :meth:`from_env` at an entry point."""

    home: Path
    database_url: str
    master_key: bytes = field(repr=False)
    limits: Limits = field(default_factory=Limits)
    http: HttpLimits = field(default_factory=HttpLimits)
    #: Error-report bounds and retention (BASTION_ERROR_*_RETENTION_DAYS).
    error_reports: ErrorReportSettings = field(default_factory=ErrorReportSettings)
    #: Seconds a download credential lives (1 to :data:`DOWNLOAD_CREDENTIAL_TTL_S`).
    download_credential_ttl_s: int = DOWNLOAD_CREDENTIAL_TTL_S

    def __post_init__(self) -> None:
        if len(self.master_key) != MASTER_KEY_SIZE:
            raise ConfigError(f"the master key must be {MASTER_KEY_SIZE} bytes")
        if not 1 <= self.download_credential_ttl_s <= DOWNLOAD_CREDENTIAL_TTL_S:
            raise ConfigError(f"the download credential lifetime must be 1 to {DOWNLOAD_CREDENTIAL_TTL_S} seconds")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read settings from ``env`` (default ``os.environ``).

        Creates the data directory (0700) and, when no key is supplied in the
        environment, the master key file.

        Raises:
            ConfigError: the master key is malformed or its file is readable by others.
        """
        env = os.environ if env is None else env
        home = Path(env.get("BASTION_HOME") or ".bastion").absolute()
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        url = env.get("BASTION_DATABASE_URL") or f"sqlite:///{home / DATABASE_FILE}"
        encoded = env.get("BASTION_MASTER_KEY")
        if encoded:
            try:
                key = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ConfigError("BASTION_MASTER_KEY is not valid base64") from exc
            if len(key) != MASTER_KEY_SIZE:
                raise ConfigError(f"BASTION_MASTER_KEY must decode to {MASTER_KEY_SIZE} bytes")
        else:
            key = load_or_create_master_key(home / MASTER_KEY_FILE)
        return cls(
            home=home,
            database_url=url,
            master_key=key,
            http=HttpLimits.from_env(env),
            error_reports=ErrorReportSettings.from_env(env),
            download_credential_ttl_s=_credential_ttl_from_env(env),
        )


def _credential_ttl_from_env(env: Mapping[str, str]) -> int:
    spec = env.get("BASTION_DOWNLOAD_CREDENTIAL_TTL", "").strip()
    if not spec:
        return DOWNLOAD_CREDENTIAL_TTL_S
    if not spec.isdigit() or not 1 <= int(spec) <= DOWNLOAD_CREDENTIAL_TTL_S:
        raise ConfigError(f"BASTION_DOWNLOAD_CREDENTIAL_TTL must be whole seconds, 1 to {DOWNLOAD_CREDENTIAL_TTL_S}")
    return int(spec)


def write_private_file(path: Path, data: bytes, *, exclusive: bool = False) -> None:
    """Write ``data`` to ``path`` atomically with mode 0600.

    Args:
        path: destination.
        data: content.
        exclusive: fail with ``FileExistsError`` instead of replacing an existing file.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if exclusive:
            os.link(tmp, path)  # atomic, and refuses to replace a concurrent writer's file
        else:
            tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_or_create_master_key(path: Path) -> bytes:
    """Return the master key stored at ``path``, creating it (0600) if absent.

    Raises:
        ConfigError: the file has the wrong size or is readable by group/others.
    """
    if not path.exists():
        # If another process creates it first, FileExistsError: use theirs.
        with contextlib.suppress(FileExistsError):
            write_private_file(path, secrets.token_bytes(MASTER_KEY_SIZE), exclusive=True)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ConfigError(f"{path} is accessible by group or others (mode {mode:o}); run: chmod 600 {path}")
    with path.open("rb") as fh:
        key = fh.read(MASTER_KEY_SIZE + 1)  # bounded: a longer file is rejected below
    if len(key) != MASTER_KEY_SIZE:
        raise ConfigError(f"{path} must hold exactly {MASTER_KEY_SIZE} bytes")
    return key
