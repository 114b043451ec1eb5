"""The app store on flash: versions side by side, one ``current`` link per app.

Layout (``DEV/apps/``)::

    <component_id>/
        1.0.0/            an unpacked, verified app (app_manifest.json first)
        1.1.0/
        current -> 1.1.0  relative symlink, replaced atomically (symlink + rename)
    .cores.json           real-time core per RealTimeCapable app (see bastion.os.apps.claims)

An install unpacks the new version beside the old one (in a hidden temporary
directory, renamed into place once complete), then swaps ``current``. A power
cut at any point leaves ``current`` naming a complete version: the old one or
the new one. Older versions beyond :attr:`AppStore.keep_versions` are pruned.

Before the switch, the new manifest's claims are checked against the chip model
and the other installed apps (:mod:`bastion.os.apps.claims`): its peripherals
must exist and be free, and a real-time app gets a free real-time core.

Example:
    >>> store = AppStore(pathlib.Path("DEV/apps"))           # doctest: +SKIP
    >>> app = store.install(verified_image, component_id=cid, version="1.1.0")  # doctest: +SKIP
    >>> [a.version for a in store.installed()]                      # doctest: +SKIP
    ['1.1.0']
"""

from __future__ import annotations

import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from bastion.hw._statefile import locked, read_json, write_json
from bastion.hw.atomic import fsync_dir, remove_tree
from bastion.hw.chipmodel import DEFAULT_MODEL, ChipModel, get_model
from bastion.hw.errors import HwError
from bastion.images.errors import ImageError
from bastion.images.manifest import MANIFEST_NAME, MAX_MANIFEST_BYTES, AppManifest, validate_manifest
from bastion.images.semver import compare_versions
from bastion.os.apps.claims import Holder, allocate_core, check_peripherals, is_realtime
from bastion.os.updates.errors import UpdateFailedError, UpdateRefusedError

__all__ = ["CURRENT_LINK", "AppStore", "InstalledApp", "check_component_id", "check_version"]

CURRENT_LINK = "current"
#: Real-time core assignments, in the store root (hidden: never taken for an app).
CORES_FILE = ".cores.json"
#: How many versions of one app stay on flash (the current one and the one before).
DEFAULT_KEEP_VERSIONS = 2
#: Bound on the number of installed apps listed.
MAX_INSTALLED_APPS = 64


def check_component_id(value: str) -> str:
    """Return ``value`` if it is a canonical UUID string (safe as a directory name).

    Raises:
        UpdateRefusedError: (``component``) it is not.
    """
    try:
        canonical = str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError) as exc:
        raise UpdateRefusedError("component", "component id is not a UUID") from exc
    if canonical != value:
        raise UpdateRefusedError("component", "component id is not a canonical lower-case UUID")
    return value


def check_version(value: str) -> str:
    """Return ``value`` if it is a semantic version (safe as a directory name).

    Raises:
        UpdateRefusedError: (``version``) it is not.
    """
    try:
        compare_versions(value, value)
    except (ValueError, TypeError) as exc:
        raise UpdateRefusedError("version", "version is not a semantic version") from exc
    return value


@dataclass(frozen=True)
class InstalledApp:
    """An app version on flash.

    Attributes:
        component_id: the app's component ID.
        version: the installed version.
        path: its directory (the resolved version, not the link).
        manifest: its validated manifest.
    """

    component_id: str
    version: str
    path: Path
    manifest: AppManifest


def _unpack(image: Path, dest: Path) -> AppManifest:
    from bastion.images.app_build import unpack_app_payload

    return unpack_app_payload(image, dest)


class AppStore:
    """The apps on flash.

    Args:
        root: ``DEV/apps``; created 0700 if missing.
        keep_versions: versions kept per app (at least 1).
        model: the chip model (its peripherals and real-time cores).
    """

    def __init__(
        self, root: Path, *, keep_versions: int = DEFAULT_KEEP_VERSIONS, model: ChipModel | None = None
    ) -> None:
        self.root = root
        self.keep_versions = max(keep_versions, 1)
        self.model = model or get_model(DEFAULT_MODEL)
        root.mkdir(mode=0o700, parents=True, exist_ok=True)

    def get(self, component_id: str) -> InstalledApp | None:
        """The current version of an app, or ``None`` if none is installed (or it is unreadable)."""
        link = self.root / component_id / CURRENT_LINK
        try:
            version = str(link.readlink())
            check_version(version)
            path = self.root / component_id / version
            with (path / MANIFEST_NAME).open("rb") as handle:
                manifest = validate_manifest(handle.read(MAX_MANIFEST_BYTES + 1))
        except (OSError, ImageError, UpdateRefusedError):
            return None
        if manifest.component_id != component_id:
            return None
        return InstalledApp(component_id, version, path, manifest)

    def installed(self) -> list[InstalledApp]:
        """Every installed app (its current version), sorted by component ID."""
        apps: list[InstalledApp] = []
        for entry in sorted(self.root.iterdir())[:MAX_INSTALLED_APPS]:
            if entry.is_dir() and not entry.name.startswith("."):
                app = self.get(entry.name)
                if app is not None:
                    apps.append(app)
        return apps

    def install(self, image: Path, *, component_id: str, version: str, reinstall: bool = False) -> InstalledApp:
        """Unpack a verified app image beside the current version and make it current.

        Args:
            image: an image package whose signature, type, component and version
                the caller has verified.
            component_id: the component ID from the verified header.
            version: the version from the verified header.
            reinstall: replace the current version if it has the same version
                (a sideload during development). The old directory is moved
                aside before the new one takes its name, so a power cut in
                between leaves the app uninstalled, never half-written.

        Raises:
            UpdateRefusedError: (``component``) the manifest names another component;
                (``peripheral``) a declared peripheral does not exist or another app
                holds it; (``core``) a real-time app finds no free core.
            UpdateFailedError: the payload does not unpack or flash cannot be written.
        """
        check_component_id(component_id)
        check_version(version)
        previous = self.get(component_id)
        same = previous is not None and previous.version == version
        if same and not reinstall:
            raise UpdateFailedError(f"version {version} is already the current version")
        app_dir = self.root / component_id
        app_dir.mkdir(mode=0o700, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{version}.", suffix=".tmp", dir=app_dir))
        final = app_dir / version
        try:
            try:
                manifest = _unpack(image, staging / "app")
            except ImageError as exc:
                raise UpdateFailedError(f"the app payload does not unpack: {exc}") from exc
            if manifest.component_id != component_id:
                raise UpdateRefusedError("component", "the app manifest names another component than its image")
            core = self._admit(component_id, manifest)
            if same:
                final.rename(staging / "replaced")  # removed with the staging directory
            remove_tree(final)  # a leftover of an interrupted install, never the current one
            (staging / "app").rename(final)
            fsync_dir(app_dir)
            self._switch(app_dir, version)
            self._record_core(component_id, core)
        except OSError as exc:
            raise UpdateFailedError(f"cannot write the app to flash: {exc.strerror or exc}") from exc
        finally:
            remove_tree(staging)
        if not same:  # a reinstall keeps the versions that were there
            kept = {version} | ({previous.version} if previous is not None and self.keep_versions > 1 else set())
            self._prune(app_dir, keep=kept)
        return InstalledApp(component_id, version, final, manifest)

    def _holders(self, *, excluding: str) -> list[Holder]:
        return [
            Holder(app.component_id, app.manifest.name, app.manifest)
            for app in self.installed()
            if app.component_id != excluding
        ]

    def _admit(self, component_id: str, manifest: AppManifest) -> int | None:
        """Check the new manifest's claims; return the real-time core it gets (``None``: not real-time)."""
        others = self._holders(excluding=component_id)
        check_peripherals(manifest, self.model, others)
        if not is_realtime(manifest):
            return None
        return allocate_core(component_id, self.model, self.cores(), [h for h in others if is_realtime(h.manifest)])

    @property
    def _cores_path(self) -> Path:
        return self.root / CORES_FILE

    def _read_cores(self) -> dict[str, int]:
        if not self._cores_path.exists():
            return {}
        try:
            value = read_json(self._cores_path)
        except HwError:
            return {}  # rebuilt below from the installed apps
        return {k: v for k, v in value.items() if isinstance(v, int) and not isinstance(v, bool)}

    def _record_core(self, component_id: str, core: int | None) -> None:
        with locked(self._cores_path):
            cores = self._read_cores()
            if core is None:
                if cores.pop(component_id, None) is None:
                    return
            else:
                cores[component_id] = core
            write_json(self._cores_path, cores)

    def cores(self) -> dict[str, int]:
        """The real-time core of every installed real-time app (assigning any that lacks one)."""
        with locked(self._cores_path):
            recorded = self._read_cores()
            realtime = [h for h in self._holders(excluding="") if is_realtime(h.manifest)]
            cores = {h.component_id: recorded[h.component_id] for h in realtime if h.component_id in recorded}
            for holder in realtime:
                if holder.component_id not in cores:
                    try:
                        cores[holder.component_id] = allocate_core(holder.component_id, self.model, cores, realtime)
                    except UpdateRefusedError:
                        continue  # more real-time apps than cores (a smaller model): it does not run
            if cores != recorded:
                write_json(self._cores_path, cores)
            return cores

    def core_of(self, component_id: str) -> int | None:
        """The real-time core an app runs on (``None``: not a real-time app, or no core for it)."""
        return self.cores().get(component_id)

    def _switch(self, app_dir: Path, version: str) -> None:
        tmp = app_dir / f".{CURRENT_LINK}.{uuid.uuid4().hex}.tmp"
        tmp.symlink_to(version)
        try:
            tmp.replace(app_dir / CURRENT_LINK)  # rename(2) over the old link: atomic
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        fsync_dir(app_dir)

    def _prune(self, app_dir: Path, *, keep: set[str]) -> None:
        """Remove every version directory (and leftover) not in ``keep``; best effort."""
        for entry in app_dir.iterdir():
            if entry.name == CURRENT_LINK or entry.name in keep:
                continue
            try:
                remove_tree(entry)
            except OSError:
                continue

    def remove(self, component_id: str) -> None:
        """Uninstall an app entirely (all versions)."""
        check_component_id(component_id)
        remove_tree(self.root / component_id)
        self._record_core(component_id, None)
