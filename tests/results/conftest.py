"""Fixtures: a synthetic de-identified CT series (pydicom's bundled CT slice, restacked) and a hub holding it."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from tests.hub.conftest import Hub, hub, pg_url  # noqa: F401 - fixtures

STUDY = "2.25.5001"
SERIES = "2.25.5001.1"
BRAIN_STUDY = "2.25.5002"


def ct_series(study: str = STUDY, series: str = SERIES, n: int = 4, patient: str = "PSEUDO-R1") -> list[Dataset]:
    """`n` synthetic axial CT slices, 5 mm apart, each with its own pixel values (slice k adds 10*k)."""
    out = []
    for k in range(n):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.PatientID = patient
        ds.PatientName = patient
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series
        ds.SOPInstanceUID = f"{series}.{k + 1}"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [-158.0, -179.0, -75.0 + 5.0 * k]
        ds.SliceLocation = -75.0 + 5.0 * k
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        arr = ds.pixel_array.astype(np.int16) + np.int16(10 * k)
        ds.PixelData = arr.tobytes()
        ds.StudyDate = "20200102"
        ds.StudyDescription = "CHEST CT"
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = "medcloud gateway (test)"
        out.append(ds)
    return out


def to_bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


@dataclass
class Seeded:
    hub: Hub
    ct: list[Dataset]
    brain: list[Dataset]


def seed(h: Hub) -> Seeded:
    """The CT series in project lung (site-a) and a one-slice study in project brain (site-c)."""
    ct = ct_series()
    brain = ct_series(BRAIN_STUDY, BRAIN_STUDY + ".1", n=1, patient="PSEUDO-B1")
    for who, items in (("site_a", ct), ("site_c", brain)):
        for ds in items:
            r = h.client.post("/api/v1/ingest", content=to_bytes(ds), headers=h.auth(who))
            assert r.status_code == 201, r.text
    return Seeded(h, ct, brain)


@pytest.fixture
def seeded(hub: Hub) -> Seeded:  # noqa: F811 - the fixture imported above
    return seed(hub)
