"""Check, once per boot, that this host can build the app sandbox.

Required: bubblewrap, user namespaces (and the other namespaces bubblewrap
makes), seccomp with libseccomp. Optional: Landlock (its ABI, or why not, goes
into each app's layers). A missing requirement raises
:class:`SandboxUnavailableError` naming it and the command that fixes it; the
app manager then starts no app and records ``sandbox_unavailable``.

Example::

    features = probe()                  # or probe(bwrap="/opt/bin/bwrap")
    features.landlock_abi               # 7 here; 0 when the kernel has none
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bastion.os.sandbox.bwrap import BWRAP, BwrapCommand
from bastion.os.sandbox.errors import SandboxUnavailableError
from bastion.os.sandbox.policy import NAMESPACES, UID_BASE
from bastion.os.sandbox.seccomp import bpf_memfd, compile_bpf

__all__ = ["PROBE_TIMEOUT_S", "SandboxFeatures", "landlock_abi", "probe"]

#: Bound on the trial sandbox run.
PROBE_TIMEOUT_S = 10.0
#: Bound on bubblewrap's own message quoted in an error.
_MAX_STDERR = 300
_SYS_LANDLOCK_CREATE_RULESET = 444


@dataclass(frozen=True)
class SandboxFeatures:
    """What the host offers the app sandbox.

    Attributes:
        bwrap: the bubblewrap executable.
        seccomp_bpf: the compiled app filter (reused for every app).
        landlock_abi: the kernel's Landlock ABI, 0 if it has none.
        landlock_missing: why Landlock is unavailable (``None`` if it is available).
    """

    bwrap: str
    seccomp_bpf: bytes
    landlock_abi: int
    landlock_missing: str | None


def landlock_abi() -> tuple[int, str | None]:
    """The kernel's Landlock ABI version, or ``(0, reason)``."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    abi = int(libc.syscall(ctypes.c_long(_SYS_LANDLOCK_CREATE_RULESET), None, ctypes.c_size_t(0), ctypes.c_uint32(1)))
    if abi > 0:
        return abi, None
    error = ctypes.get_errno()
    return 0, f"Landlock is {'disabled at boot' if error == 95 else 'not in this kernel'} ({os.strerror(error)})"


def _read_int(path: str) -> int | None:
    try:
        return int(Path(path).read_text().strip())
    except (OSError, ValueError):
        return None


def _check_userns() -> None:
    if _read_int("/proc/sys/user/max_user_namespaces") == 0:
        raise SandboxUnavailableError(
            "user namespaces are disabled (user.max_user_namespaces = 0)", "sysctl -w user.max_user_namespaces=15000"
        )
    if os.geteuid() != 0 and _read_int("/proc/sys/kernel/unprivileged_userns_clone") == 0:
        raise SandboxUnavailableError(
            "unprivileged user namespaces are disabled", "sysctl -w kernel.unprivileged_userns_clone=1"
        )


def _check_seccomp() -> None:
    try:
        status = Path("/proc/self/status").read_text()
    except OSError as exc:
        raise SandboxUnavailableError("/proc/self/status cannot be read", "mount /proc") from exc
    if "\nSeccomp:" not in status:
        raise SandboxUnavailableError("the kernel has no seccomp (CONFIG_SECCOMP)", "use a kernel with CONFIG_SECCOMP")


def _trial(bwrap: str, program: bytes) -> None:
    true = shutil.which("true", path="/usr/bin:/bin")
    if true is None:
        raise SandboxUnavailableError(
            "/usr/bin/true is missing (the sandbox trial runs it)", "apt-get install coreutils"
        )
    fd = bpf_memfd(program)
    try:
        cmd = BwrapCommand(program=bwrap).unshare(*NAMESPACES).uid(UID_BASE, UID_BASE)
        cmd.die_with_parent().cap_drop_all().ro_bind("/usr", "/usr")
        for path in ("/lib", "/lib64", "/bin"):
            host = Path(path)
            if host.is_symlink():
                cmd.symlink(str(host.readlink()), path)
            elif host.is_dir():
                cmd.ro_bind(path, path)
        cmd.proc("/proc").dev("/dev").seccomp(fd)
        result = subprocess.run(
            cmd.argv([true]),
            pass_fds=cmd.fds,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=PROBE_TIMEOUT_S,
            check=False,
            env={"PATH": "/usr/bin:/bin"},
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SandboxUnavailableError(
            f"bubblewrap could not run a trial sandbox: {exc}", "apt-get install bubblewrap"
        ) from exc
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
    if result.returncode != 0:
        detail = result.stderr.decode("utf-8", "replace").strip()[:_MAX_STDERR]
        raise SandboxUnavailableError(
            f"bubblewrap cannot create the app namespaces: {detail or f'exit code {result.returncode}'}",
            "allow user namespaces: sysctl -w kernel.unprivileged_userns_clone=1 user.max_user_namespaces=15000",
        )


def probe(*, bwrap: str | None = None) -> SandboxFeatures:
    """Check every feature the app sandbox needs.

    Args:
        bwrap: the bubblewrap executable (default: ``bwrap`` on PATH).

    Raises:
        SandboxUnavailableError: a required feature is missing; it says which and how to get it.
    """
    found = shutil.which(bwrap or BWRAP)
    if found is None:
        where = f"{bwrap} does not exist" if bwrap else "bubblewrap (bwrap) is not on PATH"
        raise SandboxUnavailableError(where, "apt-get install bubblewrap")
    _check_userns()
    _check_seccomp()
    program = compile_bpf()
    _trial(found, program)
    abi, missing = landlock_abi()
    return SandboxFeatures(bwrap=found, seccomp_bpf=program, landlock_abi=abi, landlock_missing=missing)
