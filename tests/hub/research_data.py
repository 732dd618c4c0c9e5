"""Synthetic studies and an example target table for the progress API and the researcher's page tests.

The DICOM files are pydicom's bundled CT/MR samples re-labelled (new UIDs, pseudonyms, sex, age, body
part): test data, not patient data."""

from __future__ import annotations

import io
from typing import Any

import pydicom

from tests.hub.conftest import deidentified_dicom

# Two societies in project "lung" territory and one in "brain"; "empty-soc" has no sites at all.
TARGETS: dict[str, Any] = {
    "about": "EXAMPLE targets for tests",
    "societies": [
        {
            "name": "soc-a",
            "display_name": "Society A",
            "display_name_ja": "学会A",
            "target_cases": 10,
            "target_images": 20,
            "sites": [
                {"name": "site-a", "display_name": "Hospital A", "target_cases": 4, "target_images": 8},
                {"name": "site-b", "display_name": "Hospital B"},
            ],
        },
        {
            "name": "soc-c",
            "display_name": "Society C",
            "target_cases": 7,
            "sites": [{"name": "site-c", "display_name": "Hospital C", "target_cases": 3}],
        },
        {"name": "empty-soc", "display_name": "Nobody yet", "target_cases": 1},
    ],
}


def study(
    patient: str,
    *,
    modality: str = "CT",
    sex: str = "M",
    age: str = "050Y",
    body_part: str = "CHEST",
    study_date: str = "20200102",
    description: str = "SYNTHETIC STUDY",
) -> bytes:
    """One de-identified-looking instance of a new study (CT from CT_small, MR from MR_small)."""
    source = "MR_small.dcm" if modality == "MR" else "CT_small.dcm"
    raw = deidentified_dicom(
        patient=patient, modality=modality, study_date=study_date, description=description, source=source
    )
    ds = pydicom.dcmread(io.BytesIO(raw))
    ds.PatientSex = sex
    ds.PatientAge = age
    ds.BodyPartExamined = body_part
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


# (site token key, patient, modality, sex, age, body part): lung has 4 studies at site-a (3 patients)
# and 2 at site-b; brain has 1 at site-c.
STUDIES = [
    ("site_a", "PSEUDO-A1", "CT", "M", "050Y", "CHEST"),
    ("site_a", "PSEUDO-A2", "CT", "F", "034Y", "CHEST"),
    ("site_a", "PSEUDO-A3", "CT", "F", "071Y", "ABDOMEN"),
    ("site_a", "PSEUDO-A1", "MR", "M", "050Y", "HEAD"),
    ("site_b", "PSEUDO-B1", "MR", "M", "066Y", "HEAD"),
    ("site_b", "PSEUDO-B2", "MR", "F", "045Y", "CHEST"),
    ("site_c", "PSEUDO-C1", "CT", "M", "080Y", "HEAD"),
]
