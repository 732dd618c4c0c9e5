"""Indexing: a refused upload leaves nothing behind in the catalog, and a refusal says nothing of other projects."""

from __future__ import annotations

import sqlalchemy as sa

from medcloud.formats.records import DicomRecord
from medcloud.store import Catalog, IndexEntry
from medcloud.store.tables import series, sites, studies
from tests.hub.conftest import Hub, deidentified_dicom
from tests.hub.test_batch import multipart, post_batch


def _count(hub: Hub, table: sa.Table) -> int:
    with hub.state.catalog.read() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def test_refused_upload_leaves_no_study_row(hub: Hub, upload) -> None:
    """Issue 10 (6): a 409 series conflict inserted the new study anyway: an empty study, visible and counted."""
    assert upload(deidentified_dicom(study_uid="2.25.100", series_uid="2.25.100.1")).status_code == 201
    before = (_count(hub, studies), _count(hub, series))
    for i in range(5):  # a new study each time, but a series that belongs to study 2.25.100
        r = upload(deidentified_dicom(study_uid=f"2.25.200{i}", series_uid="2.25.100.1", patient=f"P{i}"))
        assert r.status_code == 409, r.text
    assert (_count(hub, studies), _count(hub, series)) == before
    listed = hub.client.get("/api/v1/studies", headers=hub.auth("researcher")).json()
    assert listed["total"] == 1 and listed["items"][0]["study_uid"] == "2.25.100"
    site_a = {s["site"]: s for s in hub.client.get("/api/v1/sites", headers=hub.auth("admin")).json()["items"]}
    assert site_a["site-a"]["cases"] == 1


def test_refused_entry_of_a_batch_leaves_nothing_and_the_rest_is_stored(hub: Hub, upload) -> None:
    """Issue 10 (6), batch path: only the refused part's rows are missing; its neighbours are indexed."""
    assert upload(deidentified_dicom(study_uid="2.25.300", series_uid="2.25.300.1")).status_code == 201
    refused = deidentified_dicom(study_uid="2.25.301", series_uid="2.25.300.1")  # a series of another study
    good = [deidentified_dicom(study_uid="2.25.302", series_uid="2.25.302.1") for _ in range(2)]
    # The refused part comes first, so its study would have been planned before the good ones.
    body, ctype = multipart([(refused, {}), (good[0], {}), (good[1], {})])
    out = post_batch(hub, body, ctype).json()
    assert [i["status"] for i in out["items"]] == ["failed", "stored", "stored"], out
    assert out["items"][0]["problem"]["status"] == 409
    with hub.state.catalog.read() as conn:
        uids = set(conn.execute(sa.select(studies.c.study_uid)).scalars())
    assert uids == {"2.25.300", "2.25.302"}
    assert hub.state.catalog.audit.verify().ok


def test_refused_upload_from_a_new_site_registers_no_site(hub: Hub, upload) -> None:
    """Issue 10 (6): a site whose every upload is refused does not appear in the catalog."""
    assert upload(deidentified_dicom(study_uid="2.25.400", series_uid="2.25.400.1")).status_code == 201
    n_sites = _count(hub, sites)
    r = upload(
        deidentified_dicom(study_uid="2.25.401", series_uid="2.25.400.1"), who="site_c", X_Medcloud_Project="brain"
    )
    assert r.status_code == 409
    assert _count(hub, sites) == n_sites


def test_conflict_message_says_nothing_about_other_projects(hub: Hub, upload) -> None:
    """Issue 10 (12): the 409 told a site that a UID exists in another project. Own and foreign read alike."""
    theirs = deidentified_dicom(study_uid="2.25.500", series_uid="2.25.500.1")
    assert upload(theirs, who="site_c", X_Medcloud_Project="brain").status_code == 201
    mine = deidentified_dicom(study_uid="2.25.600", series_uid="2.25.600.1")
    assert upload(mine).status_code == 201

    def detail(data: bytes) -> str:
        r = upload(data)
        assert r.status_code == 409, r.text
        return str(r.json()["detail"])

    foreign_study = detail(deidentified_dicom(study_uid="2.25.500"))
    own_series = detail(deidentified_dicom(study_uid="2.25.601", series_uid="2.25.600.1"))
    foreign_series = detail(deidentified_dicom(study_uid="2.25.602", series_uid="2.25.500.1"))
    changed = bytearray(theirs)
    changed[-1] ^= 1  # same SOP Instance UID as the other project's file, other bytes
    foreign_instance = detail(bytes(changed))
    own_changed = bytearray(mine)
    own_changed[-1] ^= 1
    own_instance = detail(bytes(own_changed))
    for text in (foreign_study, own_series, foreign_series, foreign_instance, own_instance):
        for word in ("project", "site", "owner", "another", "brain", "belongs"):
            assert word not in text.lower(), text
    # A refusal reads the same whether the UID is the caller's own or someone else's.
    assert foreign_series.replace("2.25.500.1", "X") == own_series.replace("2.25.600.1", "X")
    assert foreign_instance.split(" ", 4)[-1] == own_instance.split(" ", 4)[-1]


def test_a_repeat_of_a_refused_file_in_one_batch_is_refused_too(tmp_path) -> None:
    """A batch holding the same refused file twice: the repeat was reported 'duplicate' of nothing stored."""
    cat = Catalog(f"sqlite:///{tmp_path / 'c.sqlite3'}")
    cat.migrate()

    def entry(sop: str, study: str, series_uid: str, sha: str) -> IndexEntry:
        rec = DicomRecord(
            study_uid=study, series_uid=series_uid, sop_uid=sop, sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
            patient_pseudonym="P", patient_sex=None, patient_age=None, study_date=None, study_description="",
            modality="CT", body_part="", series_description="", series_number=1, instance_number=1,
            rows=None, columns=None, frames=None, transfer_syntax="1.2.840.10008.1.2.1",
        )  # fmt: skip
        return IndexEntry(rec, sha, 10)

    with cat.write() as conn:
        cat.index.batch(conn, [entry("2.25.1.1", "2.25.1", "2.25.1.9", "a" * 64)], site="s", project="p")
    refused = entry("2.25.2.1", "2.25.2", "2.25.1.9", "b" * 64)  # a series of study 2.25.1
    repeat = entry("2.25.2.1", "2.25.2", "2.25.1.9", "b" * 64)
    with cat.write() as conn:
        cat.index.batch(conn, [refused, repeat], site="s", project="p")
    assert refused.error is not None and refused.status is None
    assert repeat.error is refused.error and repeat.status is None
    with cat.read() as conn:
        assert _uids(conn) == {"2.25.1"}
    cat.dispose()


def _uids(conn: sa.Connection) -> set[str]:
    return set(conn.execute(sa.select(studies.c.study_uid)).scalars())
