"""Reports benchmark: site de-identification, hub ingest with findings, and the finding filter (JSON).

    .venv/bin/python bench/reports.py [--reports 2000] [--batch 200] [--database-url URL]

Reports are built from the labelled NLP set (two sentences each) plus a name, an ID and an era date,
so the cleaner has something to remove. Site: `ReportDeidentifier` per CPU-second. Hub: a real hub
app (SQLite in a temporary folder unless --database-url) through FastAPI's in-process client,
`POST /api/v1/reports` in batches, findings extraction included. Query: median and p95 of
`GET /api/v1/studies?finding=nodule:present&finding=-pleural_effusion:present` over one catalogued
study per report (index rows written directly: the filter needs no blobs).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from fastapi.testclient import TestClient

from medcloud.config import load_settings
from medcloud.deid import SiteKey
from medcloud.deid.reports import Report, ReportDeidentifier
from medcloud.formats.records import DicomRecord
from medcloud.hub.app import create_app
from medcloud.hub.state import HubState
from medcloud.security.tokens import issue_token
from medcloud.store.index import IndexEntry

ROOT = Path(__file__).resolve().parents[1]
EXPLICIT_LE = "1.2.840.10008.1.2.1"


def main() -> None:
    """Run the three measurements and print one JSON object."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--reports", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--database-url", default=None)
    args = ap.parse_args()
    lines = (ROOT / "tests/nlp/data/findings_eval.jsonl").read_text(encoding="utf-8").splitlines()
    texts = [json.loads(line)["text"] for line in lines if line.strip()]
    raw = [
        Report(
            patient_id=f"{1000000 + i}",
            text=f"山田太郎様 ID {1000000 + i} 令和6年4月{1 + i % 28}日。"
            f"{texts[i % len(texts)]} {texts[(i * 7) % len(texts)]}",
            study_uid=f"1.2.392.200036.9116.{i}",
            date="20240401",
        )
        for i in range(args.reports)
    ]
    deid = ReportDeidentifier(SiteKey(bytes(range(32))))
    deid.deidentify(raw[0])  # warm-up: loads the Japanese analyser
    t = time.process_time()
    done, skipped = deid.deidentify_all(raw)
    site_cpu = time.process_time() - t
    payload = [r.to_json() for r in done]

    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(data_dir=Path(tmp) / "hub", database_url=args.database_url)
        state = HubState.open(settings)
        site = issue_token(state.catalog, role="site", site="site-a", projects=["lung"]).token
        researcher = issue_token(state.catalog, role="researcher", projects=["lung"]).token
        # One catalogued study per report (index rows only: the blobs play no part in the filter).
        entries = [
            IndexEntry(
                DicomRecord(r.study_uid, r.study_uid + ".1", r.study_uid + ".1.1", "1.2.840.10008.5.1.4.1.1.2",
                            r.patient, None, None, None, "", "CT", "CHEST", "", 1, 1, 512, 512, 1, EXPLICIT_LE),
                "0" * 64,
                1,
            )
            for r in done
        ]  # fmt: skip
        with state.catalog.write() as conn:
            state.catalog.index.batch(conn, entries, site="site-a", project="lung")
        with TestClient(create_app(settings, state=state)) as client:
            wall, cpu = time.perf_counter(), time.process_time()
            for i in range(0, len(payload), args.batch):
                r = client.post(
                    "/api/v1/reports",
                    content=json.dumps(payload[i : i + args.batch]),
                    headers={"Authorization": f"Bearer {site}"},
                )
                assert r.status_code in (200, 201), r.text
            ingest_wall, ingest_cpu = time.perf_counter() - wall, time.process_time() - cpu
            if args.database_url:
                # Fresh tables have no planner statistics until autovacuum's first ANALYZE (within a minute on a
                # live hub); without them PostgreSQL nests loops over the findings and queries take ~0.5 s.
                with state.catalog.db.engine.connect() as conn:
                    conn.exec_driver_sql("ANALYZE")
                    conn.commit()
            auth = {"Authorization": f"Bearer {researcher}"}

            def timed(params: dict[str, list[str]]) -> tuple[list[float], int]:
                times: list[float] = []
                total = 0
                for _ in range(50):
                    t0 = time.perf_counter()
                    r = client.get("/api/v1/studies", params=params, headers=auth)
                    times.append((time.perf_counter() - t0) * 1000)
                    assert r.status_code == 200, r.text
                    total = int(r.json()["total"])
                return sorted(times), total

            times, matched = timed({"finding": ["nodule:present", "-pleural_effusion:present"]})
            plain, _ = timed({})
        state.close()
    times.sort()
    print(
        json.dumps(
            {
                "reports": len(raw),
                "skipped_at_site": len(skipped),
                "site_deid_reports_per_cpu_s": round(len(done) / site_cpu),
                "hub_ingest_reports_per_s_wall": round(len(payload) / ingest_wall),
                "hub_ingest_reports_per_cpu_s": round(len(payload) / ingest_cpu),
                "studies": len(entries),
                "finding_query_matches": matched,
                "finding_query_ms_median": round(statistics.median(times), 2),
                "finding_query_ms_p95": round(times[int(0.95 * (len(times) - 1))], 2),
                "unfiltered_query_ms_median": round(statistics.median(plain), 2),
                "database": "postgresql" if args.database_url else "sqlite",
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
