"""The atheris fuzz harnesses (fuzz/harnesses) and their runner (tools/fuzz.py), as tests.

* Every harness keeps the shared contract (``test_one_input``, bytes ``SEEDS``).
* Every seed and every saved regression input (``fuzz/corpus/<name>/``,
  ``fuzz/regressions/<name>/``) replays through ``test_one_input`` without
  raising: each input that once crashed a parser stays fixed.
* The parsers the issue names each have a harness (more may be added).
* (slow) each harness runs under atheris for a few seconds and finds nothing;
  the runner itself reports a planted finding with its input.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: Seconds each harness is fuzzed in CI (``make fuzz`` runs FUZZ_SECONDS, default 60).
CI_SECONDS = 5
#: The parsers issue 7 names, by harness (voucher and CRL harnesses join when their parsers exist).
REQUIRED = {
    "cose",  # COSE_Sign1 (crypto)
    "error_report",  # error-report batches and log uploads
    "eat",  # EAT claims and tokens
    "x5chain",  # the verifier's x5chain path
    "tcb_info",  # DiceTcbInfo inside the Alias certificate
    "keys",  # SEC1 points and PEM keys
    "image",  # image packages
    "archive",  # OS and app payload archives
    "os_manifest",  # the manifest inside OS and bootloader images
    "delta",  # delta OS update patches
    "manifest",  # app manifests
    "status_report",  # status reports, service side
    "event_queue",  # status reports, device side (the event queue they carry)
    "capability",  # device capability files
    "monitor",  # the security monitor's request frames (from the less trusted OS)
    "update_pointer",  # the updates pointer in the attestation answer (device side)
    "boot_config",  # the bootloader's boot-config.json and partition layout
    "voucher",  # vendor ownership vouchers (claims)
    "crl",  # tenant CA CRLs
    "token",  # operator tokens and --expires
}


def _load_runner() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bastion_tools_fuzz", ROOT / "tools" / "fuzz.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


runner = _load_runner()
HARNESSES = runner.discover()


def _ids(paths: list[Path]) -> list[str]:
    return [runner.harness_name(p) for p in paths]


def test_every_named_parser_has_a_harness() -> None:
    missing = REQUIRED - set(_ids(HARNESSES))
    assert not missing, f"no harness for {sorted(missing)} in fuzz/harnesses/"


@pytest.mark.parametrize("path", HARNESSES, ids=_ids(HARNESSES))
def test_harness_keeps_the_contract(path: Path) -> None:
    module = runner.load_harness(path)
    seeds = getattr(module, "SEEDS", [])
    assert isinstance(seeds, list)
    assert all(isinstance(seed, bytes) for seed in seeds)
    assert seeds or runner.saved_inputs(runner.harness_name(path)), "a harness needs seeds (SEEDS or fuzz/corpus/)"
    assert int(getattr(module, "MAX_LEN", runner.DEFAULT_MAX_LEN)) > max((len(s) for s in seeds), default=0)


@pytest.mark.parametrize("path", HARNESSES, ids=_ids(HARNESSES))
def test_seeds_and_regressions_replay(path: Path) -> None:
    module = runner.load_harness(path)
    inputs = runner.all_inputs(module, runner.harness_name(path))
    for label, data in inputs:
        try:
            module.test_one_input(data)
        except Exception as exc:  # noqa: BLE001 - name the input that regressed
            pytest.fail(f"{label} raises {type(exc).__name__}: {exc}")


@pytest.mark.slow
@pytest.mark.parametrize("path", HARNESSES, ids=_ids(HARNESSES))
def test_fuzz_briefly(path: Path, tmp_path: Path) -> None:
    result = runner.run_harness(path, seconds=CI_SECONDS, out_dir=tmp_path, log=tmp_path / "libfuzzer.log")
    print(f"{result.name}: {result.execs} execs in {result.seconds} s, corpus {result.corpus}")
    assert not result.findings, "\n".join(
        f"{f.kind}: {f.signature} (input {f.artifact}; traceback in {f.artifact}.txt)" for f in result.findings
    )
    assert result.execs > 0, (tmp_path / "libfuzzer.log").read_text()[-2000:]


@pytest.mark.slow
def test_runner_reports_a_finding_with_its_input(tmp_path: Path) -> None:
    harness = tmp_path / "fuzz_planted.py"
    harness.write_text(
        "SEEDS = [b'ok', b'boom']\n"
        "def test_one_input(data: bytes) -> None:\n"
        "    if data.startswith(b'boom'):\n"
        "        raise KeyError('planted')\n",
        encoding="utf-8",
    )
    result = runner.run_harness(harness, seconds=2, out_dir=tmp_path / "out")
    assert result.execs > 0
    assert [f.signature for f in result.findings] == ["KeyError@fuzz_planted.py:4"]
    artifact = Path(result.findings[0].artifact)
    assert artifact.read_bytes().startswith(b"boom")
    assert "KeyError: 'planted'" in Path(f"{artifact}.txt").read_text(encoding="utf-8")


def test_runner_lists_every_harness(capsys: pytest.CaptureFixture[str]) -> None:
    assert runner.main(["--list"]) == 0
    listed = {line.split()[0] for line in capsys.readouterr().out.splitlines()}
    assert listed == set(_ids(HARNESSES))


def test_runner_refuses_an_unknown_harness(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        runner.main(["--only", "nope"])
    assert exc.value.code == 2
    assert "no harness named nope" in capsys.readouterr().err
