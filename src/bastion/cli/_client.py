"""The operator's HTTP client for the Security Service, and the login config file.

The config (service URL, token, optional CA bundle) lives in
``$BASTION_CONFIG``, else ``$XDG_CONFIG_HOME/bastion/config.json``, else
``~/.config/bastion/config.json``; it is written atomically with mode 0600.
HTTP failures become :class:`~bastion.cli.output.CliError` carrying the
service's own ``detail`` and a hint; the token never appears in output.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bastion.cli.output import CliError
from bastion.service.config import write_private_file

__all__ = ["OperatorConfig", "ServiceClient", "config_path", "load_config", "save_config"]

#: Seconds to wait for the service (connect and each read).
HTTP_TIMEOUT_S = 30.0
#: Bound on the config file we read.
MAX_CONFIG_BYTES = 64 * 1024

_HINTS = {
    401: "your token was refused; run `bastion login --url URL --token TOKEN` with a valid token",
    403: "ask a tenant admin for a token with the needed role (`bastion token create --role ...`)",
    404: "check the ID; devices of other tenants are not visible",
    409: "nothing to do: it already exists",
    413: "the upload is larger than the service accepts",
}


def config_path() -> Path:
    """Where the operator config lives (see the module docstring)."""
    explicit = os.environ.get("BASTION_CONFIG")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "bastion" / "config.json"


@dataclass(frozen=True)
class OperatorConfig:
    """The saved login: service URL, token, and an optional CA bundle for HTTPS."""

    url: str
    token: str = field(repr=False)
    ca_file: str | None = None


def save_config(config: OperatorConfig) -> Path:
    """Write the config atomically with mode 0600; return its path."""
    path = config_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    data = {"url": config.url, "token": config.token, "ca_file": config.ca_file}
    write_private_file(path, json.dumps(data, indent=2).encode() + b"\n")
    return path


def load_config() -> OperatorConfig:
    """Read the saved login.

    Raises:
        CliError: no login yet, or the file is unreadable.
    """
    path = config_path()
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise CliError("you are not logged in", hint="run `bastion login --url URL --token TOKEN`") from None
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        if len(raw) > MAX_CONFIG_BYTES:
            raise ValueError("too large")
        data = json.loads(raw)
        return OperatorConfig(url=str(data["url"]), token=str(data["token"]), ca_file=data.get("ca_file"))
    except (ValueError, KeyError, TypeError) as exc:
        raise CliError(f"{path} is not a valid Bastion config", hint="run `bastion login` again") from exc


class ServiceClient:
    """Calls the operator API; every failure is a CliError with the service's detail."""

    def __init__(self, config: OperatorConfig, *, timeout: float = HTTP_TIMEOUT_S) -> None:
        self.config = config
        verify: bool | str = config.ca_file if config.ca_file else True
        self._http = httpx.Client(
            base_url=config.url.rstrip("/") + "/api/v1",
            headers={"Authorization": f"Bearer {config.token}"},
            timeout=timeout,
            verify=verify,
        )

    @classmethod
    def from_saved_login(cls) -> ServiceClient:
        """A client for the logged-in service."""
        return cls(load_config())

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Mapping[str, Any] | None = None,
        content: Iterable[bytes] | bytes | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> httpx.Response:
        """Send a request; return a 2xx response or raise CliError."""
        try:
            response = self._http.request(method, path, json=json_body, content=content, headers=headers, params=params)
        except httpx.TimeoutException as exc:
            raise CliError(f"the service at {self.config.url} did not answer in time") from exc
        except httpx.TransportError as exc:
            raise CliError(
                f"cannot reach the service at {self.config.url}",
                hint="is `bastion service run` running, and is the URL right? (`bastion login` sets it)",
            ) from exc
        if response.is_success:
            return response
        raise self._error(response)

    def get_json(self, path: str, **params: Any) -> Any:
        """GET a JSON document."""
        return self.request("GET", path, params=params or None).json()

    def post_json(self, path: str, body: Mapping[str, Any] | None = None) -> Any:
        """POST a JSON body (or none) and return the JSON answer."""
        return self.request("POST", path, json_body=body).json()

    @staticmethod
    def _error(response: httpx.Response) -> CliError:
        try:
            body = response.json()
            code, detail = str(body["error"]), str(body["detail"])
        except (ValueError, KeyError, TypeError):
            code, detail = "http_error", f"the service answered HTTP {response.status_code}"
        return CliError(f"{detail} ({code}, HTTP {response.status_code})", hint=_HINTS.get(response.status_code))
