"""Raw system calls through ctypes (the attacker does not need a binding), by architecture."""

from __future__ import annotations

import ctypes
import os
import platform

__all__ = ["NR", "libc", "syscall"]

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

#: Syscall numbers the attacks use, on the two architectures Bastion runs on.
_NUMBERS = {
    "x86_64": {
        "clone": 56, "pivot_root": 155, "init_module": 175, "add_key": 248, "keyctl": 250,
        "perf_event_open": 298, "name_to_handle_at": 303, "open_by_handle_at": 304, "bpf": 321,
        "userfaultfd": 323, "io_uring_setup": 425, "pidfd_open": 434, "pidfd_getfd": 438,
        "process_vm_readv": 310,
    },
    "aarch64": {
        "clone": 220, "pivot_root": 41, "init_module": 105, "add_key": 217, "keyctl": 219,
        "perf_event_open": 241, "name_to_handle_at": 264, "open_by_handle_at": 265, "bpf": 280,
        "userfaultfd": 282, "io_uring_setup": 425, "pidfd_open": 434, "pidfd_getfd": 438,
        "process_vm_readv": 270,
    },
}  # fmt: skip
NR = _NUMBERS.get(platform.machine(), _NUMBERS["x86_64"])


def syscall(name: str, *args: object) -> int:
    """Make the call; raise OSError on failure (if the filter lets it return at all)."""
    result = int(libc.syscall(ctypes.c_long(NR[name]), *args))
    if result < 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))
    return result


def check(result: int) -> int:
    """A libc call's result, as an OSError when it failed."""
    if result < 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))
    return result
