"""Fixtures: the hub test client with a few studies stored in two projects, for DICOMweb tests."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from tests.hub.conftest import Hub, deidentified_dicom, hub, pg_hub, pg_url  # noqa: F401 - fixtures

LUNG_CT = "2.25.1001"
LUNG_CT_SERIES = "2.25.1001.1"
LUNG_MR = "2.25.1002"
BRAIN_CT = "2.25.2001"


@dataclass
class Seeded:
    hub: Hub
    sop: dict[str, list[str]] = field(default_factory=dict)  # study UID -> SOP Instance UIDs


def stow_body(files: list[bytes], boundary: str = "dw-boundary") -> bytes:
    """A multipart/related body with one application/dicom part per file."""
    out = b""
    for data in files:
        out += f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def dicom_file(*, charset: str = "ISO_IR 192", **kw: str | None) -> bytes:
    """A de-identified test file (tests.hub's) re-encoded in UTF-8 so that kanji survive."""
    import io

    import pydicom

    description = kw.pop("description", None) or "CHEST CT"
    ds = pydicom.dcmread(io.BytesIO(deidentified_dicom(**kw)))  # type: ignore[arg-type]
    ds.SpecificCharacterSet = charset
    ds.StudyDescription = description
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def seed(h: Hub) -> Seeded:
    """Two lung studies (CT with 2 instances, MR with a kanji description) and one brain study."""
    import pydicom

    s = Seeded(h)
    plan = [
        ("site_a", LUNG_CT, LUNG_CT_SERIES, "PSEUDO-1", "20200102", "CT", "CHEST CT", "CT_small.dcm"),
        ("site_a", LUNG_CT, LUNG_CT_SERIES, "PSEUDO-1", "20200102", "CT", "CHEST CT", "CT_small.dcm"),
        ("site_a", LUNG_MR, None, "PSEUDO-2", "20210315", "MR", "頭部 MRI", "MR_small.dcm"),
        ("site_c", BRAIN_CT, None, "PSEUDO-3", "20200102", "CT", "HEAD CT", "CT_small.dcm"),
    ]
    for who, study, series, patient, day, modality, desc, source in plan:
        data = dicom_file(study_uid=study, series_uid=series, patient=patient, study_date=day,
                                  modality=modality, description=desc, source=source)  # fmt: skip
        r = h.client.post("/api/v1/ingest", content=data, headers=h.auth(who))
        assert r.status_code == 201, r.text
        import io

        s.sop.setdefault(study, []).append(str(pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID))
    return s


@pytest.fixture
def seeded(hub: Hub) -> Iterator[Seeded]:  # noqa: F811 - the fixture imported above
    yield seed(hub)
