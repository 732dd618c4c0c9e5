"""Fixtures for federated tests. Heavy imports (TenSEAL, Flower) stay inside fixtures so that the
CPython 3.10 venv, which has only OpenFHE and numpy, can collect the threshold tests."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

import pytest

# The hub-relay tests need the hub (FastAPI, httpx), which the CPython 3.10 venv does not install.
collect_ignore = [] if importlib.util.find_spec("fastapi") else ["test_fl_relay.py"]


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
def aes_key() -> tuple[bytes, bytes]:
    """(secret, public) material of one aes key, made once per session."""
    from medcloud.federated.he import aes

    return aes.generate_key()


@pytest.fixture()
def aes_site(aes_key: tuple[bytes, bytes]) -> Any:
    from medcloud.federated.he.aes import AesCtrBackend

    return AesCtrBackend(aes_key[0])


@pytest.fixture()
def aes_aggregator(aes_key: tuple[bytes, bytes]) -> Any:
    from medcloud.federated.he.aes import AesCtrBackend

    return AesCtrBackend(aes_key[1])


@pytest.fixture(scope="session")
def images_plain_fedavg() -> Callable[[int, int, int, int, int], Any]:
    """`(sites, rounds, epochs, n_train, n_test) -> images.train_federated("plain", ...)`, each
    distinct run trained once per session: the Flower simulation and the SuperLink/SuperNode images
    tests compare their models with the same in-process plaintext FedAvg run (deterministic: local
    training is seeded), which they used to train once each."""
    pytest.importorskip("torch")
    from medcloud.federated import images

    runs: dict[tuple[int, int, int, int, int], Any] = {}

    def run(sites: int, rounds: int, epochs: int, n_train: int, n_test: int) -> Any:
        key = (sites, rounds, epochs, n_train, n_test)
        if key not in runs:
            runs[key] = images.train_federated("plain", sites, rounds, epochs, n_train, n_test, baselines=False)
        return runs[key]

    return run


@pytest.fixture(scope="session")
def breast_cancer_sites() -> Any:
    pytest.importorskip("sklearn")
    from medcloud.federated.tabular import load_sites

    return load_sites(4)
