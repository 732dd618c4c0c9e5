"""Cohort query latency: count and first page of studies for image + finding queries, p50/p95.

    .venv/bin/python bench/cohort.py --url postgresql+psycopg://postgres@127.0.0.1:5432/qidoperf_bench_1000000
    .venv/bin/python bench/cohort.py --fill 1000000 [--url ...]   # fill first (bench/catalog_fill.py)

Each query runs through `Datasets.preview` (what `POST /api/v1/cohorts/preview` and `medcloud cohort preview`
call): totals of instances, series, studies and patients, and the newest 20 studies, `--repeat` times after
3 warm-ups. The catalog holds SYNTHETIC metadata and reports with findings (store.filler). For reference,
the broad query is also counted the old way (joining every instance row), which the series-level count
replaced. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent / "src"))

from catalog_fill import fill  # noqa: E402

PROJECTS = ["abdomen", "brain", "lung"]
QUERIES: dict[str, list[dict[str, Any]]] = {
    "ptx_not_effusion": [
        {"kind": "finding", "code": "pneumothorax", "status": "present"},
        {"kind": "finding", "code": "pleural_effusion", "status": "present", "negate": True},
    ],
    "ptx_not_effusion_cr_f_40_79": [
        {"kind": "finding", "code": "pneumothorax", "status": "present"},
        {"kind": "finding", "code": "pleural_effusion", "status": "present", "negate": True},
        {"kind": "image", "modality": "CR", "sex": "F", "age_min": 40, "age_max": 79},
    ],
    "nodule_ct_chest_since_2020": [
        {"kind": "finding", "code": "nodule", "status": "present"},
        {"kind": "image", "modality": "CT", "body_part": "CHEST", "date_from": "2020-01-01"},
    ],
    "broad_ct": [{"kind": "image", "modality": "CT"}],
    "broad_site_recent": [{"kind": "image", "site": "site-a", "date_from": "2020-01-01"}],
    "not_pneumonia": [{"kind": "finding", "code": "pneumonia", "status": "present", "negate": True}],
}


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(url: str, repeat: int) -> dict[str, Any]:
    import sqlalchemy as sa

    from medcloud.store.datasets import Datasets
    from medcloud.store.db import Database
    from medcloud.store.tables import findings, instances

    db = Database(url)
    ds = Datasets(db)
    out: dict[str, Any] = {"backend": db.dialect, "queries": {}}
    try:
        with db.read() as conn:
            out["instances"] = int(conn.execute(sa.select(sa.func.count()).select_from(instances)).scalar_one())
            out["findings"] = int(conn.execute(sa.select(sa.func.count()).select_from(findings)).scalar_one())
        for name, query in QUERIES.items():
            times = []
            for i in range(repeat + 3):
                t = time.perf_counter()
                got = ds.preview(query, PROJECTS, limit=20)
                if i >= 3:
                    times.append((time.perf_counter() - t) * 1000)
            out["queries"][name] = {
                "p50_ms": round(statistics.median(times), 2),
                "p95_ms": round(_pct(times, 0.95), 2),
                "instances": got["instances"],
                "studies": got["studies"],
                "page": len(got["items"]),
            }
        # The old count: every matching instance row joined to its series and study.
        q = sa.select(sa.func.count()).select_from(ds._match_query(QUERIES["broad_ct"], PROJECTS).subquery())
        times = []
        with db.read() as conn:
            for _ in range(max(3, repeat // 10)):
                t = time.perf_counter()
                old = int(conn.execute(q).scalar_one())
                times.append((time.perf_counter() - t) * 1000)
        if old != out["queries"]["broad_ct"]["instances"]:
            raise RuntimeError(f"series-level count {out['queries']['broad_ct']['instances']} != instance count {old}")
        out["broad_ct_instance_join_count_ms"] = round(statistics.median(times), 1)
    finally:
        db.dispose()
    out["worst_p95_ms"] = max(v["p95_ms"] for v in out["queries"].values())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="sqlite:////tmp/cohort-bench.db")
    ap.add_argument("--fill", type=int, default=0, help="Add this many synthetic instances first")
    ap.add_argument("--repeat", type=int, default=50)
    a = ap.parse_args()
    filled = fill(a.url, a.fill, seed=3, prefix="2.25.5", progress=sys.stderr.isatty()) if a.fill else None
    result = measure(a.url, a.repeat)
    result["bench"] = "cohort"
    result["loadavg_1m"] = round(__import__("os").getloadavg()[0], 1)  # the machine is shared: say how busy
    if filled:
        result["fill"] = filled
    print(json.dumps(result))


if __name__ == "__main__":
    main()
