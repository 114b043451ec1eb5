"""The sandbox policy as data: derived from the manifest, spelled as bubblewrap argv (pinned here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bastion.images.manifest import validate_manifest
from bastion.os.sandbox import cgroups, layers, policy, seccomp
from bastion.os.sandbox.cgroups import AppCgroups
from bastion.os.sandbox.policy import (
    BASTION_LIB,
    SHIM_PATH,
    HostRuntime,
    SandboxLimits,
    app_uid,
    build_policy,
    bwrap_command,
    shim_argv,
)

CID = "6f0e4c1a-2b3d-4e5f-8a9b-0c1d2e3f4a5b"
RUNTIME = HostRuntime(
    python="/opt/py/bin/python3.11",
    python_prefix="/opt/py",
    package_dir="/srv/os/bastion",
    shim="/srv/os/bastion/os/sandbox/_shim.py",
    system_dirs=(("/usr", None), ("/lib", "usr/lib"), ("/lib64", "usr/lib64"), ("/bin", "usr/bin")),
)


def manifest(**capabilities: object) -> object:
    return validate_manifest(
        json.dumps(
            {
                "SchemaVersion": 1,
                "Name": "x",
                "ComponentId": CID,
                "EntryPoint": "bin/main.py",
                "CmdArgs": ["--beats", "3"],
                "ApplicationType": "Default",
                "Capabilities": capabilities,
            }
        ).encode()
    )


def make_policy(**capabilities: object) -> policy.SandboxPolicy:
    return build_policy(
        component_id=CID,
        version="1.2.3",
        manifest=manifest(**capabilities),  # type: ignore[arg-type]
        app_dir=Path("/dev-dir/flash/apps") / CID / "1.2.3",
        storage_dir=Path("/dev-dir/os-state/app-data") / CID,
        uid=12345,
        runtime=RUNTIME,
        limits=SandboxLimits(tmp_bytes=1 << 20),
    )


def pairs(argv: list[str], option: str, arity: int = 2) -> list[tuple[str, ...]]:
    return [tuple(argv[i + 1 : i + 1 + arity]) for i, a in enumerate(argv) if a == option]


def test_argv_pins_namespaces_identity_and_privileges() -> None:
    argv = bwrap_command(make_policy(), seccomp_fd=7, info_fd=8).argv(["cmd"])
    options = argv[: argv.index("--")]
    for kind in ("user", "pid", "ipc", "uts", "cgroup", "net"):
        assert f"--unshare-{kind}" in options
    assert "--share-net" not in options
    assert not any(a.endswith("-try") for a in options)  # never silently without a namespace
    assert pairs(options, "--uid", 1) == [("12345",)]
    assert pairs(options, "--gid", 1) == [("12345",)]
    assert pairs(options, "--cap-drop", 1) == [("ALL",)]
    assert "--cap-add" not in options
    for flag in ("--die-with-parent", "--new-session", "--clearenv"):
        assert flag in options
    assert pairs(options, "--seccomp", 1) == [("7",)]
    assert pairs(options, "--info-fd", 1) == [("8",)]
    assert bwrap_command(make_policy(), seccomp_fd=7, info_fd=8).fds == [8, 7]


def test_argv_pins_the_filesystem_layout() -> None:
    options = bwrap_command(make_policy(), seccomp_fd=7, info_fd=8).args
    assert "--bind" not in options  # nothing of the host is writable
    assert "--dev-bind" not in options
    assert pairs(options, "--ro-bind") == [
        ("/usr", "/usr"),
        ("/opt/py", "/opt/py"),
        (f"/dev-dir/flash/apps/{CID}/1.2.3", "/app"),
        ("/srv/os/bastion/__init__.py", f"{BASTION_LIB}/bastion/__init__.py"),
        ("/srv/os/bastion/applibs", f"{BASTION_LIB}/bastion/applibs"),
        ("/srv/os/bastion/os/sandbox/_shim.py", SHIM_PATH),
    ]  # no /storage without MutableStorage; only applibs of the OS package
    assert pairs(options, "--symlink") == [("usr/lib", "/lib"), ("usr/lib64", "/lib64"), ("usr/bin", "/bin")]
    assert pairs(options, "--dev", 1) == [("/dev",)]
    assert pairs(options, "--proc", 1) == [("/proc",)]
    tmp = next(i for i, a in enumerate(options) if a == "/tmp" and options[i - 1] == "--tmpfs")
    assert options[tmp - 3 : tmp] == ["--size", str(1 << 20), "--tmpfs"]  # bounded
    assert pairs(options, "--remount-ro", 1) == [("/dev",), ("/",)]
    mounts = ("--ro-bind", "--symlink", "--dev", "--proc", "--tmpfs")
    last_mount = max(i for i, a in enumerate(options) if a in mounts)
    assert options.index("--remount-ro") > last_mount  # the sandbox's own root is read-only at the end
    assert pairs(options, "--chdir", 1) == [("/app",)]


def test_mutable_storage_is_bound_read_only_and_named_in_the_env() -> None:
    made = make_policy(MutableStorage={"SizeKB": 64})
    options = bwrap_command(made, seccomp_fd=7, info_fd=8).args
    assert (f"/dev-dir/os-state/app-data/{CID}", "/storage") in pairs(options, "--ro-bind")
    assert ("BASTION_APP_STORAGE", "/storage") in pairs(options, "--setenv")
    assert made.to_json()["mounts"]["/storage"] == "ro"


def test_the_environment_is_minimal_and_names_fd_3() -> None:
    env = dict(pairs(bwrap_command(make_policy(), seccomp_fd=7, info_fd=8).args, "--setenv"))
    assert env == {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "MALLOC_ARENA_MAX": "2",
        "HOME": "/tmp",
        "TMPDIR": "/tmp",
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "BASTION_APP_COMPONENT_ID": CID,
        "BASTION_APP_VERSION": "1.2.3",
        "BASTION_APPLIBS_FD": "3",
    }


def test_the_command_is_the_real_interpreter_isolated_on_the_shim() -> None:
    made = make_policy()
    argv = shim_argv(made, applibs_fd=17)
    assert argv[:4] == ["/opt/py/bin/python3.11", "-I", "-S", SHIM_PATH]
    spec = json.loads(argv[4])
    assert spec["entry"] == "/app/bin/main.py"
    assert spec["args"] == ["--beats", "3"]
    assert spec["path"] == ["/app", BASTION_LIB]
    assert spec["launcher_path"] == [BASTION_LIB]  # nothing of /app is importable before the hello
    assert spec["applibs_fd"] == 17
    assert spec["rlimits"]["core"] == 0
    assert spec["landlock"]["rw"] == ["/tmp", "/dev/shm"]
    assert "/app" in spec["landlock"]["ro"]
    assert "/storage" not in spec["landlock"]["ro"]


def test_a_prefix_under_usr_is_not_bound_twice() -> None:
    runtime = HostRuntime(
        "/usr/bin/python3.11", "/usr", "/srv/bastion", "/srv/bastion/os/sandbox/_shim.py", (("/usr", None),)
    )
    made = build_policy(
        component_id=CID,
        version="1.0.0",
        manifest=manifest(),  # type: ignore[arg-type]
        app_dir=Path("/a"),
        storage_dir=Path("/s"),
        uid=10000,
        runtime=runtime,
    )
    assert pairs(bwrap_command(made, seccomp_fd=3, info_fd=4).args, "--ro-bind")[0] == ("/usr", "/usr")
    assert ("/usr", "/usr") not in pairs(bwrap_command(made, seccomp_fd=3, info_fd=4).args, "--ro-bind")[1:]


def test_app_uids_are_stable_and_distinct() -> None:
    first = app_uid(CID)
    assert app_uid(CID) == first
    assert policy.UID_BASE <= first < policy.UID_BASE + policy.UID_RANGE
    assert app_uid(CID, frozenset({first})) != first


def test_the_report_form_is_json_and_summarized() -> None:
    made = make_policy()
    shown = made.to_json()
    assert json.loads(json.dumps(shown)) == shown
    assert shown["namespaces"] == ["user", "pid", "ipc", "uts", "cgroup", "net"]
    line = layers.summarize({"sandbox": "bubblewrap", **shown, "seccomp_filters": 1, "landlock": {"abi": 6}})
    assert line.startswith("bwrap uid=12345 ns=user,pid,ipc,uts,cgroup,net seccomp landlock=6")
    assert len(line) <= layers.MAX_SUMMARY_CHARS
    assert layers.summarize({"sandbox": "unavailable", "missing": "no bwrap"}) == "unavailable: no bwrap"
    assert "seccomp=NOT-LOADED" in layers.summarize({"sandbox": "bubblewrap", "seccomp_filters": 0})


def test_the_seccomp_filter_compiles_and_denies_what_the_issue_names() -> None:
    program = seccomp.compile_bpf()
    assert len(program) % 8 == 0  # struct sock_filter
    assert len(program) > 8 * len(seccomp.DENIED_SYSCALLS)
    for name in ("ptrace", "process_vm_readv", "process_vm_writev", "mount", "bpf", "keyctl", "perf_event_open"):
        assert name in seccomp.DENIED_SYSCALLS
    for name in ("unshare", "setns", "kexec_load", "init_module", "userfaultfd", "io_uring_setup", "open_by_handle_at"):
        assert name in seccomp.DENIED_SYSCALLS
    assert seccomp.SECCOMP_KILLED_EXIT == 159


@pytest.mark.parametrize("version", [1, 2])
def test_cgroups_are_made_and_removed_under_a_writable_tree(tmp_path: Path, version: int) -> None:
    if version == 1:
        for name in ("pids", "memory"):
            (tmp_path / name).mkdir()
    else:
        (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")
    tree = AppCgroups(tmp_path)
    group = tree.create(CID, pids_max=34, memory_bytes=1 << 26)
    assert group is not None
    assert (group.dirs[0] / "pids.max").read_text() == "34"
    memory_file = "memory.limit_in_bytes" if version == 1 else "memory.max"
    assert (group.dirs[-1] / memory_file).read_text() == str(1 << 26)
    wrapped = group.wrap(["bwrap", "--", "x"])
    assert wrapped[:2] == [cgroups._SHELL, "-c"]
    assert wrapped[-3:] == ["bwrap", "--", "x"]
    for directory in group.dirs:
        for child in directory.iterdir():
            child.unlink()  # a real cgroup's files vanish with it
    group.remove()
    assert not any(d.exists() for d in group.dirs)


def test_no_cgroup_where_none_is_writable(tmp_path: Path) -> None:
    tree = AppCgroups(tmp_path / "absent")
    assert tree.create(CID, pids_max=3, memory_bytes=None) is None
    assert tree.missing is not None
    assert "rlimits" in tree.missing
