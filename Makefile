# Bastion developer entry points. `make demo` and `make test` work on a fresh clone.
VENV ?= .venv
PY := $(VENV)/bin/python
BASTION := $(VENV)/bin/bastion
STAMP := $(VENV)/.installed

.PHONY: demo test lint unit e2e bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BASTION) demo --dir .bastion-demo

lint: $(STAMP)
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

test: lint
	$(VENV)/bin/pytest -q

unit: $(STAMP)
	$(VENV)/bin/pytest -q tests/unit

e2e: $(STAMP)
	$(VENV)/bin/pytest -q tests/e2e

bench: $(STAMP)
	$(PY) benchmarks/attest.py
	$(PY) benchmarks/checkin.py
	$(PY) benchmarks/delta.py

clean:
	rm -rf $(VENV) .bastion-demo .mypy_cache .pytest_cache .ruff_cache
