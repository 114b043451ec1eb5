"""The operator's HTTP client for the Security Service, and the login config file.

The config lives in ``$BASTION_CONFIG``, else
``$XDG_CONFIG_HOME/bastion/config.json``, else ``~/.config/bastion/config.json``;
it is written atomically with mode 0600. It holds named profiles (service URL,
token, optional CA bundle), one per service or tenant, and the current one; a
command uses ``--profile NAME``, else ``$BASTION_PROFILE``, else the current
profile. A file from before profiles (one flat login) reads as profile ``default``.
HTTP failures become :class:`~bastion.cli.output.CliError` carrying the
service's own ``detail`` and a hint; the token never appears in output.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import httpx

from bastion.cli.output import CliError
from bastion.service.config import write_private_file

__all__ = [
    "DEFAULT_PROFILE",
    "SERVICE_MAX_ROWS",
    "OperatorConfig",
    "Page",
    "ProfileStore",
    "ServiceClient",
    "config_path",
    "load_config",
    "load_profiles",
    "parse_profile_name",
    "save_config",
    "save_profiles",
    "select_profile",
]

#: Seconds to wait for the service (connect and each read).
HTTP_TIMEOUT_S = 30.0
#: Bound on the config file we read.
MAX_CONFIG_BYTES = 64 * 1024
#: Rows asked for per request when a list command pages through a list.
PAGE_ROWS = 500
#: Rows a list command fetches at most when no ``--limit`` is given (then it says it stopped).
MAX_LIST_ROWS = 100_000
#: The most rows the service returns for one list request (``Limits.list_max_page_size``).
SERVICE_MAX_ROWS = 5000

_HINTS = {
    401: "your token was refused; run `bastion login --url URL` and paste a valid token at the prompt",
    403: "ask a tenant admin for a token with the needed role (`bastion token create --role ...`)",
    404: "check the ID; devices of other tenants are not visible",
    409: "nothing to do: it already exists",
    413: "the upload is larger than the service accepts",
}
#: Error codes whose detail already says what to do (the status's generic hint would mislead).
_NO_HINT_CODES = frozenset(
    {"group_in_use", "product_in_use", "default_group", "product_exists", "group_exists", "changed_while_deleting"}
)


@dataclass(frozen=True)
class Page:
    """Rows of a list, from ``offset``; ``more`` says whether the list goes on past them."""

    rows: list[Any]
    offset: int
    more: bool


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


#: Name of the profile used when none is chosen (and of the one an old single-login file holds).
DEFAULT_PROFILE = "default"
#: Bound on the number of profiles one config file may hold.
MAX_PROFILES = 64
#: How many characters of a profile name are shown in an error about a bad one.
_SHOWN_NAME_CHARS = 40
_PROFILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", re.ASCII)

#: The profile named by ``--profile`` for this invocation (set by the root callback), if any.
_selected_profile: str | None = None


def select_profile(name: str | None) -> None:
    """Use profile ``name`` for this invocation (``None``: ``$BASTION_PROFILE``, else the current one)."""
    global _selected_profile  # noqa: PLW0603 - one CLI invocation chooses one profile
    _selected_profile = None if name is None else parse_profile_name(name)


def parse_profile_name(name: str) -> str:
    """``name`` if it is a valid profile name (letters, digits, ``.``, ``_``, ``-``; up to 63).

    Raises:
        CliError: it is not.
    """
    if _PROFILE_NAME.fullmatch(name) is None:
        raise CliError(
            f"{name[:_SHOWN_NAME_CHARS]!r} is not a profile name",
            hint="use letters, digits, '.', '_' and '-' (up to 63, starting with a letter or digit)",
        )
    return name


@dataclass
class ProfileStore:
    """Every saved profile, and which one is current (``bastion profile use``)."""

    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)
    current: str = DEFAULT_PROFILE

    def chosen(self) -> tuple[str, str]:
        """The profile this invocation uses and why: ``--profile``, ``BASTION_PROFILE`` or ``current``."""
        if _selected_profile is not None:
            return _selected_profile, "--profile"
        env = os.environ.get("BASTION_PROFILE")
        if env:
            return parse_profile_name(env), "BASTION_PROFILE"
        return self.current, "current profile"


def _decode_store(raw: bytes, path: Path) -> ProfileStore:
    try:
        if len(raw) > MAX_CONFIG_BYTES:
            raise ValueError("too large")
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise TypeError("not an object")
        if "profiles" not in data:  # a config from before profiles: one login, the default profile
            return ProfileStore({DEFAULT_PROFILE: _decode_login(data)})
        profiles = data["profiles"]
        if not isinstance(profiles, dict) or len(profiles) > MAX_PROFILES:
            raise TypeError("bad profiles")
        store = ProfileStore(
            {parse_profile_name(str(k)): _decode_login(v) for k, v in profiles.items()},
            current=parse_profile_name(str(data.get("current", DEFAULT_PROFILE))),
        )
    except (ValueError, KeyError, TypeError, CliError) as exc:
        raise CliError(f"{path} is not a valid Bastion config", hint="run `bastion login` again") from exc
    return store


def _decode_login(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise TypeError("a profile is not an object")
    token = data.get("token")
    ca_file = data.get("ca_file")
    return {
        "url": str(data["url"]),
        "token": None if token is None else str(token),
        "ca_file": None if ca_file is None else str(ca_file),
    }


def load_profiles(path: Path | None = None) -> ProfileStore:
    """Every saved profile in ``path`` (default: :func:`config_path`); an empty store when there is none yet.

    Raises:
        CliError: the file is unreadable or not a Bastion config.
    """
    path = path or config_path()
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        return ProfileStore()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from exc
    return _decode_store(raw, path)


def save_profiles(store: ProfileStore) -> Path:
    """Write every profile atomically, mode 0600 (a temporary file renamed over the old one); return the path."""
    path = config_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    data = {"current": store.current, "profiles": store.profiles}
    write_private_file(path, json.dumps(data, indent=2).encode() + b"\n")
    return path


def save_config(config: OperatorConfig, *, profile: str | None = None) -> tuple[Path, str]:
    """Save ``config`` as a profile (``profile``, else the chosen one); return the path and the profile's name.

    The first profile saved becomes the current one.
    """
    store = load_profiles()
    name = parse_profile_name(profile) if profile is not None else store.chosen()[0]
    if not store.profiles:
        store.current = name
    if name not in store.profiles and len(store.profiles) >= MAX_PROFILES:
        raise CliError(f"the config already holds {MAX_PROFILES} profiles", hint="remove one from the config file")
    store.profiles[name] = {"url": config.url, "token": config.token, "ca_file": config.ca_file}
    return save_profiles(store), name


def _login_hint(name: str) -> str:
    flag = "" if name == DEFAULT_PROFILE else f" --profile {name}"
    return f"run `bastion login{flag} --url URL` (it prompts for the token)"


def load_config(path: Path | None = None) -> OperatorConfig:
    """Read the login of the chosen profile (from ``path``, default :func:`config_path`).

    Raises:
        CliError: no login yet, the profile is missing or logged out, or the file is unreadable.
    """
    store = load_profiles(path)
    name, why = store.chosen()
    if not store.profiles:
        raise CliError("you are not logged in", hint=_login_hint(name))
    login = store.profiles.get(name)
    if login is None:
        known = ", ".join(sorted(store.profiles))
        raise CliError(
            f"no profile named {name!r} (chosen by {why}); the saved profiles are: {known}",
            hint=_login_hint(name) + ", or pick one with `bastion profile use NAME`",
        )
    if not login["token"]:
        raise CliError(f"profile {name!r} is logged out", hint=_login_hint(name))
    return OperatorConfig(url=login["url"], token=login["token"], ca_file=login["ca_file"])


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

    def download(self, path: str, sink: BinaryIO, *, max_bytes: int) -> tuple[int, str]:
        """Stream a GET of ``path`` into ``sink``; return the byte count and the SHA-256 (hex) of what came.

        Raises:
            CliError: the service refused, could not be reached, or sent more than ``max_bytes``.
        """
        digest, size = hashlib.sha256(), 0
        try:
            with self._http.stream("GET", path) as response:
                if not response.is_success:
                    response.read()
                    raise self._error(response)
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > max_bytes:
                        raise CliError(f"the service sent more than the {max_bytes} bytes expected from {path}")
                    digest.update(chunk)
                    sink.write(chunk)
        except httpx.TimeoutException as exc:
            raise CliError(f"the service at {self.config.url} did not answer in time") from exc
        except httpx.TransportError as exc:
            raise CliError(f"the download from {self.config.url} failed: {type(exc).__name__}") from exc
        return size, digest.hexdigest()

    def get_json(self, path: str, **params: Any) -> Any:
        """GET a JSON document."""
        return self.request("GET", path, params=params or None).json()

    def post_json(self, path: str, body: Mapping[str, Any] | None = None) -> Any:
        """POST a JSON body (or none) and return the JSON answer."""
        return self.request("POST", path, json_body=body).json()

    def get_pages(
        self,
        path: str,
        *,
        limit: int | None = None,
        offset: int = 0,
        page_rows: int = PAGE_ROWS,
        max_rows: int = MAX_LIST_ROWS,
        **params: Any,
    ) -> Page:
        """Fetch a list that pages with ``limit``/``offset``: ``limit`` rows from ``offset``, or all of them.

        Without ``limit`` it fetches page after page up to ``max_rows``. Either way
        :attr:`Page.more` tells whether rows remain past the last one returned.
        """
        want = max_rows if limit is None else limit
        rows: list[Any] = []
        cursor = offset
        while len(rows) < want:
            ask = min(page_rows, want - len(rows))
            got = self.get_json(path, limit=ask, offset=cursor, **params)
            if not isinstance(got, list):
                raise CliError(f"the service answered {path} with something other than a list")
            rows.extend(got)
            cursor += len(got)
            if len(got) < ask:
                return Page(rows=rows, offset=offset, more=False)
        more = bool(self.get_json(path, limit=1, offset=cursor, **params))
        return Page(rows=rows, offset=offset, more=more)

    def get_capped(self, path: str, *, limit: int | None, default: int, **params: Any) -> Page:
        """Fetch a list that takes only ``limit`` (newest first): ``limit`` rows, or ``default``.

        It asks for one row more than it shows, to tell whether the list was cut.
        """
        want = limit or default
        got = self.get_json(path, limit=want + 1, **params)
        if not isinstance(got, list):
            raise CliError(f"the service answered {path} with something other than a list")
        return Page(rows=got[:want], offset=0, more=len(got) > want)

    def get_bounded(self, path: str, params: Mapping[str, str] | None = None, *, bound: int = SERVICE_MAX_ROWS) -> Page:
        """Fetch a list that the service bounds at ``bound`` rows and does not page.

        :attr:`Page.more` is set when the answer reached that bound (it may be cut).
        """
        got = self.get_json(path, **(params or {}))
        if not isinstance(got, list):
            raise CliError(f"the service answered {path} with something other than a list")
        return Page(rows=got, offset=0, more=len(got) >= bound)

    @staticmethod
    def _error(response: httpx.Response) -> CliError:
        try:
            body = response.json()
            code, detail = str(body["error"]), str(body["detail"])
        except (ValueError, KeyError, TypeError):
            code, detail = "http_error", f"the service answered HTTP {response.status_code}"
        hint = None if code in _NO_HINT_CODES else _HINTS.get(response.status_code)
        return CliError(f"{detail} ({code}, HTTP {response.status_code})", hint=hint)
