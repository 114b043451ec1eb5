#!/usr/bin/env python3
"""Run Bastion's atheris fuzz harnesses, each in its own subprocess, for a set time.

A harness is a file ``fuzz/harnesses/fuzz_<name>.py`` that defines
``test_one_input(data: bytes) -> None``: it feeds ``data`` to one parser and
swallows only that parser's documented error types, so any other exception is
a finding. It may define ``SEEDS: list[bytes]`` and ``MAX_LEN: int``; seed
files may also live in ``fuzz/corpus/<name>/`` and saved crashers in
``fuzz/regressions/<name>/`` (both are replayed first, as seeds).

Every harness found is run, one at a time, with libFuzzer's
``-max_total_time``. The child instruments the ``bastion`` package (atheris'
coverage feedback), catches what the harness lets through, writes each distinct
finding (by exception type and innermost Bastion frame) to the output
directory, and keeps fuzzing, so one run reports every distinct crash it meets.
Timeouts and out-of-memory stops are findings too (libFuzzer writes them).

Examples::

    python tools/fuzz.py --seconds 60                  # make fuzz
    python tools/fuzz.py --seconds 5 --only cose eat   # two harnesses, briefly
    python tools/fuzz.py --list
    python tools/fuzz.py --json --seconds 20           # a machine-readable summary
    python tools/fuzz.py --harness path/to/fuzz_x.py   # a harness file from elsewhere

Exit status: 0 when no harness found anything, 1 when one did, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HARNESS_DIR = ROOT / "fuzz" / "harnesses"
#: Default time per harness (``make fuzz`` passes FUZZ_SECONDS).
DEFAULT_SECONDS = 60
#: libFuzzer bounds for one input: seconds, resident memory, and the default input size.
INPUT_TIMEOUT_S = 20
RSS_LIMIT_MB = 2048
DEFAULT_MAX_LEN = 16 * 1024
#: Extra wall-clock time a child gets beyond its budget (start-up, seeds) before it is stopped.
GRACE_S = 60
#: Bound on distinct findings one child records (each also costs a file).
MAX_FINDINGS = 32
#: How much of a child's output (its tail) the parent reads back.
MAX_OUTPUT_BYTES = 4 * 1024 * 1024
_EXECS_LINE = re.compile(r"^(?:Done (\d+) runs|#(\d+)\s)")
_LIBFUZZER_ARTIFACT = re.compile(r"^(crash|timeout|oom|leak|slow-unit)-")


@dataclasses.dataclass
class Finding:
    """One distinct failure: what was raised (or crashed) and the input that does it."""

    kind: str
    signature: str
    artifact: str


@dataclasses.dataclass
class Result:
    """The outcome of fuzzing one harness."""

    name: str
    seconds: float
    execs: int
    seeds: int
    corpus: int
    exit_code: int
    findings: list[Finding]

    @property
    def execs_per_second(self) -> int:
        """Average executions per second over the run."""
        return int(self.execs / self.seconds) if self.seconds > 0 else 0


def harness_name(path: Path) -> str:
    """``fuzz/harnesses/fuzz_cose.py`` -> ``cose``."""
    return path.stem.removeprefix("fuzz_")


def discover(harness_dir: Path = HARNESS_DIR) -> list[Path]:
    """Every ``fuzz_*.py`` harness, sorted by name."""
    return sorted(harness_dir.glob("fuzz_*.py"))


def load_harness(path: Path) -> ModuleType:
    """Import a harness file as a module (its directory goes on ``sys.path`` for shared helpers)."""
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(f"bastion_fuzz_{harness_name(path)}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load harness {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not callable(getattr(module, "test_one_input", None)):
        raise ImportError(f"{path} defines no test_one_input(data: bytes)")
    return module


def saved_inputs(name: str, fuzz_dir: Path = ROOT / "fuzz") -> list[Path]:
    """Seed files (``corpus/<name>/``) and saved regression inputs (``regressions/<name>/``) of a harness, sorted."""
    files: list[Path] = []
    for base in (fuzz_dir / "corpus" / name, fuzz_dir / "regressions" / name):
        if base.is_dir():
            files.extend(p for p in sorted(base.iterdir()) if p.is_file() and not p.name.startswith("."))
    return files


def all_inputs(module: ModuleType, name: str, fuzz_dir: Path = ROOT / "fuzz") -> list[tuple[str, bytes]]:
    """(label, bytes) for every in-module seed and every saved input of a harness."""
    inputs = [(f"SEEDS[{i}]", bytes(seed)) for i, seed in enumerate(getattr(module, "SEEDS", []))]
    inputs.extend((str(p), p.read_bytes()) for p in saved_inputs(name, fuzz_dir))
    return inputs


# --- the child: one harness under atheris ---------------------------------------------


def _signature(exc: BaseException) -> str:
    """Exception type plus the innermost frame inside Bastion (or the innermost frame at all)."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "/bastion/" in f.filename or "/fuzz/harnesses/" in f.filename]
    chosen = ours or list(frames)
    where = f"{Path(chosen[-1].filename).name}:{chosen[-1].lineno}" if chosen else "?"
    return f"{type(exc).__name__}@{where}"


def _child(path: Path, seconds: int, out_dir: Path, work_dir: Path, seed_dir: Path) -> None:
    import atheris  # only the child needs it

    name = harness_name(path)
    with atheris.instrument_imports(include=["bastion"]):
        module = load_harness(path)
    target = module.test_one_input
    seen: set[str] = set()
    for _label, data in all_inputs(module, name, path.parent.parent):
        (seed_dir / hashlib.sha1(data).hexdigest()).write_bytes(data)  # noqa: S324 - a file name, not security

    def one_input(data: bytes) -> None:
        try:
            target(data)
        except Exception as exc:  # noqa: BLE001 - anything the harness lets through is a finding
            signature = _signature(exc)
            if signature in seen or len(seen) >= MAX_FINDINGS:
                return
            seen.add(signature)
            digest = hashlib.sha1(data).hexdigest()  # noqa: S324 - a file name, not security
            artifact = out_dir / f"finding-{name}-{digest}"
            artifact.write_bytes(data)
            (out_dir / f"finding-{name}-{digest}.txt").write_text(
                f"signature: {signature}\n" + "".join(traceback.format_exception(exc)), encoding="utf-8"
            )
            print(f"BASTION-FUZZ-FINDING {signature} {artifact} {str(exc)[:200]!r}", file=sys.stderr, flush=True)

    max_len = int(getattr(module, "MAX_LEN", DEFAULT_MAX_LEN))
    argv = [
        sys.argv[0],
        f"-max_total_time={seconds}",
        f"-timeout={INPUT_TIMEOUT_S}",
        f"-rss_limit_mb={RSS_LIMIT_MB}",
        f"-max_len={max_len}",
        f"-artifact_prefix={out_dir}/",
        "-print_final_stats=1",
        str(work_dir),
        str(seed_dir),
    ]
    atheris.Setup(argv, one_input)
    atheris.Fuzz()


# --- the parent ---------------------------------------------------------------------------


def _parse_child_output(text: str, out_dir: Path, name: str) -> tuple[int, list[Finding]]:
    execs = 0
    findings: list[Finding] = []
    for line in text.splitlines():
        if match := _EXECS_LINE.match(line):
            execs = max(execs, int(match.group(1) or match.group(2)))
    for artifact in sorted(out_dir.iterdir()):
        if artifact.name.startswith("finding-") and artifact.suffix == ".txt":
            signature = artifact.read_text(encoding="utf-8").partition("\n")[0].removeprefix("signature: ")
            findings.append(Finding("exception", signature, str(artifact.with_suffix(""))))
        elif _LIBFUZZER_ARTIFACT.match(artifact.name):
            kind = artifact.name.split("-", 1)[0]
            kept = artifact.with_name(f"{kind}-{name}-{artifact.name.split('-', 1)[1]}")
            artifact.rename(kept)
            findings.append(Finding(kind, f"libFuzzer {kind}", str(kept)))
    return execs, findings


def run_harness(path: Path, *, seconds: int, out_dir: Path, log: Path | None = None) -> Result:
    """Fuzz one harness in a subprocess for ``seconds`` and collect what it found."""
    name = harness_name(path)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"bastion-fuzz-{name}-") as tmp:
        work_dir, seed_dir, raw_dir = Path(tmp, "corpus"), Path(tmp, "seeds"), Path(tmp, "artifacts")
        for d in (work_dir, seed_dir, raw_dir):
            d.mkdir()
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(path), "--seconds", str(seconds)]
        cmd += ["--out", str(raw_dir), "--work", str(work_dir), "--seed-dir", str(seed_dir)]
        env = dict(os.environ, PYTHONHASHSEED="0")
        started = time.monotonic()
        output_path = Path(tmp, "output.log")  # a file, not a pipe: a chatty harness cannot fill memory
        with output_path.open("wb") as output_file:
            try:
                code = subprocess.run(
                    cmd, stdout=output_file, stderr=subprocess.STDOUT, timeout=seconds + GRACE_S, env=env, check=False
                ).returncode
            except subprocess.TimeoutExpired:
                code = -9
        elapsed = time.monotonic() - started
        output = output_path.read_bytes()[-MAX_OUTPUT_BYTES:].decode("utf-8", errors="replace")
        if log is not None:
            log.write_text(output, encoding="utf-8")
        execs, findings = _parse_child_output(output, raw_dir, name)
        for item in raw_dir.iterdir():
            shutil.move(str(item), out_dir / item.name)
        for finding in findings:
            finding.artifact = str(out_dir / Path(finding.artifact).name)
        if code not in (0, 77) and not findings:
            findings.append(Finding("harness-error", f"exit status {code}", _tail(output)))
        return Result(
            name=name,
            seconds=round(elapsed, 1),
            execs=execs,
            seeds=len(list(seed_dir.iterdir())),
            corpus=len(list(work_dir.iterdir())),
            exit_code=code,
            findings=findings,
        )


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _print_table(results: list[Result]) -> None:
    print(f"{'harness':<22} {'seconds':>8} {'execs':>10} {'exec/s':>8} {'seeds':>6} {'corpus':>7}  findings")
    for r in results:
        print(
            f"{r.name:<22} {r.seconds:>8} {r.execs:>10} {r.execs_per_second:>8} {r.seeds:>6} {r.corpus:>7}"
            f"  {len(r.findings)}"
        )
        for f in r.findings:
            print(f"    {f.kind}: {f.signature}\n      input: {f.artifact}")


def _summary(results: list[Result]) -> dict[str, Any]:
    return {
        "harnesses": [{**dataclasses.asdict(r), "execs_per_second": r.execs_per_second} for r in results],
        "total_execs": sum(r.execs for r in results),
        "total_findings": sum(len(r.findings) for r in results),
    }


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description="Run Bastion's atheris fuzz harnesses.")
    parser.add_argument("--seconds", type=int, default=int(os.environ.get("FUZZ_SECONDS", DEFAULT_SECONDS)))
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these harnesses (e.g. cose eat)")
    parser.add_argument("--harness", nargs="+", type=Path, metavar="FILE", help="run these harness files instead")
    parser.add_argument("--out", type=Path, default=ROOT / "fuzz" / "out", help="where findings are written")
    parser.add_argument("--list", action="store_true", help="list the harnesses and their seed counts")
    parser.add_argument("--json", action="store_true", help="print a JSON summary instead of a table")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--seed-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.seconds < 1:
        parser.error("--seconds must be at least 1")
    if args.child is not None:
        _child(args.child, args.seconds, args.out, args.work, args.seed_dir)
        return 0  # pragma: no cover - atheris.Fuzz() exits the process
    harnesses = [p.resolve() for p in args.harness] if args.harness else discover()
    if args.only:
        wanted = set(args.only)
        unknown = wanted - {harness_name(p) for p in harnesses}
        if unknown:
            parser.error(f"no harness named {', '.join(sorted(unknown))} (see: python tools/fuzz.py --list)")
        harnesses = [p for p in harnesses if harness_name(p) in wanted]
    if args.list:
        for path in harnesses:
            saved = len(saved_inputs(harness_name(path), path.parent.parent))
            print(f"{harness_name(path):<22} {path}  saved inputs: {saved}")
        return 0
    results = []
    for path in harnesses:
        if not args.json:
            print(f"fuzzing {harness_name(path)} for {args.seconds} s ...", flush=True)
        results.append(run_harness(path, seconds=args.seconds, out_dir=args.out))
    if args.json:
        print(json.dumps(_summary(results), indent=2))
    else:
        _print_table(results)
    return 1 if any(r.findings for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
