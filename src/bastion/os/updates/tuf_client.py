"""The device's TUF client for one device group: python-tuf ``ngclient``, bounded.

ngclient runs the TUF client workflow (root rotation, timestamp, snapshot,
targets; spec section 5.3-5.7): it refuses rollback, freeze, mix-and-match and
endless data. This module configures its bounds (:class:`TufLimits`), lists the
targets of the group, downloads one (ngclient checks length and hashes), and
translates ngclient's exceptions into :mod:`bastion.os.updates.errors`.

ngclient reads the wall clock itself (``TrustedMetadataSet.reference_time``) for
metadata expiry; that is the one place in the agent where time is not a parameter.

Example:
    >>> repo = GroupRepository(metadata_dir=d, base_url="https://svc/tuf/g1", fetcher=f)  # doctest: +SKIP
    >>> repo.refresh(); [t.path for t in repo.targets()]                                  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from tuf.api import exceptions as tuf_exceptions
from tuf.api._payload import TargetFile, Targets  # defined here; tuf.api.metadata re-exports them implicitly
from tuf.api.metadata import Metadata
from tuf.ngclient.config import UpdaterConfig
from tuf.ngclient.fetcher import FetcherInterface
from tuf.ngclient.updater import Updater

from bastion.os.updates.errors import UpdateFailedError, UpdateRefusedError, UpdateUnavailableError

__all__ = ["GroupRepository", "Target", "TufLimits", "translate_tuf_error", "updater_config"]

_T = TypeVar("_T")


@dataclass(frozen=True)
class TufLimits:
    """Bounds on what the TUF repository may make the device download.

    Attributes:
        max_root_rotations: root versions walked in one refresh.
        max_delegations: delegated roles visited per lookup.
        root_max_length: bound on one root metadata file.
        timestamp_max_length: bound on ``timestamp.json``.
        snapshot_max_length: bound on a snapshot (when the timestamp gives no length).
        targets_max_length: bound on a targets file (when the snapshot gives no length).
        max_targets: targets listed per check.
        max_target_bytes: bound on one target (image or delta) whatever its metadata says.
    """

    max_root_rotations: int = 32
    max_delegations: int = 8
    root_max_length: int = 512 * 1024
    timestamp_max_length: int = 16 * 1024
    snapshot_max_length: int = 256 * 1024
    targets_max_length: int = 1024 * 1024
    max_targets: int = 256
    max_target_bytes: int = 128 * 1024 * 1024


def updater_config(limits: TufLimits) -> UpdaterConfig:
    """The ngclient configuration for ``limits`` (consistent snapshots: hash-prefixed targets)."""
    return UpdaterConfig(
        max_root_rotations=limits.max_root_rotations,
        max_delegations=limits.max_delegations,
        root_max_length=limits.root_max_length,
        timestamp_max_length=limits.timestamp_max_length,
        snapshot_max_length=limits.snapshot_max_length,
        targets_max_length=limits.targets_max_length,
        prefix_targets_with_hash=True,
    )


@dataclass(frozen=True)
class Target:
    """One verified target of the group's repository.

    Attributes:
        path: the target path (``apps/<component>/<version>.img``, ...).
        length: its length in bytes, as signed.
        sha256: hex SHA-256, as signed.
        custom: the target's ``custom`` object.
        info: ngclient's ``TargetFile`` (for download and hash checks).
    """

    path: str
    length: int
    sha256: str
    custom: dict[str, Any]
    info: TargetFile


def translate_tuf_error(exc: Exception) -> Exception:  # noqa: PLR0911 - one branch per ngclient error
    """Map an ngclient exception to the OS error tree (the caller raises it ``from exc``)."""
    message = str(exc) or type(exc).__name__
    if isinstance(exc, tuf_exceptions.DownloadLengthMismatchError):
        return UpdateRefusedError("length", f"endless data: {message}")  # TUF 5.x: bounded downloads
    if isinstance(exc, tuf_exceptions.DownloadError):
        return UpdateUnavailableError(f"TUF download failed: {message}")
    if isinstance(exc, tuf_exceptions.ExpiredMetadataError):
        return UpdateRefusedError("freeze", message)  # TUF 5.4.4, 5.5.6, 5.6.5: expired metadata
    if isinstance(exc, tuf_exceptions.BadVersionNumberError):
        # "must be >=" is a version going back (TUF 5.4.3, 5.5.5); "Expected ... version"
        # is metadata that disagrees with the snapshot or timestamp that lists it (5.5.3, 5.6.2).
        return UpdateRefusedError("rollback" if ">=" in message else "mix-and-match", message)
    if isinstance(exc, tuf_exceptions.LengthOrHashMismatchError):
        return UpdateRefusedError("length" if "length" in message.lower() else "hash", message)
    if isinstance(exc, tuf_exceptions.UnsignedMetadataError):
        return UpdateRefusedError("signature", message)
    if isinstance(exc, tuf_exceptions.RepositoryError):
        reason = "mix-and-match" if "does not contain" in message or "missing info" in message else "tuf"
        return UpdateRefusedError(reason, message)
    if isinstance(exc, OSError):
        return UpdateFailedError(f"cannot write TUF metadata or a target: {exc.strerror or exc}")
    return UpdateRefusedError("tuf", f"{type(exc).__name__}: {message}")


def _guard(call: Callable[[], _T]) -> _T:
    try:
        return call()
    except (tuf_exceptions.RepositoryError, tuf_exceptions.DownloadError, OSError, ValueError) as exc:
        raise translate_tuf_error(exc) from exc


class GroupRepository:
    """A device group's TUF repository, as seen through ngclient.

    The trust anchor is the ``root.json`` already in ``metadata_dir`` (stored on
    first use by :class:`bastion.os.updates.pointer.GroupStore`); ngclient keeps
    rotating it forward there.

    Args:
        metadata_dir: the group's metadata directory under the OS state.
        base_url: absolute URL of the group's repository (``.../tuf/<group_id>``).
        fetcher: the network (:class:`bastion.os.updates.fetcher.CachingFetcher`).
        limits: bounds.

    Raises:
        UpdateRefusedError: the stored root does not load.
    """

    def __init__(
        self, *, metadata_dir: Path, base_url: str, fetcher: FetcherInterface, limits: TufLimits | None = None
    ) -> None:
        self._limits = limits or TufLimits()
        self._dir = metadata_dir
        self._local: Metadata[Targets] | None = None
        base = base_url.rstrip("/")
        self._updater = _guard(
            lambda: Updater(
                metadata_dir=str(metadata_dir),
                metadata_base_url=f"{base}/metadata/",
                target_base_url=f"{base}/targets/",
                fetcher=fetcher,
                config=updater_config(self._limits),
                bootstrap=None,  # the stored root (trusted on first use) is the anchor
            )
        )

    def refresh(self) -> None:
        """Run the TUF refresh (root, timestamp, snapshot, targets).

        Raises:
            UpdateRefusedError: the metadata failed a check (rollback, freeze, ...).
            UpdateUnavailableError: the repository could not be reached.
        """
        self._local = None
        _guard(self._updater.refresh)

    def _verified_targets(self) -> Metadata[Targets]:
        # ngclient persists targets.json only after verifying it; it offers no listing API.
        if self._local is None:
            self._local = _guard(lambda: Metadata[Targets].from_bytes((self._dir / "targets.json").read_bytes()))
        return self._local

    def group_custom(self) -> dict[str, Any]:
        """The group-wide ``custom`` object of the refreshed targets role (``{}`` if it has none).

        The service signs the group's update settings (maintenance window,
        update policy) into it, so they are as fresh and as trustworthy as the
        targets themselves.

        Raises:
            UpdateRefusedError: the stored targets metadata does not load.
        """
        value = self._verified_targets().signed.unrecognized_fields.get("custom")
        return value if isinstance(value, dict) else {}

    def targets(self) -> list[Target]:
        """The targets of the refreshed top-level targets role, each looked up through ngclient.

        Raises:
            UpdateRefusedError: too many targets, or a lookup failed a check.
        """
        local = self._verified_targets()
        paths = sorted(local.signed.targets)
        if len(paths) > self._limits.max_targets:
            raise UpdateRefusedError("length", f"the repository lists more than {self._limits.max_targets} targets")
        found: list[Target] = []
        for path in paths:
            info = _guard(lambda p=path: self._updater.get_targetinfo(p))  # type: ignore[misc]
            if info is None or "sha256" not in info.hashes:
                raise UpdateRefusedError("tuf", f"target {path!r} has no SHA-256 hash")
            custom = info.custom if isinstance(info.custom, dict) else {}
            found.append(Target(path, info.length, info.hashes["sha256"], custom, info))
        return found

    def download(self, target: Target, dest: Path) -> Path:
        """Download ``target`` to ``dest``; ngclient checks its length and hashes.

        Raises:
            UpdateRefusedError: too long, or a length/hash mismatch.
            UpdateUnavailableError: the download failed.
        """
        if target.length > self._limits.max_target_bytes:
            raise UpdateRefusedError("length", f"{target.path} is over the {self._limits.max_target_bytes}-byte bound")
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            return Path(_guard(lambda: self._updater.download_target(target.info, filepath=str(dest))))
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
