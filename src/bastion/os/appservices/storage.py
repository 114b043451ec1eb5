"""MutableStorage: an app's persistent files, never more than its manifest's ``SizeKB``.

The app's storage directory (``AppContext.storage_dir``, one per component ID, so
it survives reboots and app updates) is mounted read-only at ``/storage`` in the
sandbox; every change goes through these operations, so the OS enforces the
quota exactly however many files the app makes.

==================  =========================  ======================================
op                  args                       result
==================  =========================  ======================================
``storage.write``   ``name``, ``data_b64``     ``size``; replaces the file atomically
``storage.append``  ``name``, ``data_b64``     ``size``; creates the file if missing
``storage.read``    ``name``, ``offset``,      ``data_b64``, ``size`` (of the file),
                    ``length``                 ``eof``
``storage.delete``  ``name``                   ``{}``
``storage.list``    none                       ``files``: ``[{name, size}]``
``storage.usage``   none                       ``used_bytes``, ``quota_bytes``,
                                               ``files``, ``max_files``
==================  =========================  ======================================

Accounting: every entry in the directory tree costs its allocated size (the
larger of its length and its allocated blocks) rounded up to
:attr:`StorageLimits.block_bytes`, plus :attr:`StorageLimits.file_overhead_bytes`,
so a million empty files hit the quota too. The total never exceeds
``SizeKB * 1024``; a request that would pass it raises
:class:`~bastion.os.appservices.registry.QuotaExceededError` naming ``SizeKB``
and writes nothing. At most :attr:`StorageLimits.max_files` entries.

Names: 1..64 characters of ``A-Z a-z 0-9 . _ -``, no leading dot, no ``..``
(so never a path). Files are opened relative to a directory fd with
``O_NOFOLLOW``; a symbolic link, a hard link (``st_nlink > 1``) or anything
but a regular file planted in the directory is refused (a recorded denial),
never followed. ``storage.delete`` removes such an entry without following it,
so an app can reclaim the space.

Example (OS side)::

    services.add(StorageService())
    # app side: bastion.applibs.storage.write_file("state.json", b"{}")
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bastion.os.appservices.registry import (
    AppContext,
    Args,
    BadRequestError,
    DeniedError,
    NotFoundError,
    Operation,
    QuotaExceededError,
    Reply,
    UnavailableError,
    arg_b64,
    arg_int,
    arg_str,
    b64,
)

__all__ = ["CAPABILITY", "OPERATIONS", "StorageLimits", "StorageService", "check_name"]

CAPABILITY = "MutableStorage"
#: Prefix of the temporary files of atomic writes (a leading dot: no app name can collide).
TEMP_PREFIX = ".bastion-tmp-"
_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
#: Bound on a read offset (files are far smaller; this only bounds the argument).
_MAX_OFFSET = 2**40


@dataclass(frozen=True)
class StorageLimits:
    """Bounds of MutableStorage.

    Attributes:
        block_bytes: allocation unit every file is rounded up to.
        file_overhead_bytes: added per entry (its inode and directory entry).
        max_files: entries an app's directory may hold.
        max_name_chars: longest file name.
        max_chunk_bytes: most data one write, append or read carries (fits one wire message).
        max_scan_entries: a tree with more entries than this was tampered with; refused.
    """

    block_bytes: int = 4096
    file_overhead_bytes: int = 512
    max_files: int = 256
    max_name_chars: int = 64
    max_chunk_bytes: int = 64 * 1024
    max_scan_entries: int = 4096

    def cost(self, allocated: int) -> int:
        """What an entry of ``allocated`` bytes counts against the quota."""
        blocks = -(-max(allocated, 0) // self.block_bytes)
        return blocks * self.block_bytes + self.file_overhead_bytes


def check_name(name: str, limits: StorageLimits) -> str:
    """Validate a file name.

    Raises:
        BadRequestError: empty, too long, a leading dot, ``..``, or a character outside the safe set.
    """
    if not name or len(name) > limits.max_name_chars:
        raise BadRequestError(f"a file name is 1..{limits.max_name_chars} characters")
    if not _NAME.fullmatch(name) or ".." in name:
        raise BadRequestError("a file name uses A-Z a-z 0-9 . _ - only, with no leading dot and no '..'")
    return name


def _allocated(st: os.stat_result) -> int:
    return max(st.st_size, st.st_blocks * 512)


@dataclass(frozen=True)
class _Scan:
    used: int
    entries: dict[str, os.stat_result]  # top-level entries (not temp files), by name


class StorageService:
    """Per-app persistent files under a quota (see the module docstring).

    Args:
        limits: the bounds.
    """

    def __init__(self, limits: StorageLimits | None = None) -> None:
        self.limits = limits or StorageLimits()
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    def _lock(self, component_id: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(component_id, threading.Lock())

    @contextlib.contextmanager
    def _directory(self, path: Path) -> Iterator[int]:
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise DeniedError("the storage directory is not a plain directory", capability=CAPABILITY) from None
            raise UnavailableError("the app's storage is not available") from None
        try:
            yield fd
        finally:
            os.close(fd)

    def _scan(self, dfd: int) -> _Scan:
        """Sum the cost of every entry in the tree; remove stale temp files (the caller holds the app's lock)."""
        used, seen = 0, 0
        entries: dict[str, os.stat_result] = {}
        for top, dirs, files, top_fd in os.fwalk(".", dir_fd=dfd, follow_symlinks=False):
            for name in (*dirs, *files):
                seen += 1
                if seen > self.limits.max_scan_entries:
                    raise DeniedError("the storage directory holds too many entries", capability=CAPABILITY)
                try:
                    st = os.stat(name, dir_fd=top_fd, follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if top == "." and name.startswith(TEMP_PREFIX) and stat.S_ISREG(st.st_mode):
                    with contextlib.suppress(OSError):
                        os.unlink(name, dir_fd=top_fd)  # left by an interrupted write
                    continue
                used += self.limits.cost(_allocated(st))
                if top == ".":
                    entries[name] = st
        return _Scan(used, entries)

    @staticmethod
    def _plain(st: os.stat_result, name: str) -> None:
        if stat.S_ISLNK(st.st_mode):
            raise DeniedError(f"{name} is a symbolic link; refused, not followed", capability=CAPABILITY)
        if not stat.S_ISREG(st.st_mode):
            raise DeniedError(f"{name} is not a regular file; refused", capability=CAPABILITY)
        if st.st_nlink > 1:
            raise DeniedError(f"{name} has other hard links; refused", capability=CAPABILITY)

    def _quota(self, ctx: AppContext, used: int, name: str) -> None:
        size_kb = ctx.capabilities.mutable_storage_kb or 0
        if used > size_kb * 1024:
            raise QuotaExceededError(
                f"writing {name} would use {used} bytes of the MutableStorage SizeKB {size_kb} "
                f"({size_kb * 1024} bytes); nothing was written",
                capability=CAPABILITY,
            )

    def _new_entry(self, scan: _Scan, name: str) -> None:
        if name not in scan.entries and len(scan.entries) >= self.limits.max_files:
            raise QuotaExceededError(
                f"the storage holds {len(scan.entries)} files, the most an app may have", capability=CAPABILITY
            )

    def write(self, ctx: AppContext, name: str, data: bytes) -> int:
        """Replace ``name`` with ``data`` atomically (temp file, fsync, rename, fsync of the directory).

        Raises:
            QuotaExceededError: the quota or the file count would be passed (nothing written).
            DeniedError: ``name`` is a link or not a regular file.
            UnavailableError: the disk failed.
        """
        check_name(name, self.limits)
        with self._lock(ctx.component_id), self._directory(ctx.storage_dir) as dfd:
            scan = self._scan(dfd)
            old = scan.entries.get(name)
            if old is not None:
                self._plain(old, name)
            self._new_entry(scan, name)
            old_cost = self.limits.cost(_allocated(old)) if old is not None else 0
            self._quota(ctx, scan.used - old_cost + self.limits.cost(len(data)), name)
            temp = TEMP_PREFIX + secrets.token_hex(8)
            try:
                fd = os.open(
                    temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=dfd
                )
                try:
                    _write_all(fd, data)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.rename(temp, name, src_dir_fd=dfd, dst_dir_fd=dfd)  # replaces the entry; never follows it
                os.fsync(dfd)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.unlink(temp, dir_fd=dfd)
                raise _disk_error(exc) from None
            return len(data)

    def append(self, ctx: AppContext, name: str, data: bytes) -> int:
        """Add ``data`` at the end of ``name`` (created if missing); all of it or nothing.

        Returns:
            The file's new size.

        Raises:
            QuotaExceededError: the quota or the file count would be passed (nothing written).
            DeniedError: ``name`` is a link or not a regular file.
            UnavailableError: the disk failed.
        """
        check_name(name, self.limits)
        with self._lock(ctx.component_id), self._directory(ctx.storage_dir) as dfd:
            scan = self._scan(dfd)
            old = scan.entries.get(name)
            if old is not None:
                self._plain(old, name)
            self._new_entry(scan, name)
            size = old.st_size if old is not None else 0
            old_cost = self.limits.cost(_allocated(old)) if old is not None else 0
            self._quota(ctx, scan.used - old_cost + self.limits.cost(size + len(data)), name)
            flags = os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
            if old is None:
                flags |= os.O_CREAT | os.O_EXCL
            try:
                fd = os.open(name, flags, 0o644, dir_fd=dfd)
            except OSError as exc:
                raise _open_error(exc, name) from None
            try:
                st = os.fstat(fd)
                self._plain(st, name)
                if old is not None and (st.st_ino, st.st_dev) != (old.st_ino, old.st_dev):
                    raise DeniedError(f"{name} changed while it was being appended to", capability=CAPABILITY)
                try:
                    _write_all(fd, data)
                    os.fsync(fd)
                except OSError as exc:
                    with contextlib.suppress(OSError):
                        os.ftruncate(fd, st.st_size)  # nothing partially written
                    raise _disk_error(exc) from None
            finally:
                os.close(fd)
            if old is None:
                with contextlib.suppress(OSError):
                    os.fsync(dfd)
            return st.st_size + len(data)

    def read(self, ctx: AppContext, name: str, offset: int, length: int) -> tuple[bytes, int]:
        """Up to ``length`` bytes of ``name`` from ``offset``, and the file's size.

        Raises:
            NotFoundError: no such file.
            DeniedError: ``name`` is a link or not a regular file.
        """
        check_name(name, self.limits)
        with self._lock(ctx.component_id), self._directory(ctx.storage_dir) as dfd:
            try:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
            except OSError as exc:
                raise _open_error(exc, name) from None
            try:
                st = os.fstat(fd)
                self._plain(st, name)
                return os.pread(fd, length, offset), st.st_size
            except OSError as exc:
                raise _disk_error(exc) from None
            finally:
                os.close(fd)

    def delete(self, ctx: AppContext, name: str) -> None:
        """Remove ``name`` (a planted link is removed, not followed).

        Raises:
            NotFoundError: no such file.
            BadRequestError: ``name`` is a directory.
        """
        check_name(name, self.limits)
        with self._lock(ctx.component_id), self._directory(ctx.storage_dir) as dfd:
            try:
                os.unlink(name, dir_fd=dfd)
                os.fsync(dfd)
            except FileNotFoundError:
                raise NotFoundError(f"no file {name}") from None
            except IsADirectoryError:
                raise BadRequestError(f"{name} is a directory") from None
            except OSError as exc:
                if exc.errno == errno.EPERM:
                    raise BadRequestError(f"{name} is a directory") from None
                raise _disk_error(exc) from None

    def list_files(self, ctx: AppContext) -> list[dict[str, object]]:
        """The app's files (regular files with valid names), by name."""
        with self._lock(ctx.component_id), self._directory(ctx.storage_dir) as dfd:
            scan = self._scan(dfd)
        return [
            {"name": name, "size": st.st_size}
            for name, st in sorted(scan.entries.items())
            if stat.S_ISREG(st.st_mode) and _NAME.fullmatch(name)
        ]

    def usage(self, ctx: AppContext) -> dict[str, int]:
        """Bytes used (as counted against the quota), the quota, the entry count and its bound."""
        with self._lock(ctx.component_id), self._directory(ctx.storage_dir) as dfd:
            scan = self._scan(dfd)
        return {
            "used_bytes": scan.used,
            "quota_bytes": (ctx.capabilities.mutable_storage_kb or 0) * 1024,
            "files": len(scan.entries),
            "max_files": self.limits.max_files,
        }


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _disk_error(exc: OSError) -> QuotaExceededError | UnavailableError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return QuotaExceededError("the device's storage is full; nothing was written")
    return UnavailableError("the device's storage failed")


def _open_error(exc: OSError, name: str) -> DeniedError | NotFoundError | QuotaExceededError | UnavailableError:
    if exc.errno == errno.ELOOP:
        return DeniedError(f"{name} is a symbolic link; refused, not followed", capability=CAPABILITY)
    if exc.errno == errno.ENOENT:
        return NotFoundError(f"no file {name}")
    if exc.errno in (errno.EEXIST, errno.EISDIR, errno.ENXIO):
        return DeniedError(f"{name} is not a regular file; refused", capability=CAPABILITY)
    return _disk_error(exc)


def _data(ctx: AppContext, args: Args) -> tuple[StorageService, str, bytes]:
    service = ctx.service(StorageService)
    name = arg_str(args, "name", max_chars=service.limits.max_name_chars)
    return service, name, arg_b64(args, "data", max_bytes=service.limits.max_chunk_bytes)


def _write(ctx: AppContext, args: Args) -> Reply:
    service, name, data = _data(ctx, args)
    return Reply({"size": service.write(ctx, name, data)})


def _append(ctx: AppContext, args: Args) -> Reply:
    service, name, data = _data(ctx, args)
    return Reply({"size": service.append(ctx, name, data)})


def _read(ctx: AppContext, args: Args) -> Reply:
    service = ctx.service(StorageService)
    name = arg_str(args, "name", max_chars=service.limits.max_name_chars)
    offset = arg_int(args, "offset", low=0, high=_MAX_OFFSET, default=0)
    limit = service.limits.max_chunk_bytes
    length = arg_int(args, "length", low=0, high=limit, default=limit)
    data, size = service.read(ctx, name, offset, length)
    return Reply({"data_b64": b64(data), "size": size, "eof": offset + len(data) >= size})


def _delete(ctx: AppContext, args: Args) -> Reply:
    service = ctx.service(StorageService)
    service.delete(ctx, arg_str(args, "name", max_chars=service.limits.max_name_chars))
    return Reply({})


def _list(ctx: AppContext, args: Args) -> Reply:
    del args
    return Reply({"files": ctx.service(StorageService).list_files(ctx)})


def _usage(ctx: AppContext, args: Args) -> Reply:
    del args
    return Reply(dict(ctx.service(StorageService).usage(ctx)))


OPERATIONS = (
    Operation("storage.write", _write, capability=CAPABILITY),
    Operation("storage.append", _append, capability=CAPABILITY),
    Operation("storage.read", _read, capability=CAPABILITY),
    Operation("storage.delete", _delete, capability=CAPABILITY),
    Operation("storage.list", _list, capability=CAPABILITY),
    Operation("storage.usage", _usage, capability=CAPABILITY),
)
