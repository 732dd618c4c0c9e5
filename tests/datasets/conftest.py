"""Fixtures: a real hub (tests.hub.conftest) with a few de-identified CT/MR files in projects lung and brain."""

from __future__ import annotations

import pytest

from tests.hub.conftest import Hub, deidentified_dicom, hub, pg_url

__all__ = ["filled", "hub", "pg_url"]


@pytest.fixture
def filled(hub: Hub) -> Hub:
    """Six lung patients (one CT study of two instances each, dated 2010-2015) and one brain MR patient."""
    plan = [(f"LUNG-{p}", "site_a", "CT", "CT_small.dcm") for p in range(6)]
    plan.append(("BRAIN-0", "site_c", "MR", "MR_small.dcm"))
    for i, (patient, who, modality, src) in enumerate(plan):
        study = f"2.25.{1000 + i}"
        for _ in range(2):
            data = deidentified_dicom(
                study_uid=study, series_uid=study + ".1", patient=patient, modality=modality, source=src,
                study_date=f"20{10 + i}0102",
            )  # fmt: skip
            r = hub.client.post("/api/v1/ingest", content=data, headers=hub.auth(who))
            assert r.status_code == 201, r.text
    return hub
