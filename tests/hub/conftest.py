"""Fixtures: a real hub (SQLite or PostgreSQL catalog, blob folder) behind FastAPI's TestClient."""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from fastapi.testclient import TestClient
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from medcloud.config import load_settings
from medcloud.hub.app import create_app
from medcloud.hub.state import HubState
from medcloud.security.tokens import issue_token

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/"


@dataclass
class Hub:
    client: TestClient
    state: HubState
    tokens: dict[str, str]
    data_dir: Path

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}


def deidentified_dicom(
    *,
    study_uid: str | None = None,
    series_uid: str | None = None,
    patient: str = "PSEUDO-1",
    study_date: str = "20200102",
    modality: str = "CT",
    description: str = "CHEST CT",
    source: str = "CT_small.dcm",
) -> bytes:
    """A bundled pydicom file made to look like gateway output (test data, not real de-identification)."""
    ds = pydicom.dcmread(get_testdata_file(source))
    ds.PatientID = patient
    ds.PatientName = patient
    ds.StudyInstanceUID = study_uid or generate_uid(prefix="2.25.")
    ds.SeriesInstanceUID = series_uid or generate_uid(prefix="2.25.")
    ds.SOPInstanceUID = generate_uid(prefix="2.25.")
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyDate = study_date
    ds.Modality = modality
    ds.StudyDescription = description
    ds.PatientIdentityRemoved = "YES"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _make_hub(tmp_path: Path, database_url: str | None) -> Iterator[Hub]:
    settings = load_settings(data_dir=tmp_path / "hub", database_url=database_url, max_upload_bytes=5_000_000)
    state = HubState.open(settings)
    cat = state.catalog
    tokens = {
        "site_a": issue_token(cat, role="site", site="site-a", projects=["lung"]).token,
        "site_b": issue_token(cat, role="site", site="site-b", projects=["lung", "brain"]).token,
        "site_c": issue_token(cat, role="site", site="site-c", projects=["brain"]).token,
        "researcher": issue_token(cat, role="researcher", projects=["lung"]).token,
        "researcher_brain": issue_token(cat, role="researcher", projects=["brain"]).token,
        "clinician": issue_token(cat, role="clinician").token,
        "auditor": issue_token(cat, role="auditor").token,
        "admin": issue_token(cat, role="admin").token,
    }
    app = create_app(settings, state=state)
    with TestClient(app, client=("127.0.0.1", 50000)) as client:
        yield Hub(client, state, tokens, tmp_path / "hub")
    state.close()


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    yield from _make_hub(tmp_path, None)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database on the local server, dropped afterwards."""
    sa = pytest.importorskip("sqlalchemy")
    admin = sa.create_engine(PG_URL + "postgres", isolation_level="AUTOCOMMIT")
    name = f"medcloud_test_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except Exception as exc:  # pragma: no cover - CI starts PostgreSQL; a dev box may not have it
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 not available: {exc}")
    try:
        yield PG_URL + name
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture
def pg_hub(tmp_path: Path, pg_url: str) -> Iterator[Hub]:
    yield from _make_hub(tmp_path, pg_url)


@pytest.fixture
def upload(hub: Hub) -> Callable[..., object]:
    def _upload(data: bytes, who: str = "site_a", **headers: str) -> object:
        h = hub.auth(who)
        h.update({k.replace("_", "-"): v for k, v in headers.items()})
        return hub.client.post("/api/v1/ingest", content=data, headers=h)

    return _upload
