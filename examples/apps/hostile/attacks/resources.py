"""Attacks on the device's resources: disk past the storage quota, /tmp past its size, memory, the log.

The OS counts every byte of ``/storage`` (writes go through applibs), ``/tmp``
and ``/dev/shm`` are size-bounded tmpfs, the memory cgroup (or RLIMIT_AS) stops
a hog, and RLIMIT_FSIZE caps every file the app writes, its log included.
"""

from __future__ import annotations

import base64
import errno
import os
import sys

from attacks import Context, Outcome, attack, report, sha256
from bastion.applibs import RequestError, connection

__all__: list[str] = []

_MIB = 1024 * 1024
#: What the fill attacks try to write (far past any bound the OS sets).
FILL_BYTES = 256 * _MIB
#: The memory hog's step and goal.
HOG_STEP = 16 * _MIB
HOG_GOAL = 4096 * _MIB
#: One storage request's data (below the wire's message bound).
STORAGE_CHUNK = 32 * 1024


def _fill(directory: str) -> Outcome:
    chunk = b"\xa5" * _MIB
    written, files, how = 0, [], "no limit reached"
    try:
        while written < FILL_BYTES:
            path = os.path.join(directory, f"fill-{len(files)}")
            files.append(path)
            with open(path, "wb") as handle:  # noqa: PTH123 - plain stdlib
                for _ in range(4):
                    handle.write(chunk)
                    written += len(chunk)
    except OSError as exc:
        how = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
    finally:
        for path in files:
            try:
                os.unlink(path)
            except OSError:
                continue
    return Outcome(written < FILL_BYTES, how, {"written_bytes": written})


@attack("tmp_fill")
def tmp_fill(ctx: Context) -> Outcome:
    """Fill ``/tmp`` (memory, on a tmpfs) far past its size."""
    del ctx
    return _fill("/tmp")


@attack("shm_fill")
def shm_fill(ctx: Context) -> Outcome:
    """Fill ``/dev/shm`` likewise."""
    del ctx
    return _fill("/dev/shm")


@attack("storage_quota")
def storage_quota(ctx: Context) -> Outcome:
    """Write past ``MutableStorage.SizeKB`` through the OS: one big file, then many small ones."""
    del ctx
    data = base64.b64encode(b"\x5a" * STORAGE_CHUNK).decode()
    small = base64.b64encode(b"s" * 100).decode()
    written, how, errors = 0, "no limit reached", []
    try:
        connection().call("storage.write", {"name": "big", "data_b64": data})
        written += STORAGE_CHUNK
        while written < FILL_BYTES:
            connection().call("storage.append", {"name": "big", "data_b64": data})
            written += STORAGE_CHUNK
    except RequestError as exc:
        errors.append(type(exc).__name__)
    files = 0
    try:
        while files < 10_000:
            connection().call("storage.write", {"name": f"small-{files}", "data_b64": small})
            files += 1
    except RequestError as exc:
        errors.append(type(exc).__name__)
    how = ",".join(errors) or how
    blocked = written < FILL_BYTES and files < 10_000
    return Outcome(blocked, how, {"written_bytes": written, "small_files": files})


@attack("storage_names")
def storage_names(ctx: Context) -> Outcome:
    """Storage names that walk out of the app's directory, or follow a link planted in it."""
    del ctx
    names = ["../../../chip/uds", "/etc/passwd", "..", ".", "a/../../x", "planted-link", "x\x00y", "n" * 300, ""]
    leaked: list[str] = []
    refused: dict[str, str] = {}
    wrote: list[str] = []
    for name in names:
        try:
            reply = connection().call("storage.read", {"name": name, "offset": 0, "length": 4096})
            leaked.append(sha256(base64.b64decode(str(reply.get("data_b64", "")))))
        except RequestError as exc:
            refused[f"read {name[:40]}"] = type(exc).__name__
        try:
            connection().call("storage.write", {"name": name, "data_b64": base64.b64encode(b"pwned").decode()})
            wrote.append(name[:40])
        except RequestError as exc:
            refused[f"write {name[:40]}"] = type(exc).__name__
    # Writing "planted-link" may replace the link by a plain file of the app's own: not an escape.
    # What would be one is reading a secret through it, or writing through it (the test hashes the chip).
    escaped = [w for w in wrote if w != "planted-link"]
    detail = {"errors": refused, "leaked": leaked, "wrote": wrote}
    return Outcome(not escaped, ",".join(sorted(set(refused.values()))), detail)


@attack("memory_hog", "own")
def memory_hog(ctx: Context) -> Outcome:
    """Take memory, touching every page, until something stops it."""
    del ctx
    held: list[bytearray] = []
    try:
        while len(held) * HOG_STEP < HOG_GOAL:
            held.append(bytearray(b"\x5a") * HOG_STEP)
            report({"attack": "memory_hog", "holding_mib": len(held) * HOG_STEP // _MIB})
    except MemoryError:
        size = len(held) * HOG_STEP // _MIB
        held.clear()
        return Outcome(True, "MemoryError", {"held_mib": size})
    return Outcome(False, "held it all", {"held_mib": len(held) * HOG_STEP // _MIB})


@attack("log_flood", "own")
def log_flood(ctx: Context) -> Outcome:
    """Write to stdout (the OS's log file of the app) without end, to fill the OS's disk.

    Once RLIMIT_FSIZE stops it the log cannot take a report line, so the
    outcome is the exit code: 0 refused (EFBIG), 1 wrote it all.
    """
    del ctx
    chunk = b"flood " * 10_000 + b"\n"
    written = 0
    try:
        while written < FILL_BYTES:
            written += os.write(1, chunk)
    except OSError as exc:
        sys.stderr.write("")  # the log is full: nothing more can be said there
        os._exit(0 if exc.errno == errno.EFBIG else 2)
    os._exit(1)
