"""A bubblewrap command line, built from calls rather than strings.

Flatpak's ``FlatpakBwrap`` is the model: the policy decides *what*, this class
only spells it as ``bwrap`` arguments, so a unit test can read the argv. Paths
are passed as given (absolute); bubblewrap creates the parents of each
destination on its own empty root, so anything not bound does not exist.

Example:
    >>> cmd = BwrapCommand().unshare_all().die_with_parent().ro_bind("/usr", "/usr")
    >>> cmd.argv(["/usr/bin/true"])[:4]
    ['bwrap', '--unshare-all', '--die-with-parent', '--ro-bind']
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field

__all__ = ["BWRAP", "BwrapCommand", "find_bwrap"]

#: The program name looked up on PATH.
BWRAP = "bwrap"


def find_bwrap() -> str | None:
    """The absolute path of bubblewrap, or ``None`` if it is not installed."""
    return shutil.which(BWRAP)


@dataclass
class BwrapCommand:
    """Accumulates bubblewrap options in order.

    Attributes:
        args: the options so far (without the program and the command).
        fds: fds the command needs kept open in the child (``pass_fds``).
    """

    program: str = BWRAP
    args: list[str] = field(default_factory=list)
    fds: list[int] = field(default_factory=list)

    def _add(self, *values: str) -> BwrapCommand:
        self.args.extend(values)
        return self

    def unshare_all(self) -> BwrapCommand:
        """New user, ipc, pid, net, uts and cgroup namespaces."""
        return self._add("--unshare-all")

    def unshare(self, *kinds: str) -> BwrapCommand:
        """Selected namespaces: ``user``, ``ipc``, ``pid``, ``net``, ``uts``, ``cgroup``."""
        for kind in kinds:
            self._add(f"--unshare-{kind}")
        return self

    def share_net(self) -> BwrapCommand:
        """Keep the network namespace (after :meth:`unshare_all`)."""
        return self._add("--share-net")

    def uid(self, uid: int, gid: int) -> BwrapCommand:
        """The uid and gid inside the user namespace."""
        return self._add("--uid", str(uid), "--gid", str(gid))

    def hostname(self, name: str) -> BwrapCommand:
        """The hostname inside the uts namespace."""
        return self._add("--hostname", name)

    def die_with_parent(self) -> BwrapCommand:
        """Kill the sandbox when the process that started bwrap dies."""
        return self._add("--die-with-parent")

    def new_session(self) -> BwrapCommand:
        """A new terminal session (no TIOCSTI into the caller's terminal)."""
        return self._add("--new-session")

    def cap_drop_all(self) -> BwrapCommand:
        """Drop every capability (bubblewrap also sets no_new_privs)."""
        return self._add("--cap-drop", "ALL")

    def cap_add(self, *caps: str) -> BwrapCommand:
        """Keep selected capabilities (only meaningful when bwrap runs as root)."""
        for cap in caps:
            self._add("--cap-add", cap)
        return self

    def ro_bind(self, source: str, dest: str) -> BwrapCommand:
        """Bind ``source`` read-only at ``dest``."""
        return self._add("--ro-bind", source, dest)

    def bind(self, source: str, dest: str) -> BwrapCommand:
        """Bind ``source`` read-write at ``dest``."""
        return self._add("--bind", source, dest)

    def dev_bind(self, source: str, dest: str) -> BwrapCommand:
        """Bind a device node (for an emulated peripheral)."""
        return self._add("--dev-bind", source, dest)

    def dev(self, dest: str = "/dev") -> BwrapCommand:
        """A minimal ``/dev`` (null, zero, full, random, urandom, tty, a private devpts)."""
        return self._add("--dev", dest)

    def proc(self, dest: str = "/proc") -> BwrapCommand:
        """A ``/proc`` of the sandbox's own pid namespace."""
        return self._add("--proc", dest)

    def tmpfs(self, dest: str, *, size_bytes: int | None = None, perms: int | None = None) -> BwrapCommand:
        """A private tmpfs, bounded by ``size_bytes``."""
        if perms is not None:
            self._add("--perms", f"{perms:04o}")
        if size_bytes is not None:
            self._add("--size", str(size_bytes))
        return self._add("--tmpfs", dest)

    def dir(self, dest: str, *, perms: int | None = None) -> BwrapCommand:
        """An empty directory."""
        if perms is not None:
            self._add("--perms", f"{perms:04o}")
        return self._add("--dir", dest)

    def symlink(self, target: str, dest: str) -> BwrapCommand:
        """A symlink ``dest`` -> ``target`` (e.g. a merged-/usr host's ``/lib -> usr/lib``)."""
        return self._add("--symlink", target, dest)

    def remount_ro(self, dest: str) -> BwrapCommand:
        """Make a mount point read-only."""
        return self._add("--remount-ro", dest)

    def seccomp(self, fd: int) -> BwrapCommand:
        """Load the compiled BPF program readable from ``fd`` before running the command."""
        self.fds.append(fd)
        return self._add("--seccomp", str(fd))

    def info_fd(self, fd: int) -> BwrapCommand:
        """Have bubblewrap write its JSON info (``child-pid``, namespace ids) to ``fd`` once set up."""
        self.fds.append(fd)
        return self._add("--info-fd", str(fd))

    def keep_fd(self, fd: int) -> BwrapCommand:
        """Keep an fd open into the sandbox (bubblewrap passes inherited fds through)."""
        self.fds.append(fd)
        return self

    def clearenv(self) -> BwrapCommand:
        """Start the command with an empty environment."""
        return self._add("--clearenv")

    def setenv(self, name: str, value: str) -> BwrapCommand:
        """Set one environment variable for the command."""
        return self._add("--setenv", name, value)

    def chdir(self, path: str) -> BwrapCommand:
        """The command's working directory."""
        return self._add("--chdir", path)

    def argv(self, command: list[str]) -> list[str]:
        """The whole command line: ``bwrap OPTIONS -- COMMAND``."""
        return [self.program, *self.args, "--", *command]
