"""The catalog benches (bench/catalog_fill.py, bench/qido.py, bench/cohort.py) at tiny sizes, so they can't rot:
each runs end to end against real components (SQLite, PostgreSQL, a real hub over uvicorn) and its JSON is
checked for what the full run reports."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.hub.conftest import pg_url

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import catalog_fill  # noqa: E402
import cohort  # noqa: E402
import qido  # noqa: E402

__all__ = ["pg_url"]  # the fixture, for the test below


def test_catalog_fill_counts_rows_on_sqlite_and_postgresql(tmp_path: Path, pg_url: str) -> None:
    for url in (f"sqlite:///{tmp_path / 'c.db'}", pg_url):
        out = catalog_fill.fill(url, 3000, seed=1, progress=False)
        assert out["instances"] == 3000 and out["rows"]["instances"] == 3000
        assert out["rows"]["studies"] > 5 and out["rows"]["findings"] > 0 and out["synthetic"] is True


def test_catalog_fill_cli_prints_json(tmp_path: Path) -> None:
    cmd = [sys.executable, str(BENCH / "catalog_fill.py"), "--url", f"sqlite:///{tmp_path / 'c.db'}", "--n", "500"]
    out = subprocess.run(cmd, capture_output=True, check=True, timeout=300)
    assert json.loads(out.stdout)["rows"]["instances"] == 500


def test_cohort_bench_counts_agree_with_the_instance_join(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    catalog_fill.fill(url, 8000, seed=3, prefix="2.25.5", progress=False)
    out = cohort.measure(url, repeat=2)  # raises if the series-level count differs from the old join count
    assert set(out["queries"]) == set(cohort.QUERIES)
    assert out["queries"]["broad_ct"]["instances"] > 0 and out["worst_p95_ms"] > 0


@pytest.mark.slow
def test_qido_bench_against_a_real_hub(tmp_path: Path) -> None:
    run = qido.bench_hub(tmp_path, "sqlite", 1500, repeat=2, keep=False)
    q = run["queries"]
    assert q["series_metadata"]["rows"] == 100
    assert q["patient_id"]["rows"] >= 1  # the layout's patient is found by PatientID
    assert 1 <= q["ohif_list"]["rows"] <= 101 and q["study_date"]["p95_ms"] > 0
    assert q["study_date"]["rows"] == qido.DATE_MATCHES  # the range taken from the layout, not a fixed one


def test_qido_date_range_matches_the_same_number_of_studies_at_every_size() -> None:
    """The StudyDate query compares equal work across sizes: narrower ranges at larger sizes, 10 studies each."""
    from medcloud.store.filler_layout import plan

    ranges = {}
    for n in (1_400, 25_900, 120_000):
        text, count = qido.layout_date_range(n)
        low, high = text.split("-")
        layout = plan(n, seed=qido.SEED, prefix=qido.PREFIX, projects=qido.PROJECTS, sites=qido.SITES, report_share=0)
        dates = [st.date.strftime("%Y%m%d") for st in layout if st.date] + [qido.SERIES_DATE]
        assert count == qido.DATE_MATCHES == sum(low <= d <= high for d in dates), (n, text)
        ranges[n] = text
    assert len(set(ranges.values())) == 3  # a different (narrower) range at each size


@pytest.mark.slow
def test_qido_bench_interleaved_on_postgresql_settles_measures_every_size_and_drops_its_databases(
    tmp_path: Path, pg_url: str
) -> None:
    import sqlalchemy as sa

    prefix = f"qidosmoke_{tmp_path.name[-12:].lower().replace('-', '_')}"
    runs = qido.bench_interleaved(tmp_path, "postgresql", [1500, 3000], 12, False, prefix, True, chunk=5)
    assert [r["instances"] for r in runs] == [1500, 3000]
    for run in runs:
        q = run["queries"]
        assert run["settled"] is True and run["interleaved"] == {"chunk": 5, "with_sizes": [1500, 3000]}
        assert {k: v["n"] for k, v in q.items()} == dict.fromkeys(q, 12)  # 5 + 5 + 2 per query, every size
        assert q["series_metadata"]["rows"] == 100 and q["study_date"]["rows"] == qido.DATE_MATCHES
        assert q["patient_id"]["rows"] >= 1 and q["ohif_list"]["p95_ms"] >= q["ohif_list"]["p50_ms"] > 0
    admin = sa.create_engine(qido.PG_ADMIN + "postgres")
    with admin.connect() as conn:
        left = conn.exec_driver_sql("SELECT datname FROM pg_database WHERE datname LIKE %s", (prefix + "%",)).all()
    admin.dispose()
    assert left == []  # without --keep the bench's databases are dropped


def test_qido_orthanc_upload_overlaps_building_with_sending_and_bounds_what_is_taken() -> None:
    """bench/qido.py fills Orthanc by sending files while the next are built: every item is sent once, the
    builder runs ahead of the finished sends by at most `window`, and sending starts before building ends."""
    import threading

    lock = threading.Lock()
    finished: list[int] = []
    first_sent = threading.Event()
    ahead: list[int] = []

    def build() -> Iterator[int]:
        for k in range(200):
            with lock:
                ahead.append(k - len(finished))
            if k == 20:  # the builder is still running: a send must already have happened
                assert first_sent.wait(10), "nothing was sent before the files were all built"
            yield k

    def send(k: int) -> None:
        first_sent.set()
        with lock:
            finished.append(k)

    assert qido.upload_overlapped(build(), send, workers=4, window=8) == 200
    assert sorted(finished) == list(range(200))
    assert max(ahead) <= 8


def test_qido_orthanc_upload_raises_the_first_send_error_and_stops_building() -> None:
    taken: list[int] = []

    def build() -> Iterator[int]:
        for k in range(1000):
            taken.append(k)
            yield k

    def send(k: int) -> None:
        if k == 30:
            raise RuntimeError("Orthanc said 500")

    with pytest.raises(RuntimeError, match="Orthanc said 500"):
        qido.upload_overlapped(build(), send, workers=2, window=4)
    assert 30 < len(taken) < 1000  # it stopped taking items soon after the failure
