"""The per-study and per-series counts kept on the rows (migration 0005) follow every write: ingest of new
instances into new and existing series, a resent duplicate, a refused file, and removal of an instance; QIDO
reports them (NumberOfStudyRelatedSeries/Instances, ModalitiesInStudy) without counting rows."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from medcloud.store.tables import series, studies
from tests.hub.conftest import Hub, deidentified_dicom

STUDY = "2.25.31337"


def _rows(hub: Hub) -> tuple[Any, dict[str, int]]:
    with hub.state.catalog.read() as conn:
        st = conn.execute(sa.select(studies).where(studies.c.study_uid == STUDY)).one()
        per = {r.series_uid: r.n_instances for r in conn.execute(sa.select(series).where(series.c.study_id == st.id))}
    return st, per


def _ingest(hub: Hub, data: bytes, who: str = "site_a") -> int:
    return hub.client.post("/api/v1/ingest", content=data, headers=hub.auth(who)).status_code


def test_counts_follow_ingest_duplicates_refusals_and_removal(hub: Hub) -> None:
    ct = [deidentified_dicom(study_uid=STUDY, series_uid=STUDY + ".1", patient="PSEUDO-C") for _ in range(2)]
    assert [_ingest(hub, d) for d in ct] == [201, 201]
    st, per = _rows(hub)
    assert (st.n_series, st.n_instances, st.modalities, per) == (1, 2, "CT", {STUDY + ".1": 2})
    mr = deidentified_dicom(study_uid=STUDY, series_uid=STUDY + ".2", patient="PSEUDO-C", modality="MR",
                            source="MR_small.dcm")  # fmt: skip
    assert _ingest(hub, mr) == 201
    assert _ingest(hub, ct[0]) in (200, 201)  # a resend is a duplicate: nothing counted twice
    other = deidentified_dicom(study_uid=STUDY, series_uid=STUDY + ".3", patient="PSEUDO-C")
    assert _ingest(hub, other, who="site_c") == 409  # another site's claim on the study is refused
    st, per = _rows(hub)
    assert (st.n_series, st.n_instances, st.modalities) == (2, 3, "CT\\MR")
    assert per == {STUDY + ".1": 2, STUDY + ".2": 1}

    qido = hub.client.get("/dicom-web/studies", params={"StudyInstanceUID": STUDY}, headers=hub.auth("researcher"))
    assert qido.status_code == 200, qido.text
    (found,) = qido.json()
    assert found["00201206"]["Value"] == [2] and found["00201208"]["Value"] == [3]
    assert found["00080061"]["Value"] == ["CT", "MR"]

    cat = hub.state.catalog
    with cat.read() as conn:
        sop = conn.exec_driver_sql(
            "SELECT sop_uid FROM instances JOIN series ON series.id = instances.series_id WHERE series_uid = ?",
            (STUDY + ".2",),
        ).scalar_one()
    with cat.write() as conn:
        cat.datasets.remove_instance(conn, sop, "test: wrong patient")
    st, per = _rows(hub)
    assert (st.n_series, st.n_instances, per[STUDY + ".2"]) == (2, 2, 0)  # the empty series stays, counted 0
