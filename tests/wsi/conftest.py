"""Fixtures: the real SVS and its DICOM WSI conversion, stored in a hub (project lung, site-a)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.hub.conftest import Hub, _make_hub, hub  # noqa: F401 - fixtures
from tests.wsi.slide_data import deidentified_svs, dicom_wsi


@pytest.fixture(scope="session")
def svs_bytes() -> bytes:
    return deidentified_svs()


@pytest.fixture(scope="session")
def wsi_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return dicom_wsi(tmp_path_factory.mktemp("dicom-wsi"))


@dataclass
class SlideHub:
    hub: Hub
    svs_id: str
    dcm_id: str
    series_uid: str
    study_uid: str


def store_slides(h: Hub, svs: bytes, files: list[Path]) -> SlideHub:
    import pydicom

    r = h.client.post("/api/v1/ingest", content=svs, headers={**h.auth("site_a"), "X-Medcloud-Filename": "slide.svs"})
    assert r.status_code == 201, r.text
    image_id = r.json()["image_id"]
    for f in files:
        r = h.client.post("/api/v1/ingest", content=f.read_bytes(), headers=h.auth("site_a"))
        assert r.status_code == 201, r.text
    ds = pydicom.dcmread(files[0], stop_before_pixels=True)
    return SlideHub(h, f"svs-{image_id}", f"dcm-{ds.SeriesInstanceUID}", ds.SeriesInstanceUID, ds.StudyInstanceUID)


@pytest.fixture(scope="module")
def slides(
    tmp_path_factory: pytest.TempPathFactory, svs_bytes: bytes, wsi_files: list[Path]
) -> Iterator[SlideHub]:
    """One hub per test module (slides are read, never changed)."""
    for h in _make_hub(tmp_path_factory.mktemp("slides"), None):
        yield store_slides(h, svs_bytes, wsi_files)


@pytest.fixture
def fresh_slides(hub: Hub, svs_bytes: bytes, wsi_files: list[Path]) -> Iterator[SlideHub]:  # noqa: F811
    """A hub of its own, for tests that count audit events."""
    yield store_slides(hub, svs_bytes, wsi_files)
