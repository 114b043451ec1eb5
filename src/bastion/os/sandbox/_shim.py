"""The launcher that runs INSIDE an app sandbox, before the app: ``python -I -S shim.py SPEC``.

It imports only the standard library (and, once its layers are on,
``bastion.applibs`` from ``/run/bastion/lib``). In order it:

1. moves the applibs socket to fd 3 and closes every other fd above 2;
2. sets the rlimits (RLIMIT_NPROC, AS, NOFILE, FSIZE, CORE=0), inside the
   sandbox's own user namespace, so the process count is the app's own;
3. applies Landlock with the best ABI the kernel has: read-only for the
   system, the interpreter, ``/app``, ``/storage`` and ``/run/bastion``,
   read-write for ``/tmp`` and ``/dev/shm`` only; from ABI 4 no TCP bind or
   connect; from ABI 6 no signals or abstract unix sockets out of the sandbox;
4. sends one ``sandbox.hello`` on fd 3 saying which layers it applied, with only
   ``/run/bastion/lib`` added to the path (nothing of ``/app`` can run before it);
5. runs the entry point: a ``.py`` file with :func:`runpy.run_path` and
   ``sys.path = ["/app", "/run/bastion/lib", <stdlib>]``; anything else by ``execv``.

SPEC is JSON (paths and numbers only): see ``SandboxPolicy.shim_spec``.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import runpy
import stat
import sys
from typing import Any

__all__ = ["apply_landlock", "main", "prepare"]

#: The exit code when the launcher itself fails (EX_SOFTWARE), before the app ran.
EXIT_SHIM_FAILED = 70

_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446  # the same on x86_64 and aarch64
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38

# Landlock filesystem rights (linux/landlock.h), by the ABI that introduced them.
_EXECUTE, _WRITE_FILE, _READ_FILE, _READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_ABI1_ALL = (1 << 13) - 1  # EXECUTE .. MAKE_SYM
_REFER, _TRUNCATE, _IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
_FILE_RIGHTS = _EXECUTE | _WRITE_FILE | _READ_FILE | _TRUNCATE | _IOCTL_DEV
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1 << 0, 1 << 1


class _RulesetAttr(ctypes.Structure):
    _fields_ = (
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    )


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = (("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32))


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _syscall(number: int, *args: Any) -> int:
    result = int(_libc.syscall(ctypes.c_long(number), *args))
    if result < 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))
    return result


def _handled_fs(abi: int) -> int:
    rights = _ABI1_ALL
    if abi >= 2:
        rights |= _REFER
    if abi >= 3:
        rights |= _TRUNCATE
    if abi >= 5:
        rights |= _IOCTL_DEV
    return rights


def _add_rule(ruleset: int, path: str, access: int) -> bool:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return False  # not in this sandbox (no /storage, no /lib64): nothing to allow
    try:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            access &= _FILE_RIGHTS
        attr = _PathBeneathAttr(allowed_access=access, parent_fd=fd)
        _syscall(_SYS_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(_RULE_PATH_BENEATH), ctypes.byref(attr), 0)
    finally:
        os.close(fd)
    return True


def apply_landlock(readonly: list[str], readwrite: list[str], rw_files: list[str]) -> dict[str, Any]:
    """Restrict this process (and what it starts) to the given paths.

    Returns:
        What was applied: ``{"abi": N, "fs": true, "net": bool, "scoped": [...]}``, or
        ``{"abi": 0, "unavailable": reason}`` when the kernel has no Landlock.
    """
    try:
        abi = _syscall(_SYS_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION))
    except OSError as exc:
        return {"abi": 0, "unavailable": exc.strerror or str(exc)}
    handled = _handled_fs(abi)
    attr = _RulesetAttr(handled_access_fs=handled)
    size = 8
    if abi >= 4:
        attr.handled_access_net = _NET_BIND_TCP | _NET_CONNECT_TCP  # and no rule: no TCP at all
        size = 16
    scoped: list[str] = []
    if abi >= 6:
        attr.scoped = _SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL
        size = 24
        scoped = ["abstract_unix_socket", "signal"]
    ruleset = _syscall(_SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    try:
        read = _READ_FILE | _READ_DIR | _EXECUTE
        for path in readonly:
            _add_rule(ruleset, path, read)
        for path in readwrite:
            _add_rule(ruleset, path, handled & ~_EXECUTE)
        for path in rw_files:  # O_TRUNC too: a shell's "> /dev/null" needs it
            _add_rule(ruleset, path, (_READ_FILE | _WRITE_FILE | _TRUNCATE) & handled)
        _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        _syscall(_SYS_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0))
    finally:
        os.close(ruleset)
    return {"abi": abi, "fs": True, "net": abi >= 4, "scoped": scoped}


_RLIMITS = {
    "nproc": resource.RLIMIT_NPROC,
    "as": resource.RLIMIT_AS,
    "nofile": resource.RLIMIT_NOFILE,
    "fsize": resource.RLIMIT_FSIZE,
    "core": resource.RLIMIT_CORE,
}


def _set_rlimits(limits: dict[str, int]) -> dict[str, int]:
    applied: dict[str, int] = {}
    for name, value in limits.items():
        resource.setrlimit(_RLIMITS[name], (value, value))
        applied[name] = resource.getrlimit(_RLIMITS[name])[1]
    return applied


def _status_fields() -> dict[str, int]:
    fields: dict[str, int] = {}
    with open("/proc/self/status", encoding="ascii", errors="replace") as handle:  # noqa: PTH123 - stdlib only, no pathlib needed
        for line in handle:
            name, _, value = line.partition(":")
            if name in ("Seccomp", "Seccomp_filters", "NoNewPrivs", "CapEff") and value.strip().isalnum():
                fields[name] = int(value.strip(), 16) if name == "CapEff" else int(value.strip())
    return fields


def _move_socket(fd: int) -> None:
    if fd != 3:
        os.dup2(fd, 3)
        os.close(fd)
    os.set_inheritable(3, True)
    os.closerange(4, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    os.environ["BASTION_APPLIBS_FD"] = "3"


def prepare(argv: list[str]) -> tuple[str, list[str]]:
    """Apply the layers and say hello; returns the entry point and its arguments."""
    spec = json.loads(argv[1])
    _move_socket(int(spec["applibs_fd"]))
    rlimits = _set_rlimits(spec["rlimits"])
    landlock = spec["landlock"]
    applied = apply_landlock(landlock["ro"], landlock["rw"], landlock["rw_files"])
    # Only the OS's own library is on the path while the launcher imports it: with /app first, a
    # planted /app/bastion (or /app/socket.py) would run before the hello and could forge it.
    launcher_path = [str(p) for p in spec["launcher_path"]]
    sys.path[:0] = launcher_path
    sys.dont_write_bytecode = True
    from bastion.applibs import connection

    status = _status_fields()
    connection().call(
        "sandbox.hello",
        {
            "landlock": applied,
            "rlimits": rlimits,
            "seccomp_filters": status.get("Seccomp_filters", 0) if status.get("Seccomp") == 2 else 0,
            "no_new_privs": status.get("NoNewPrivs", 0) == 1,
            "capabilities": status.get("CapEff", -1),
            "uid": os.getuid(),
        },
    )
    del sys.path[: len(launcher_path)]
    sys.path[:0] = spec["path"]  # the app's own modules come first from here on
    return str(spec["entry"]), [str(arg) for arg in spec["args"]]


def main(argv: list[str]) -> None:
    """Apply the layers, say hello, run the app."""
    try:
        entry, args = prepare(argv)
    except Exception as exc:  # noqa: BLE001 - any failure before the app runs ends the sandbox, named
        sys.stderr.write(f"bastion sandbox launcher failed: {type(exc).__name__}: {exc}\n")
        raise SystemExit(EXIT_SHIM_FAILED) from None
    if not entry.endswith(".py"):
        os.execv(entry, [entry, *args])  # noqa: S606 - the app's own executable, inside its sandbox
    sys.argv = [entry, *args]
    for stream in (sys.stdout, sys.stderr):
        stream.reconfigure(line_buffering=True, write_through=True)  # type: ignore[union-attr]
    runpy.run_path(entry, run_name="__main__")


if __name__ == "__main__":
    main(sys.argv)
