"""Fixtures for de-identification tests: real pydicom files, a site key, the identifier-rich file."""

from __future__ import annotations

import sys
from pathlib import Path

import pydicom
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from deid_helpers import sample

from medcloud.deid import Deidentifier, DeidOptions, SiteKey


@pytest.fixture
def key() -> SiteKey:
    return SiteKey(bytes(range(32)))


@pytest.fixture
def deid(key: SiteKey) -> Deidentifier:
    return Deidentifier(key, DeidOptions())


@pytest.fixture
def ct() -> pydicom.Dataset:
    return pydicom.dcmread(sample("CT_small.dcm"))


@pytest.fixture(scope="session")
def rich_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import corpus

    return corpus.make_identifier_rich_file(tmp_path_factory.mktemp("rich"))
