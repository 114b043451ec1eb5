"""The download credential: what the device presents to fetch a TUF *target* (docs/adr/0013-update-eligibility.md).

TUF metadata is public; a target (an image) is served only with a current
credential for the device's group. The device gets one from ``POST
/api/v1/device/download-credential`` with a request signed (COSE_Sign1) by its
certified key, ``x5chain`` = [device certificate]::

    {"purpose": "download-credential", "device_id": tstr, "iat": int}

The service checks the device's standing (claimed, not revoked, last attestation
passed) each time it issues one; a credential lasts about a minute. It is kept
in memory only, reused while it has more than :attr:`CredentialSettings.margin`
left, and sent as ``Authorization: Bastion-Download <credential>`` (a header,
never the URL).

Example:
    >>> creds = DownloadCredentials(http, credentials=lambda: (key, cert_der), device_id=dev)  # doctest: +SKIP
    >>> creds.authorization()                                                                  # doctest: +SKIP
    'Bastion-Download v1....'
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import cbor2
import httpx
from tuf.api import exceptions as tuf_exceptions

from bastion.crypto.cose import sign1
from bastion.crypto.keys import PrivateKey

__all__ = [
    "CREDENTIAL_CONTENT_TYPE",
    "CREDENTIAL_PATH",
    "CREDENTIAL_PURPOSE",
    "CREDENTIAL_SCHEME",
    "CredentialSettings",
    "DownloadCredentials",
]

CREDENTIAL_PATH = "/api/v1/device/download-credential"
CREDENTIAL_CONTENT_TYPE = "application/cose"
CREDENTIAL_PURPOSE = "download-credential"
CREDENTIAL_SCHEME = "Bastion-Download"

_log = logging.getLogger("bastion.os.updates.credential")


@dataclass(frozen=True)
class CredentialSettings:
    """Bounds of the credential client.

    Attributes:
        margin: a credential with less than this left is not used; a fresh one is fetched.
        max_lifetime: a credential is kept at most this long, whatever the service says.
        max_answer_bytes: bound on the service's answer.
        max_credential_chars: bound on the credential itself.
    """

    margin: dt.timedelta = dt.timedelta(seconds=15)
    max_lifetime: dt.timedelta = dt.timedelta(seconds=60)
    max_answer_bytes: int = 4096
    max_credential_chars: int = 512


Credentials = Callable[[], tuple[PrivateKey, bytes] | None]


class DownloadCredentials:
    """Fetches, keeps and hands out the device's download credential (thread-safe).

    Args:
        http: client whose ``base_url`` is the service.
        credentials: returns the device key and its certificate DER, or ``None``.
        device_id: this device's ID.
        clock: the wall clock (the request's ``iat``).
        monotonic: the clock that times the kept credential.
        settings: bounds.
    """

    def __init__(
        self,
        http: httpx.Client,
        *,
        credentials: Credentials,
        device_id: str,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        monotonic: Callable[[], float] = time.monotonic,
        settings: CredentialSettings | None = None,
    ) -> None:
        self._http = http
        self._credentials = credentials
        self._device_id = device_id
        self._clock = clock
        self._monotonic = monotonic
        self._settings = settings or CredentialSettings()
        self._lock = threading.Lock()
        self._token: str | None = None
        self._valid_until = 0.0
        #: How many credentials were fetched (tests and status).
        self.fetched = 0

    def invalidate(self) -> None:
        """Forget the kept credential (the static server refused it)."""
        with self._lock:
            self._token = None

    def authorization(self) -> str:
        """The ``Authorization`` header value for a target request.

        Raises:
            tuf.api.exceptions.DownloadHTTPError: the service refused a credential (the
                message names its error code: ``device_revoked``, ``attestation_failed``, ...).
            tuf.api.exceptions.DownloadError: no device certificate yet, or the service is unreachable.
        """
        with self._lock:
            if self._token is None or self._monotonic() >= self._valid_until:
                self._token, self._valid_until = self._fetch()
                self.fetched += 1
            return f"{CREDENTIAL_SCHEME} {self._token}"

    def _fetch(self) -> tuple[str, float]:
        held = self._credentials()
        if held is None:
            raise tuf_exceptions.DownloadError("no device certificate yet: attest before downloading")
        key, cert = held
        payload = cbor2.dumps(
            {"purpose": CREDENTIAL_PURPOSE, "device_id": self._device_id, "iat": int(self._clock().timestamp())}
        )
        body = sign1(payload, key, x5chain=[cert])
        started = self._monotonic()
        try:
            response = self._http.post(CREDENTIAL_PATH, content=body, headers={"Content-Type": CREDENTIAL_CONTENT_TYPE})
        except httpx.HTTPError as exc:
            raise tuf_exceptions.DownloadError(f"download credential: {type(exc).__name__}") from exc
        answer = _json(response, self._settings.max_answer_bytes)
        if response.status_code != 200:
            code = str(answer.get("error", "error"))[:64]
            detail = str(answer.get("detail", ""))[:200]
            _log.warning("the service refused a download credential: %s", code)
            raise tuf_exceptions.DownloadHTTPError(
                f"download credential refused ({code}): {detail}", response.status_code
            )
        token, lifetime = answer.get("credential"), answer.get("expires_in_s")
        if (
            not isinstance(token, str)
            or not token.isascii()
            or not 0 < len(token) <= self._settings.max_credential_chars
            or isinstance(lifetime, bool)
            or not isinstance(lifetime, int)
        ):
            raise tuf_exceptions.DownloadError("download credential: the service's answer is malformed")
        keep = min(float(lifetime), self._settings.max_lifetime.total_seconds()) - self._settings.margin.total_seconds()
        return token, started + max(keep, 0.0)


def _json(response: httpx.Response, bound: int) -> dict[str, object]:
    content = response.content[: bound + 1]
    if len(content) > bound:
        return {}
    try:
        value = response.json()
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
