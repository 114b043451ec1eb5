# Bastion developer entry points. `make demo` and `make test` work on a fresh clone.
VENV ?= .venv
PY := $(VENV)/bin/python
BASTION := $(VENV)/bin/bastion
STAMP := $(VENV)/.installed

.PHONY: demo test lint unit e2e bench clean sysdeps

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $(STAMP)

# System packages (bubblewrap, libseccomp, mosquitto, ...): installed as root, else the exact command is printed.
sysdeps:
	@bash tools/sysdeps.sh

demo: sysdeps $(STAMP)
	$(BASTION) demo --dir .bastion-demo

lint: sysdeps $(STAMP)
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# The suite runs on PYTEST_WORKERS xdist workers (docs/adr/0020-parallel-tests.md): many tests wait
# on subprocesses and sockets, so on CI's 2 cores 4 workers beat 2. PYTEST_WORKERS=0 runs it serially.
PYTEST_WORKERS ?= 4
test: lint
	$(VENV)/bin/pytest -q -n $(PYTEST_WORKERS) --dist loadfile

unit: sysdeps $(STAMP)
	$(VENV)/bin/pytest -q tests/unit

e2e: sysdeps $(STAMP)
	$(VENV)/bin/pytest -q tests/e2e

bench: $(STAMP)
	$(PY) benchmarks/attest.py
	$(PY) benchmarks/checkin.py
	$(PY) benchmarks/delta.py
	$(PY) benchmarks/sandbox.py
	$(PY) benchmarks/ingest.py
	$(PY) benchmarks/console.py

clean:
	rm -rf $(VENV) .bastion-demo .mypy_cache .pytest_cache .ruff_cache

# Fuzzing: every fuzz/harnesses/fuzz_*.py under atheris, FUZZ_SECONDS each, one at a time
# (exec counts and findings per harness; findings land in fuzz/out/). CI runs each briefly
# through tests/fuzz/test_fuzz_harnesses.py.
FUZZ_SECONDS ?= 60
.PHONY: fuzz
fuzz: $(STAMP)
	$(PY) tools/fuzz.py --seconds $(FUZZ_SECONDS)
