"""Fill a catalog with N SYNTHETIC instances (metadata only) with a realistic spread, for benchmarks.

    .venv/bin/python bench/catalog_fill.py --url sqlite:////tmp/catalog.db --n 1000000
    .venv/bin/python bench/catalog_fill.py --url postgresql+psycopg://postgres@127.0.0.1:5432/bench --n 1000000

The spread is `medcloud.store.filler_layout.plan`: patients with 1-8 studies, study types with their series
(radiographs of 1-2 images, CT of 50-300 slices, MR of 4-10 sequences ...), series of 1-300 instances, sex,
age, dates, projects, sites, Latin and kanji pseudonyms, and reports with findings (code, status) on a share
of studies (`--report-share`). Every row is labelled SYNTHETIC; no image stands behind an instance row.
The schema is migrated first; rows are added to what is there (run twice with another `--prefix`).
Prints one JSON object: rows per table, seconds, instances per second.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent / "src"))

from medcloud.store.db import Database  # noqa: E402
from medcloud.store.filler import fill_realistic  # noqa: E402


def fill(
    url: str,
    n: int,
    *,
    seed: int = 0,
    prefix: str = "2.25.8",
    report_share: float = 0.6,
    progress: bool = True,
    projects: Sequence[str] = ("lung", "brain", "abdomen"),
    sites: Sequence[str] = ("site-a", "site-b", "site-c", "site-d"),
) -> dict[str, Any]:
    """Migrate the catalog at `url`, add `n` synthetic instances in one transaction, ANALYZE, report."""
    db = Database(url, sqlite_synchronous="NORMAL")
    try:
        db.migrate()
        start = time.perf_counter()
        with db.write() as conn:
            if progress and n >= 50_000:
                from rich.console import Console
                from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

                cols = (BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
                with Progress("[progress.description]{task.description}", *cols, console=Console(stderr=True)) as bar:
                    task = bar.add_task("instances", total=n)
                    rows = fill_realistic(
                        conn, n, seed=seed, prefix=prefix, report_share=report_share, projects=projects, sites=sites,
                        on_instances=lambda k: bar.advance(task, k),
                    )  # fmt: skip
            else:
                rows = fill_realistic(
                    conn, n, seed=seed, prefix=prefix, report_share=report_share, projects=projects, sites=sites
                )
        filled = time.perf_counter() - start
        with db.write() as conn:
            conn.exec_driver_sql("ANALYZE")
        seconds = time.perf_counter() - start
    finally:
        db.dispose()
    return {
        "backend": db.dialect,
        "instances": n,
        "rows": rows,
        "fill_s": round(filled, 2),
        "with_analyze_s": round(seconds, 2),
        "instances_per_s": round(n / filled) if filled else None,
        "synthetic": True,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--url", required=True, help="SQLAlchemy URL of the catalog (sqlite:///... or postgresql+psycopg://...)"
    )
    ap.add_argument("--n", type=int, default=26_000, help="Instances to add")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--prefix", default="2.25.8", help="UID root of the synthetic rows (distinct per fill)")
    ap.add_argument("--report-share", type=float, default=0.6, help="Share of studies with a report")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args()
    out = fill(a.url, a.n, seed=a.seed, prefix=a.prefix, report_share=a.report_share, progress=not a.no_progress)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
