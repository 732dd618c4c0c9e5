"""The SQLite catalog in clear vs encrypted with SQLCipher (raw 256-bit key), side by side in one run.

    .venv/bin/python bench/catalog_cipher.py [--n 20000] [--connects 300] [--repeat 3] [--ingest 400]

Per round, for each mode (interleaved): opening a connection (connect, key, a first read of the schema),
the same with a passphrase (SQLCipher's PBKDF2, what the raw key avoids), filling a fresh catalog with
`--n` SYNTHETIC instances (bench/catalog_fill.py's spread, one transaction, schema migrated first), and
searches on a fresh connection each (so pages are read and, encrypted, decrypted again): studies by
pseudonym prefix, by description word, by date range, and a count of instances. Medians over rounds,
ratios encrypted / plain. With `--ingest N` (default 400), the hub's ingest in process (no HTTP) of N
files in batches of 100, and of N/4 files one commit each, with no encryption, with the blob store
encrypted and the catalog in clear, and with both: files/s and CPU ms per file. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent / "src"))

from medcloud.security.catalog_cipher import connect  # noqa: E402
from medcloud.store.db import Database  # noqa: E402
from medcloud.store.filler import fill_realistic  # noqa: E402

QUERIES = {
    "pseudonym_prefix": "SELECT count(*) FROM studies WHERE patient_pseudonym LIKE 'MC%'",
    "description_word": "SELECT count(*) FROM studies WHERE description LIKE '%CT%'",
    "date_range": "SELECT count(*) FROM studies WHERE study_date BETWEEN '2015-01-01' AND '2018-12-31'",
    "instances": "SELECT count(*) FROM instances",
}


def _connects(path: Path, key: bytes | None, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        con = connect(path, key)
        con.execute("SELECT count(*) FROM sqlite_master").fetchone()  # the schema read (SQLCipher: the key check)
        con.close()
    return (time.perf_counter() - start) / n * 1e3


def _passphrase_connects(work: Path, n: int) -> float:
    """The same with a passphrase (a small database of its own): PBKDF2-HMAC-SHA512, 256,000 rounds."""
    import sqlcipher3.dbapi2 as dbapi

    path = work / "passphrase.sqlite3"
    phrase = "PRAGMA key = 'a passphrase, stretched by PBKDF2 on every connection'"
    if not path.exists():
        con = dbapi.connect(str(path))
        con.execute(phrase)
        con.execute("CREATE TABLE t (x)")
        con.commit()
        con.close()
    start = time.perf_counter()
    for _ in range(n):
        con = dbapi.connect(str(path))
        con.execute(phrase)
        con.execute("SELECT count(*) FROM sqlite_master").fetchone()
        con.close()
    return (time.perf_counter() - start) / n * 1e3


def _round(work: Path, mode: str, n: int, connects: int, seed: int) -> dict[str, Any]:
    path = work / f"{mode}-{seed}.sqlite3"
    key = os.urandom(32) if mode == "sqlcipher" else None
    db = Database(f"sqlite:///{path}", sqlite_synchronous="FULL", sqlite_key=key)
    try:
        start = time.perf_counter()
        db.migrate()
        with db.write() as conn:
            fill_realistic(conn, n, seed=seed, prefix=f"2.25.{seed + 7}")
        fill_s = time.perf_counter() - start
    finally:
        db.dispose()
    out: dict[str, Any] = {"fill_s": round(fill_s, 3), "instances_per_s": round(n / fill_s)}
    out["connect_ms"] = round(_connects(path, key, connects), 3)
    if mode == "sqlcipher":
        out["connect_passphrase_ms"] = round(_passphrase_connects(work, max(5, connects // 30)), 2)
    for name, sql in QUERIES.items():
        times = []
        for _ in range(5):
            con = connect(path, key)
            con.execute("SELECT count(*) FROM sqlite_master").fetchone()  # schema parsed before the clock starts
            t = time.perf_counter()
            con.execute(sql).fetchone()
            times.append(time.perf_counter() - t)
            con.close()
        out[f"{name}_ms"] = round(statistics.median(times) * 1e3, 3)
    out["file_bytes"] = path.stat().st_size
    return out


def _files(n: int) -> list[bytes]:
    """`n` de-identified-looking CT files: pydicom's bundled CT_small with fresh UIDs (SYNTHETIC identifiers)."""
    import io

    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    base = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    out = []
    for i in range(n):
        ds = base.copy()
        ds.PatientID = ds.PatientName = f"MCSYNTHETIC{i // 50:07d}"
        ds.StudyInstanceUID = generate_uid(prefix="2.25.")
        ds.SeriesInstanceUID = generate_uid(prefix="2.25.")
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(prefix="2.25.")
        ds.StudyDescription = f"SYNTHETIC BENCH {i % 7}"
        ds.PatientIdentityRemoved = "YES"
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        out.append(buf.getvalue())
    return out


def _ingest_round(work: Path, mode: str, files: list[bytes], batch: int, tag: str) -> dict[str, Any]:
    """In process, no HTTP: the hub's ingest (validate, store, index, group commit) of `files`.

    `none`: no encryption; `blobs`: the blob store and sealed values encrypted, the catalog in clear (as
    before SQLCipher); `all`: blobs and the catalog's pages (SQLCipher)."""
    import asyncio

    from medcloud.config import load_settings
    from medcloud.hub.state import HubState
    from medcloud.ingest.pipeline import UploadItem
    from medcloud.security.envelope import new_key_text
    from medcloud.store import Catalog

    data = work / f"ingest-{mode}-{tag}"
    key_file = None
    if mode != "none":
        key_file = work / f"kek-{mode}-{tag}.hex"
        key_file.write_text(new_key_text() + "\n")
    if mode == "blobs":  # a catalog made in clear before encryption was switched on stays in clear
        data.mkdir()
        plain = Catalog.from_settings(load_settings(data_dir=data))
        plain.migrate()
        plain.dispose()
    settings = load_settings(data_dir=data, encryption_key_file=key_file)
    state = HubState.open(settings)
    ing = state.ingestor

    async def spool(blob: bytes) -> Any:
        async def chunks() -> Any:
            yield blob

        return await ing.receive(chunks(), max_bytes=10_000_000, declared=len(blob))

    try:
        assert state.catalog.db.encrypted is (mode == "all")
        wall, cpu = time.perf_counter(), time.process_time()
        for i in range(0, len(files), batch):
            items = [UploadItem(asyncio.run(spool(b))) for b in files[i : i + batch]]
            ing.ingest_many(items, site="s1", project="p", subject="bench", batch=batch > 1)
            bad = [it.error for it in items if it.error is not None]
            assert not bad, bad[:2]
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        state.close()
    return {"files_per_s": round(len(files) / wall, 1), "cpu_ms_per_file": round(cpu / len(files) * 1e3, 3)}


def _ingest(work: Path, n: int, repeat: int) -> dict[str, Any]:
    files = _files(n)
    out: dict[str, Any] = {}
    for label, batch in (("batch_100", 100), ("one_per_commit", 1)):
        count = files if batch > 1 else files[: max(50, n // 4)]
        rounds: dict[str, list[dict[str, Any]]] = {"none": [], "blobs": [], "all": []}
        for r in range(repeat):
            order = ["none", "blobs", "all"] if r % 2 == 0 else ["all", "blobs", "none"]
            for mode in order:
                rounds[mode].append(_ingest_round(work, mode, count, batch, f"{label}-{r}"))
        med = {m: {k: statistics.median(x[k] for x in v) for k in v[0]} for m, v in rounds.items()}
        out[label] = {
            "files": len(count),
            "rounds": rounds,
            "median": med,
            "slower_pct_all_vs_none": round((1 - med["all"]["files_per_s"] / med["none"]["files_per_s"]) * 100, 1),
            "slower_pct_catalog_only": round((1 - med["all"]["files_per_s"] / med["blobs"]["files_per_s"]) * 100, 1),
            "cpu_ratio_all_vs_none": round(med["all"]["cpu_ms_per_file"] / med["none"]["cpu_ms_per_file"], 3),
            "cpu_ratio_catalog_only": round(med["all"]["cpu_ms_per_file"] / med["blobs"]["cpu_ms_per_file"], 3),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000, help="SYNTHETIC instances per catalog")
    ap.add_argument("--connects", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--ingest", type=int, default=400, help="Files for the in-process ingest comparison (0: skip)")
    a = ap.parse_args()
    rounds: dict[str, list[dict[str, Any]]] = {"plain": [], "sqlcipher": []}
    with tempfile.TemporaryDirectory(prefix="catalog-cipher-") as tmp:
        for r in range(a.repeat):
            for mode in ("plain", "sqlcipher") if r % 2 == 0 else ("sqlcipher", "plain"):
                rounds[mode].append(_round(Path(tmp), mode, a.n, a.connects, r))
        ingest = _ingest(Path(tmp), a.ingest, a.repeat) if a.ingest else None
    medians = {mode: {k: statistics.median(x[k] for x in rows) for k in rows[0]} for mode, rows in rounds.items()}
    ratios = {
        k: round(medians["sqlcipher"][k] / medians["plain"][k], 3) for k in medians["plain"] if medians["plain"][k]
    }
    print(
        json.dumps(
            {
                "instances": a.n,
                "synthetic": True,
                "rounds": rounds,
                "median": medians,
                "ratio_sqlcipher_over_plain": ratios,
                "ingest_in_process": ingest,
                "load_average": os.getloadavg(),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
