"""QIDO-RS: matching keys, includefield, paging, DICOM JSON value rules and per-project scope."""

from __future__ import annotations

from typing import Any

import pytest

from tests.dicomweb.conftest import BRAIN_CT, LUNG_CT, LUNG_CT_SERIES, LUNG_MR, Seeded


def _get(s: Seeded, url: str, who: str = "researcher", **headers: str) -> Any:
    r = s.hub.client.get(url, headers={**s.hub.auth(who), **headers})
    return r


def _ok(s: Seeded, url: str, who: str = "researcher") -> list[dict[str, Any]]:
    r = _get(s, url, who)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/dicom+json")
    body: list[dict[str, Any]] = r.json()
    return body


def _uids(body: list[dict[str, Any]], tag: str = "0020000D") -> list[str]:
    return [d[tag]["Value"][0] for d in body]


def test_study_level_answers_carry_what_ohif_reads_with_f2_value_rules(seeded: Seeded) -> None:
    body = _ok(seeded, "/dicom-web/studies")
    assert _uids(body) == [LUNG_MR, LUNG_CT]  # newest first; the brain project's study is not there
    ct = body[1]
    for tag in ("0020000D", "00080020", "00080030", "00080050", "00100010", "00100020", "00100030",
                "00201206", "00201208", "00081030", "00080061"):  # fmt: skip
        assert tag in ct, tag
    # Empty values carry no Value key (PS3.18 F.2.5), never "" or [] or null.
    for tag in ("00080030", "00080050", "00100030"):
        assert ct[tag] == {"vr": {"00080030": "TM", "00080050": "SH", "00100030": "DA"}[tag]}
    assert ct["00201206"] == {"vr": "IS", "Value": [1]} and ct["00201208"] == {"vr": "IS", "Value": [2]}
    assert ct["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "PSEUDO-1"}]}
    assert ct["00080061"] == {"vr": "CS", "Value": ["CT"]}
    assert ct["00080020"] == {"vr": "DA", "Value": ["20200102"]}
    assert ct["00081190"]["Value"][0].endswith(f"/dicom-web/studies/{LUNG_CT}")
    assert body[0]["00081030"] == {"vr": "LO", "Value": ["頭部 MRI"]}


def test_ohif_study_list_request(seeded: Seeded) -> None:
    url = (
        "/dicom-web/studies?limit=101&offset=0&fuzzymatching=false"
        "&includefield=00081030%2C00080060%2C00080090%2C00100030"
    )
    body = _ok(seeded, url)
    assert len(body) == 2
    assert body[0]["00080090"] == {"vr": "PN"} and "00081030" in body[0]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (f"StudyInstanceUID={LUNG_CT}", [LUNG_CT]),
        (f"StudyInstanceUID={LUNG_CT}%5C{LUNG_MR}", [LUNG_MR, LUNG_CT]),
        (f"StudyInstanceUID={LUNG_CT}%2C{LUNG_MR}", [LUNG_MR, LUNG_CT]),
        (f"0020000D={LUNG_CT},{BRAIN_CT}", [LUNG_CT]),  # another project's UID matches nothing
        (f"StudyInstanceUID={LUNG_CT}&StudyInstanceUID={LUNG_MR}", [LUNG_MR, LUNG_CT]),
        ("PatientID=PSEUDO-2", [LUNG_MR]),
        ("PatientID=PSEUDO-%2A", [LUNG_MR, LUNG_CT]),
        ("PatientID=PSEUDO-?", [LUNG_MR, LUNG_CT]),
        ("PatientName=pseudo-1", [LUNG_CT]),
        ("StudyDate=20200102", [LUNG_CT]),
        ("StudyDate=20200101-20201231", [LUNG_CT]),
        ("StudyDate=20210101-", [LUNG_MR]),
        ("StudyDate=-20201231", [LUNG_CT]),
        ("StudyDate=20220101-", []),
        ("ModalitiesInStudy=MR", [LUNG_MR]),
        ("ModalitiesInStudy=MR%5CCT", [LUNG_MR, LUNG_CT]),
        ("Modality=CT", [LUNG_CT]),
        ("00080061=CT", [LUNG_CT]),
        ("StudyDescription=chest*", [LUNG_CT]),
        ("StudyDescription=%E9%A0%AD%E9%83%A8*", [LUNG_MR]),  # 頭部* percent-encoded as UTF-8
        ("StudyDescription=??%20MRI", [LUNG_MR]),
        ("StudyDescription=100%25", []),  # a literal % is not a wildcard
        ("AccessionNumber=A123", []),  # the catalog holds no accession numbers: only * matches
        ("AccessionNumber=*", [LUNG_MR, LUNG_CT]),
        ("fuzzymatching=true&PatientID=PSEUDO-1", [LUNG_CT]),
    ],
)
def test_study_matching(seeded: Seeded, query: str, expected: list[str]) -> None:
    assert _uids(_ok(seeded, f"/dicom-web/studies?{query}")) == expected


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("Foo=1", "unknown attribute"),
        ("00091001=x", "unknown attribute tag"),
        ("SeriesInstanceUID=1.2", "lower level"),
        ("PatientWeight=70", "not a matching key"),
        ("StudyDate=2020", "not a date"),
        ("StudyDate=20201301", "not a date"),
        ("StudyDate=20210101-20200101", "ends before"),
        ("StudyInstanceUID=abc", "not a UID"),
        ("limit=-1", "at least 0"),
        ("limit=ten", "integer"),
        ("offset=1&offset=2", "more than once"),
        ("includefield=NoSuchKeyword", "unknown attribute"),
        ("PatientID=A&PatientID=B", "more than once"),
        ("LIMIT=5", "lower case"),
    ],
)
def test_bad_queries_are_400_with_a_clear_message(seeded: Seeded, query: str, words: str) -> None:
    r = _get(seeded, f"/dicom-web/studies?{query}")
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert words in r.json()["detail"]


def test_includefield_forms_and_all(seeded: Seeded) -> None:
    one = _ok(seeded, f"/dicom-web/studies?StudyInstanceUID={LUNG_CT}&includefield=PatientAge&includefield=00100040")[0]
    assert "00101010" in one and one["00100040"]["vr"] == "CS"
    everything = _ok(seeded, f"/dicom-web/studies?StudyInstanceUID={LUNG_CT}&includefield=all")[0]
    assert "00101010" in everything and "00201208" in everything


def test_limit_offset_and_the_empty_result(seeded: Seeded) -> None:
    assert _uids(_ok(seeded, "/dicom-web/studies?limit=1")) == [LUNG_MR]
    assert _uids(_ok(seeded, "/dicom-web/studies?limit=1&offset=1")) == [LUNG_CT]
    r = _get(seeded, "/dicom-web/studies?offset=5")
    assert r.status_code == 200 and r.json() == []  # 200 with [] (dicomweb-client and OHIF parse it)
    r = _get(seeded, "/dicom-web/studies?limit=5000")
    assert r.status_code == 200 and "299" in r.headers["warning"]


def test_series_level(seeded: Seeded) -> None:
    body = _ok(seeded, "/dicom-web/series")
    assert sorted(d["00080060"]["Value"][0] for d in body) == ["CT", "MR"]
    ct = _ok(seeded, f"/dicom-web/studies/{LUNG_CT}/series?includefield=0008103E,00080021")
    assert _uids(ct, "0020000E") == [LUNG_CT_SERIES]
    assert ct[0]["00201209"] == {"vr": "IS", "Value": [2]} and ct[0]["00200011"]["Value"] == [1]
    assert ct[0]["00080021"] == {"vr": "DA"}
    assert _uids(_ok(seeded, "/dicom-web/series?Modality=MR"), "0020000D") == [LUNG_MR]
    assert _uids(_ok(seeded, f"/dicom-web/series?SeriesInstanceUID={LUNG_CT_SERIES}"), "0020000D") == [LUNG_CT]
    assert _ok(seeded, "/dicom-web/series?SeriesNumber=99") == []
    assert len(_ok(seeded, "/dicom-web/series?StudyDate=20200102")) == 1  # study keys work at series level


def test_instance_level(seeded: Seeded) -> None:
    sops = seeded.sop[LUNG_CT]
    body = _ok(seeded, f"/dicom-web/studies/{LUNG_CT}/series/{LUNG_CT_SERIES}/instances")
    assert sorted(_uids(body, "00080018")) == sorted(sops)
    first = body[0]
    assert first["00280010"] == {"vr": "US", "Value": [128]} and first["00280008"] == {"vr": "IS"}
    assert first["00080016"]["Value"] == ["1.2.840.10008.5.1.4.1.1.2"]
    assert _uids(_ok(seeded, f"/dicom-web/instances?SOPInstanceUID={sops[1]}"), "00080018") == [sops[1]]
    assert len(_ok(seeded, "/dicom-web/instances?SOPClassUID=1.2.840.10008.5.1.4.1.1.4")) == 1  # MR
    assert len(_ok(seeded, f"/dicom-web/studies/{LUNG_CT}/instances?InstanceNumber=1")) == 2


def test_another_projects_study_is_invisible(seeded: Seeded) -> None:
    assert _ok(seeded, f"/dicom-web/studies?StudyInstanceUID={BRAIN_CT}") == []
    assert _ok(seeded, f"/dicom-web/instances?StudyInstanceUID={BRAIN_CT}") == []
    r = _get(seeded, f"/dicom-web/studies/{BRAIN_CT}/series")
    assert r.status_code == 404
    # ... while the brain researcher sees it and not the lung studies.
    assert _uids(_ok(seeded, "/dicom-web/studies", who="researcher_brain")) == [BRAIN_CT]


def test_tokens_and_roles(seeded: Seeded) -> None:
    assert seeded.hub.client.get("/dicom-web/studies").status_code == 401
    assert _get(seeded, "/dicom-web/studies", who="site_a").status_code == 403
    assert _get(seeded, "/dicom-web/studies", who="clinician").status_code == 403


def test_search_accept_negotiation(seeded: Seeded) -> None:
    assert (
        _get(seeded, "/dicom-web/studies", accept="application/json")
        .headers["content-type"]
        .startswith("application/json")
    )
    assert _get(seeded, "/dicom-web/studies", accept="*/*").status_code == 200
    assert (
        _get(seeded, "/dicom-web/studies", accept='multipart/related; type="application/dicom+xml"').status_code == 406
    )
    assert _get(seeded, "/dicom-web/studies", accept="application/dicom+json; q=nope").status_code == 400


@pytest.mark.postgres
def test_matching_on_postgresql(pg_hub: Any) -> None:
    """The same matching on PostgreSQL (LIKE is case-sensitive there, NULL dates sort differently)."""
    from tests.dicomweb.conftest import seed

    s = seed(pg_hub)
    assert _uids(_ok(s, "/dicom-web/studies")) == [LUNG_MR, LUNG_CT]
    assert _uids(_ok(s, "/dicom-web/studies?StudyDescription=chest*")) == [LUNG_CT]
    assert _uids(_ok(s, "/dicom-web/studies?PatientName=pseudo-2")) == [LUNG_MR]
    assert _uids(_ok(s, "/dicom-web/studies?StudyDescription=%E9%A0%AD%E9%83%A8*")) == [LUNG_MR]
    assert _uids(_ok(s, "/dicom-web/studies?StudyDate=-20201231&ModalitiesInStudy=CT")) == [LUNG_CT]
    assert _uids(_ok(s, "/dicom-web/studies?PatientID=PSEUDO-%3F")) == [LUNG_MR, LUNG_CT]
    ct = _ok(s, f"/dicom-web/studies?StudyInstanceUID={LUNG_CT}")[0]
    assert ct["00201206"]["Value"] == [1] and ct["00201208"]["Value"] == [2]
    assert len(_ok(s, f"/dicom-web/studies/{LUNG_CT}/series/{LUNG_CT_SERIES}/instances")) == 2
    assert _uids(_ok(s, "/dicom-web/series?Modality=MR"), "0020000D") == [LUNG_MR]
    assert _ok(s, f"/dicom-web/studies?StudyInstanceUID={BRAIN_CT}") == []


@pytest.mark.postgres
@pytest.mark.parametrize(
    "url",
    [
        "/dicom-web/studies?PatientID=a%00b",
        "/dicom-web/studies?StudyDescription=%00*",
        "/dicom-web/studies/1.2%003",
        "/dicom-web/studies/1.2%003/series",
        "/dicom-web/studies/1.2/series/1%0A2/metadata",
        "/dicom-web/studies/" + "1" * 65,
    ],
)
def test_control_characters_are_400_not_a_database_error(pg_hub: Any, url: str) -> None:
    """PostgreSQL refuses NUL in text: it must never get that far (it would be a 500)."""
    r = pg_hub.client.get(url, headers=pg_hub.auth("researcher"))
    assert r.status_code == 400, r.text


def test_reads_are_served_by_plain_endpoints_with_the_same_checks_and_audit(seeded: Seeded) -> None:
    """QIDO and metadata GETs are matched by plain Starlette endpoints (no FastAPI dependency solving)
    that run the documented routes' own checks; refusals are problem details and audited; HEAD is still
    405 and the API description still has the documented routes."""
    from starlette.routing import Match

    from medcloud.hub.routes.dicomweb import _PLAIN_READS

    assert len(_PLAIN_READS) == 9
    h = seeded.hub
    app_routes = h.client.app.router.routes  # the app's own list: the plain endpoints come before every router
    for path, route, _ in _PLAIN_READS:
        concrete = "/dicom-web" + path.format(study=LUNG_CT, series=LUNG_CT_SERIES, instance="1.2")
        scope = {"type": "http", "method": "GET", "path": concrete, "root_path": ""}
        first = next(r for r in app_routes if r.matches(scope)[0] == Match.FULL)
        assert getattr(first, "endpoint", None).__name__ == f"plain_{route.__name__}"
    meta = f"/dicom-web/studies/{LUNG_CT}/series/{LUNG_CT_SERIES}/metadata"
    assert h.client.get("/dicom-web/studies").status_code == 401
    wrong = {"Authorization": "Bearer " + h.tokens["researcher"][:-4] + "AAAA"}  # a wrong secret
    r = h.client.get(meta, headers=wrong)
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    r = _get(seeded, meta, who="site_a")
    assert r.status_code == 403 and r.headers["content-type"] == "application/problem+json"
    assert r.headers["cache-control"] == "no-store" and "content-security-policy" in r.headers
    assert _get(seeded, f"/dicom-web/studies/{BRAIN_CT}/metadata").status_code == 404  # another project's
    assert len(_ok(seeded, meta)) == 2
    events = h.client.get("/api/v1/audit?limit=100", headers=h.auth("auditor")).json()["items"]
    refused = [(e["action"], e["outcome"]) for e in events if e["outcome"].startswith("refused:")]
    assert refused == [
        ("GET /dicom-web/studies", "refused:401:unauthenticated"),
        ("GET " + meta, "refused:401:unauthenticated"),
        ("GET " + meta, "refused:403:forbidden"),  # refused by the check, before the route names its read
        ("dicomweb.metadata", "refused:404:not-found"),
    ]
    assert [e["outcome"] for e in events if e["action"] == "dicomweb.metadata"][-1] == "ok"
    r = h.client.head("/dicom-web/studies", headers=h.auth("researcher"))
    assert r.status_code == 405
    doc = h.client.get("/api/v1/openapi.json", headers=h.auth("admin")).json()
    assert (
        "get" in doc["paths"]["/dicom-web/studies"]
        and "get" in doc["paths"]["/dicom-web/studies/{study}/series/{series}/metadata"]
    )


def test_plain_read_endpoints_check_the_permission_their_documented_route_declares() -> None:
    """Each plain read endpoint awaits the same `require(...)` as the documented route it stands in for:
    a documented route whose permission changes cannot leave its plain twin on the old one."""
    from fastapi.routing import APIRoute

    from medcloud.hub.routes.dicomweb import _PLAIN_READS, router

    def permissions(route: APIRoute) -> set[object]:
        return {getattr(d.call, "permission", None) for d in route.dependant.dependencies} - {None}

    for path, route_fn, depends in _PLAIN_READS:
        documented = [
            r for r in router.routes
            if isinstance(r, APIRoute) and r.path == router.prefix + path and "GET" in r.methods
        ]  # fmt: skip
        assert len(documented) == 1, path
        assert documented[0].endpoint is route_fn, path
        assert permissions(documented[0]) == {depends.dependency.permission}, path


def _count_hops(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the functions the DICOMweb routes hand to a worker thread, from now on."""
    from medcloud.hub.routes import dicomweb as routes

    hops: list[str] = []
    threadpool = routes.run_in_threadpool

    async def counted(func: Any, *args: Any, **kwargs: Any) -> Any:
        hops.append(getattr(func, "__name__", repr(func)))
        return await threadpool(func, *args, **kwargs)

    monkeypatch.setattr(routes, "run_in_threadpool", counted)
    return hops


def test_searches_run_inline_on_sqlite_and_a_slow_one_goes_to_a_worker_thread(
    seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On SQLite a search runs on the event loop within a budget (no hop to a worker thread); one that runs
    past it is stopped and run again in a worker thread with the same answer, and its shape goes straight
    to a thread from then on."""
    from medcloud.hub.routes import dicomweb as routes
    from medcloud.store import db as dbmod
    from medcloud.store.dicomweb import DicomwebQueries, _Shapes

    monkeypatch.setattr(DicomwebQueries, "_slow", _Shapes())  # this test's own record of slow shapes
    hops = _count_hops(monkeypatch)
    url = "/dicom-web/studies?PatientID=PSEUDO-1&includefield=00081030"
    expected = _ok(seeded, url)
    assert _uids(expected) == [LUNG_CT]
    hops.clear()
    for _ in range(3):
        assert _ok(seeded, url) == expected
    assert hops == []  # answered on the event loop, no worker thread
    assert len(DicomwebQueries._slow._keys) == 0
    # Every search now runs past its budget: stopped, run in a worker thread, same answer.
    monkeypatch.setattr(dbmod, "_PROGRESS_STEPS", 1)
    monkeypatch.setattr(routes, "INLINE_SEARCH_BUDGET_S", -1.0)
    assert _ok(seeded, url) == expected
    assert hops == ["search"]
    assert len(DicomwebQueries._slow._keys) == 1
    # The shape is known to be slow: not tried inline again (a budget of 1 s would now let it finish).
    monkeypatch.setattr(routes, "INLINE_SEARCH_BUDGET_S", 1.0)
    assert _ok(seeded, url) == expected
    assert hops == ["search", "search"]
    # Another shape (a study date range) is tried inline and, within the budget, answered there.
    assert _uids(_ok(seeded, "/dicom-web/studies?StudyDate=20200101-20200103")) == [LUNG_CT]
    assert hops == ["search", "search"]


@pytest.mark.postgres
def test_searches_on_postgresql_are_awaited_on_the_event_loop(pg_hub: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """On PostgreSQL a search is awaited on the event loop (psycopg's asyncio connection): no hop to a worker
    thread, at every level, with the answers the worker-thread path gives."""
    from medcloud.store.dicomweb import DicomwebQueries
    from tests.dicomweb.conftest import seed

    s = seed(pg_hub)
    urls = [
        "/dicom-web/studies?PatientID=PSEUDO-1&includefield=00081030",
        "/dicom-web/studies?StudyDate=-20201231&ModalitiesInStudy=CT",
        f"/dicom-web/studies/{LUNG_CT}/series",
        "/dicom-web/series?Modality=MR",
        f"/dicom-web/studies/{LUNG_CT}/series/{LUNG_CT_SERIES}/instances",
        "/dicom-web/instances?limit=1&offset=1",
    ]
    hops = _count_hops(monkeypatch)
    on_loop = [_ok(s, url) for url in urls]
    assert hops == []  # every search awaited on the loop
    assert _uids(on_loop[0]) == [LUNG_CT] and len(on_loop[4]) == 2 and len(on_loop[5]) == 1
    monkeypatch.setattr(DicomwebQueries, "async_reads", property(lambda self: False))
    assert [_ok(s, url) for url in urls] == on_loop  # the worker-thread path answers the same
    assert hops == ["search"] * len(urls)
