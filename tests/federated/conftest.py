"""Fixtures for federated tests. Heavy imports (TenSEAL, Flower) stay inside fixtures so that the
CPython 3.10 venv, which has only OpenFHE and numpy, can collect the threshold tests."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(scope="session")
def ckks_contexts() -> tuple[bytes, bytes]:
    """(secret context, public context) of one CKKS key, made once per session."""
    pytest.importorskip("tenseal")
    from medcloud.federated.he import ckks

    return ckks.generate_context()


@pytest.fixture()
def ckks_site(ckks_contexts: tuple[bytes, bytes]) -> Any:
    from medcloud.federated.he.ckks import CkksBackend

    return CkksBackend(ckks_contexts[0])


@pytest.fixture()
def ckks_aggregator(ckks_contexts: tuple[bytes, bytes]) -> Any:
    from medcloud.federated.he.ckks import CkksBackend

    return CkksBackend(ckks_contexts[1])


@pytest.fixture(scope="session")
def breast_cancer_sites() -> Any:
    pytest.importorskip("sklearn")
    from medcloud.federated.tabular import load_sites

    return load_sites(4)
