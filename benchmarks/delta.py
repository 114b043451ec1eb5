"""Benchmark: bytes sent for a delta OS update, per method, against xdelta3, on this project's own OS images.

It builds real OS images (:func:`bastion.images.os_build.build_os_image`) from
consecutive commits of this repository that changed the device runtime
(``git archive`` of each commit into a temp dir), plus a version bump of the
same tree, then for each pair makes a patch with every method, checks that it
rebuilds the new image, and measures the patch size. For the largest pair it
also applies each patch in a fresh subprocess and records the apply time and
the peak resident memory (VmHWM) above an idle interpreter's.

    python benchmarks/delta.py [--pairs 4] [--no-apply]

Last line: ``delta_bytes=<n> xdelta3_bytes=<n> ratio=<r>``, where ``delta_bytes``
is the default method's total over all pairs and ``xdelta3_bytes`` the total of
xdelta3's best setting per pair (``-9`` with its default, djw or no secondary
compression).
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import detools  # type: ignore[import-untyped]

from bastion.crypto.keys import PrivateKey, generate_private_key
from bastion.images.delta import DEFAULT_DELTA_METHOD, DeltaMethod, apply_delta, make_delta
from bastion.images.errors import ImageBuildError
from bastion.images.os_build import OS_PACKAGES, build_os_image

REPO = Path(__file__).resolve().parent.parent
RUNTIME_PATHS = [f"src/bastion/{p}" for p in OS_PACKAGES] + ["src/bastion/__init__.py"]
XDELTA3 = "xdelta3"
ZSTD_CLI = "zstd"
GNU_TIME = "/usr/bin/time"


@dataclass
class Pair:
    """Two consecutive OS images."""

    label: str
    old: Path
    new: Path
    sizes: dict[str, int] = field(default_factory=dict)


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], check=True, capture_output=True, text=True).stdout


def export_tree(rev: str, into: Path) -> Path:
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "src/bastion"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into / "src" / "bastion"


def build_pairs(work: Path, key: PrivateKey, count: int) -> list[Pair]:
    """Images of the last ``count + 1`` runtime-changing commits (consecutive pairs) and a version bump of HEAD."""
    commits = git("log", "--format=%h", f"-{count + 4}", "--", *RUNTIME_PATHS).split()
    images: list[tuple[str, Path]] = []
    for index, rev in enumerate(reversed(commits)):
        out = work / f"os-{rev}.img"
        try:
            build_os_image(out, f"1.{index}.0", 1, key, source_root=export_tree(rev, work / rev))
        except ImageBuildError as exc:  # an old commit may predate part of the runtime
            print(f"skip {rev}: {exc}", file=sys.stderr)
            continue
        images.append((rev, out))
    images = images[-(count + 1) :]
    pairs = [Pair(f"{a}->{b}", pa, pb) for (a, pa), (b, pb) in itertools.pairwise(images)]
    head = git("rev-parse", "--short", "HEAD").strip()
    source = export_tree("HEAD", work / "head")
    bump_old = build_os_image(work / "bump-old.img", "9.0.0", 1, key, source_root=source).path
    bump_new = build_os_image(work / "bump-new.img", "9.0.1", 1, key, source_root=source).path
    pairs.append(Pair(f"{head} 9.0.0->9.0.1", bump_old, bump_new))
    return pairs


def _detools_raw(old: Path, new: Path, out: Path, patch_type: str, algorithm: str) -> None:
    with old.open("rb") as f_old, new.open("rb") as f_new, out.open("wb") as f_out:
        detools.create_patch(f_old, f_new, f_out, compression="none", patch_type=patch_type, algorithm=algorithm)


def _run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


def _ours(method: DeltaMethod) -> Callable[[Path, Path, Path], None]:
    def make(old: Path, new: Path, out: Path) -> None:
        make_delta(old, new, out, method=method)

    return make


def makers() -> dict[str, Callable[[Path, Path, Path], None]]:
    """Every method measured: ours (the library's methods) and the reference tools."""
    table: dict[str, Callable[[Path, Path, Path], None]] = {}
    for method in DeltaMethod:
        table[method.value] = _ours(method)
    table["detools-hdiffpatch-none"] = lambda o, n, p: _detools_raw(o, n, p, "hdiffpatch", "hdiffpatch")
    table["detools-sequential-none"] = lambda o, n, p: _detools_raw(o, n, p, "sequential", "bsdiff")
    table["zstd-cli-19"] = lambda o, n, p: _run(
        [ZSTD_CLI, "-q", "-f", "-19", f"--patch-from={o}", str(n), "-o", str(p)]
    )
    for name, flags in (("xdelta3-9", []), ("xdelta3-9-djw", ["-S", "djw"]), ("xdelta3-9-nosec", ["-S", "none"])):
        table[name] = lambda o, n, p, f=flags: _run([XDELTA3, "-e", "-f", "-9", *f, "-s", str(o), str(n), str(p)])
    return table


def measure_sizes(pair: Pair, work: Path) -> None:
    for name, make in makers().items():
        patch = work / f"{name}.patch"
        make(pair.old, pair.new, patch)
        pair.sizes[name] = patch.stat().st_size


# -- apply time and memory, each in a fresh process ------------------------------------------


def worker(method: str, old: str, patch: str, out: str, sha: str) -> None:
    """Apply one patch (or nothing, for ``idle``) and print seconds and VmHWM (KiB) as JSON."""
    started = time.perf_counter()
    if method != "idle":
        apply_delta(Path(old), Path(patch), Path(out), method=DeltaMethod(method), expected_sha256=sha)
    elapsed = time.perf_counter() - started
    status = Path("/proc/self/status").read_text()
    hwm = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
    print(json.dumps({"seconds": elapsed, "hwm_kib": hwm}))


def apply_in_subprocess(method: str, old: Path, patch: Path, out: Path, sha: str) -> tuple[float, int]:
    cmd = [sys.executable, __file__, "--apply-worker", method, str(old), str(patch), str(out), sha]
    result = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    return float(result["seconds"]), int(result["hwm_kib"])


def apply_tool(cmd: list[str], work: Path) -> tuple[float, int]:
    """Run a tool; return its wall time and its peak RSS in KiB (-1 when GNU time is missing).

    wait4's ru_maxrss of a child carries this (large) process's mark across exec,
    so the tool runs under GNU time, whose own small footprint is the floor.
    """
    report = work / "time.txt"
    timed = [GNU_TIME, "-f", "%M", "-o", str(report), *cmd] if Path(GNU_TIME).exists() else cmd
    started = time.perf_counter()
    subprocess.run(timed, check=True, capture_output=True)
    elapsed = time.perf_counter() - started
    return elapsed, int(report.read_text().split()[-1]) if timed is not cmd else -1


def measure_apply(pair: Pair, work: Path) -> dict[str, tuple[float, int]]:
    import hashlib

    sha = hashlib.sha256(pair.new.read_bytes()).hexdigest()
    out = work / "rebuilt.img"
    results: dict[str, tuple[float, int]] = {}
    _, idle = apply_in_subprocess("idle", pair.old, pair.old, out, sha)
    for method in DeltaMethod:
        patch = work / f"{method.value}.patch"
        make_delta(pair.old, pair.new, patch, method=method)
        seconds, hwm = apply_in_subprocess(method.value, pair.old, patch, out, sha)
        results[method.value] = (seconds, max(0, hwm - idle))
        out.unlink()
    xpatch = work / "x.patch"
    _run([XDELTA3, "-e", "-f", "-9", "-S", "djw", "-s", str(pair.old), str(pair.new), str(xpatch)])
    results["xdelta3-9-djw"] = apply_tool([XDELTA3, "-d", "-f", "-s", str(pair.old), str(xpatch), str(out)], work)
    zpatch = work / "z.patch"
    _run([ZSTD_CLI, "-q", "-f", "-19", f"--patch-from={pair.old}", str(pair.new), "-o", str(zpatch)])
    results["zstd-cli-19"] = apply_tool(
        [ZSTD_CLI, "-q", "-d", "-f", f"--patch-from={pair.old}", str(zpatch), "-o", str(out)], work
    )
    return results


def print_tables(pairs: list[Pair], applied: dict[str, tuple[float, int]] | None) -> None:
    names = list(pairs[0].sizes)
    width = max(len(n) for n in names) + 2
    print(f"{'method':<{width}}" + "".join(f"{p.label:>26}" for p in pairs) + f"{'total':>10}")
    print(f"{'(full image)':<{width}}" + "".join(f"{p.new.stat().st_size:>26}" for p in pairs))
    for name in names:
        total = sum(p.sizes[name] for p in pairs)
        print(f"{name:<{width}}" + "".join(f"{p.sizes[name]:>26}" for p in pairs) + f"{total:>10}")
    if applied:
        print()
        print(f"apply on {pairs[0].label}: {'method':<24}{'seconds':>10}{'peak RSS KiB':>14}")
        for name, (seconds, kib) in applied.items():
            note = " (above an idle interpreter)" if name in {m.value for m in DeltaMethod} else " (whole tool process)"
            print(f"{'':<{len(pairs[0].label) + 10}}{name:<24}{seconds:>10.4f}{kib:>14}{note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=4, help="consecutive commit pairs (plus one version bump)")
    parser.add_argument("--no-apply", action="store_true", help="skip the apply time and memory measurement")
    parser.add_argument("--apply-worker", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.apply_worker:
        worker(*args.apply_worker)
        return
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    with tempfile.TemporaryDirectory(prefix="bastion-delta-") as tmp:
        work = Path(tmp)
        pairs = build_pairs(work, generate_private_key(), args.pairs)
        for pair in pairs:
            measure_sizes(pair, work)
        largest = max(pairs, key=lambda p: p.sizes[DEFAULT_DELTA_METHOD.value])
        applied = None if args.no_apply else measure_apply(largest, work)
        pairs.sort(key=lambda p: p is not largest)
        print_tables(pairs, applied)
    xdelta = sum(min(v for k, v in p.sizes.items() if k.startswith("xdelta3")) for p in pairs)
    ours = sum(p.sizes[DEFAULT_DELTA_METHOD.value] for p in pairs)
    print()
    print(f"default method: {DEFAULT_DELTA_METHOD.value}; xdelta3 = its best setting per pair")
    print(f"delta_bytes={ours} xdelta3_bytes={xdelta} ratio={ours / xdelta:.3f}")


if __name__ == "__main__":
    main()
