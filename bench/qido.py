"""QIDO-RS and series metadata latency over HTTP: the hub (uvicorn on 127.0.0.1) at two catalog sizes on
SQLite and PostgreSQL, and Orthanc 1.10.1 + DICOMweb 1.7 side by side at the smaller size.

    .venv/bin/python bench/qido.py [--sizes 26000,1000000] [--backends sqlite,postgresql] [--repeat 50]
                                   [--orthanc-size 26000] [--no-orthanc] [--keep] [--pg-db NAME]
                                   [--interleave] [--settle] [--curl N] [--upload-clients 4]
                                   [--orthanc-dir DIR]

The catalog is filled by bench/catalog_fill.py (SYNTHETIC metadata rows, realistic spread), then one real
100-instance CT series (pydicom's CT_small.dcm with fresh UIDs, PatientIdentityRemoved=YES) is ingested
through the hub's batch endpoint, so that its metadata is read from real stored files. Orthanc gets the
same layout as real (small, SYNTHETIC) DICOM files uploaded through its REST API (`POST /instances`, one
file per request, `--upload-clients` threads with a keep-alive connection each, the files generated while
earlier ones upload), plus the same 100-instance series. Orthanc's configuration is its default but for
paths, port, the DICOMweb plugin, no DICOM server and no HTTP authentication (`StorageCompression` false,
SQLite index, `SaveJobs` and `MaximumStorageCacheSize` are left at their defaults); it runs loopback-only
in its own network namespace (FACTS.md) and this script, inside it, is its client. Queries, each
`--repeat` times after 3 warm-ups, one keep-alive client, p50/p95 in ms:

- `patient_id`: `/studies?PatientID=<a patient of the catalog>`
- `study_date`: `/studies?StudyDate=A-B`, where A-B is a range of the filled layout that holds exactly
  `DATE_MATCHES` studies whatever the size (narrower at larger sizes), so that sizes compare equal work
- `ohif_list`: OHIF v3's study list `/studies?limit=101&offset=0&fuzzymatching=false&includefield=...`
- `series_metadata`: `/studies/{s}/series/{se}/metadata` of the 100-instance series

`--curl N` also times the same four URLs (as httpx builds them, same headers) with curl, N times each on
one keep-alive connection after 3 warm-ups (`%{time_total}`), on both sides: how much of a request's time
is the Python client's.

`--orthanc-dir DIR` keeps Orthanc's storage and index in DIR and reuses them when they already hold the
layout at `--orthanc-size` (fill once, measure later on a quiet machine); `--backends ""` measures Orthanc
only.

`--interleave` fills and serves every size at once and measures them in alternating rounds of 10 requests
per query (a load spike on the shared machine then falls on every size alike); `--settle` runs VACUUM
ANALYZE and CHECKPOINT on a PostgreSQL catalog after its bulk fill, before measuring.

`client_floor` is each client's own time per request, measured against a null server that answers at once
(`--null-server`); `ratio_ceilings` are Orthanc's p50 over that floor: the highest ratio that client could
show for a hub that took no time at all.

Prints one JSON object; `ratios` are Orthanc p50 / hub p50 at the Orthanc size, and `pg_p95_growth` the
hub's p95 at the largest size over the smallest, on PostgreSQL.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import itertools
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, TypeVar

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent / "src"))

from catalog_fill import fill  # noqa: E402
from ingest import _env, _free_port, _medcloud, _wait_http, orthanc_binary, run_beside_orthanc  # noqa: E402

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/"
PROJECTS = ("lung", "brain", "abdomen")
SITES = ("site-a", "site-b", "site-c", "site-d")
SEED, PREFIX = 11, "2.25.6"
SERIES_STUDY, SERIES_UID, SERIES_PATIENT = "2.25.777000.1", "2.25.777000.1.1", "MC7QIDOBENCHSERIES"
SERIES_DATE = "20240115"
OHIF = {
    "limit": "101",
    "offset": "0",
    "fuzzymatching": "false",
    "includefield": "00081030,00080060,00080090,00100030",
}
# The StudyDate query matches this many studies at every size (a fixed range matched 2 studies at 26 k and
# 55 at 1 M, so its growth measured the answer's size, not the search).
DATE_MATCHES = 10


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


META = {"Accept": "application/dicom+json"}


def _timed(
    client: Any, url: str, params: dict[str, str] | None, headers: dict[str, str], n: int
) -> tuple[list[float], int]:
    """`n` timed requests (ms), and the number of rows of the last answer."""
    times: list[float] = []
    rows = 0
    for _ in range(n):
        t = time.perf_counter()
        r = client.get(url, params=params, headers=headers)
        dt = (time.perf_counter() - t) * 1000
        if r.status_code not in (200, 204):
            raise RuntimeError(f"{url} {params}: {r.status_code} {r.text[:300]}")
        rows = len(r.json()) if r.status_code == 200 else 0
        times.append(dt)
    return times, rows


def curl_timed(url: str, params: dict[str, str] | None, headers: dict[str, str], n: int) -> list[float]:
    """`n` timed requests (ms) of the same URL by one curl process on one keep-alive connection, after 3
    warm-ups: curl's own `%{time_total}` per transfer, so no Python client is in the measurement."""
    import httpx

    full = str(httpx.Request("GET", url, params=params).url)  # byte for byte the URL httpx sends
    cmd = ["curl", "-s", "-w", "%{http_code} %{num_connects} %{time_total}\\n"]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    for _ in range(n + 3):
        cmd += ["-o", "/dev/null", full]
    out = subprocess.run(cmd, capture_output=True, check=True, timeout=600).stdout.decode().split()
    codes, connects, totals = out[0::3], out[1::3], out[2::3]
    if len(totals) != n + 3 or any(c not in ("200", "204") for c in codes):
        raise RuntimeError(f"curl {full}: {codes[:5]}")
    if any(c != "0" for c in connects[1:]):
        raise RuntimeError(f"curl {full}: the connection was not kept alive ({connects})")
    return [float(t) * 1000 for t in totals[3:]]


def _stats(times: list[float]) -> dict[str, Any]:
    return {"p50_ms": round(statistics.median(times), 2), "p95_ms": round(_pct(times, 0.95), 2), "n": len(times)}


def _time(client: Any, url: str, params: dict[str, str] | None, headers: dict[str, str], repeat: int) -> dict[str, Any]:
    _timed(client, url, params, headers, 3)  # warm-up
    times, rows = _timed(client, url, params, headers, repeat)
    return {**_stats(times), "rows": rows}


def _requests(hub: dict[str, Any]) -> dict[str, tuple[str, dict[str, str] | None]]:
    base = hub["base"]
    return {
        "patient_id": (f"{base}/studies", {"PatientID": hub["patient"]}),
        "study_date": (f"{base}/studies", {"StudyDate": hub["dates"][0]}),
        "ohif_list": (f"{base}/studies", OHIF),
        "series_metadata": (f"{base}/studies/{SERIES_STUDY}/series/{SERIES_UID}/metadata", None),
    }


def queries(
    client: Any, base: str, headers: dict[str, str], patient: str, date_range: tuple[str, int], repeat: int
) -> dict[str, Any]:
    """The four measurements against a DICOMweb root `base`."""
    meta = {**headers, **META}
    hub = {"base": base, "patient": patient, "dates": date_range}
    out = {name: _time(client, url, params, meta, repeat) for name, (url, params) in _requests(hub).items()}
    if out["series_metadata"]["rows"] != 100:
        raise RuntimeError(f"series metadata returned {out['series_metadata']['rows']} instances, not 100")
    if out["study_date"]["rows"] != date_range[1]:
        raise RuntimeError(f"StudyDate={date_range[0]} returned {out['study_date']['rows']}, not {date_range[1]}")
    out["study_date"]["range"] = date_range[0]
    return out


def curl_queries(
    base: str, headers: dict[str, str], patient: str, date_range: tuple[str, int], repeat: int
) -> dict[str, Any]:
    """The four requests of `queries`, timed by curl instead of the Python client."""
    meta = {**headers, **META}
    hub = {"base": base, "patient": patient, "dates": date_range}
    return {name: _stats(curl_timed(url, params, meta, repeat)) for name, (url, params) in _requests(hub).items()}


# -- files -------------------------------------------------------------------------------------------------
def series_files(n: int = 100) -> list[bytes]:
    """One real CT series of `n` instances (pydicom's CT_small.dcm, fresh SOP UIDs, marked de-identified)."""
    import pydicom
    from pydicom.data import get_testdata_file

    template = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    out = []
    for i in range(n):
        ds = template.copy()
        ds.PatientID = ds.PatientName = SERIES_PATIENT
        ds.StudyInstanceUID, ds.SeriesInstanceUID = SERIES_STUDY, SERIES_UID
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"{SERIES_UID}.{i + 1}"
        ds.InstanceNumber = i + 1
        ds.StudyDate = SERIES_DATE
        ds.PatientIdentityRemoved = "YES"
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        out.append(buf.getvalue())
    return out


def synthetic_files(n: int) -> Iterator[bytes]:
    """The catalog filler's layout as small real DICOM files (8x8 pixels, SYNTHETIC), for Orthanc."""
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    from medcloud.store.filler_layout import plan

    pixels = np.zeros((8, 8), dtype=np.uint16).tobytes()
    for st in plan(n, seed=SEED, prefix=PREFIX, projects=PROJECTS, sites=SITES, report_share=0.0):
        for se in st.series:
            for j, sop in enumerate(se.instances):
                meta = FileMetaDataset()
                meta.MediaStorageSOPClassUID = se.sop_class
                meta.MediaStorageSOPInstanceUID = sop
                meta.TransferSyntaxUID = ExplicitVRLittleEndian
                ds = Dataset()
                ds.file_meta = meta
                ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: kanji pseudonyms
                ds.SOPClassUID, ds.SOPInstanceUID = se.sop_class, sop
                ds.PatientName = ds.PatientID = st.patient
                ds.PatientSex = st.sex or ""
                ds.PatientAge = st.age or ""
                ds.StudyInstanceUID, ds.SeriesInstanceUID = st.uid, se.uid
                ds.StudyDate = st.date.strftime("%Y%m%d") if st.date else ""
                ds.StudyDescription, ds.SeriesDescription = st.description, se.description
                ds.Modality, ds.BodyPartExamined = se.modality, se.body_part
                ds.SeriesNumber, ds.InstanceNumber = se.number, j + 1
                ds.Rows = ds.Columns = 8
                ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
                ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
                ds.PixelData = pixels
                buf = io.BytesIO()
                ds.save_as(buf, enforce_file_format=True)
                yield buf.getvalue()


def layout_patient(n: int) -> str:
    """A patient of the filled layout (the same in the hub and in Orthanc): the middle study's."""
    from medcloud.store.filler_layout import plan

    studies = [st.patient for st in plan(n, seed=SEED, prefix=PREFIX, projects=PROJECTS, sites=SITES, report_share=0)]
    # A Latin one: Orthanc's DICOMweb 1.7 finds nothing for percent-encoded values (kanji), see FACTS.md.
    return next(p for p in studies[len(studies) // 2 :] if p.isascii())


def layout_date_range(n: int, k: int = DATE_MATCHES) -> tuple[str, int]:
    """A StudyDate range of the filled layout (plus the 100-instance series' study) holding exactly `k`
    studies (all of them if there are fewer), the one nearest the middle of the dates; and its count."""
    from medcloud.store.filler_layout import plan

    studies = plan(n, seed=SEED, prefix=PREFIX, projects=PROJECTS, sites=SITES, report_share=0)
    dates = sorted([st.date.strftime("%Y%m%d") for st in studies if st.date] + [SERIES_DATE])
    k = min(k, len(dates))
    mid = (len(dates) - k) // 2
    # A window [i, i+k) whose edge dates no study outside it shares, so the range matches exactly k.
    for i in sorted(range(len(dates) - k + 1), key=lambda i: abs(i - mid)):
        j = i + k - 1
        if (i == 0 or dates[i - 1] < dates[i]) and (j == len(dates) - 1 or dates[j] < dates[j + 1]):
            return f"{dates[i]}-{dates[j]}", k
    return f"{dates[0]}-{dates[-1]}", len(dates)


# -- the hub -----------------------------------------------------------------------------------------------
def start_hub(
    stack: contextlib.ExitStack, work: Path, backend: str, size: int, keep: bool, pg_db: str = "qidoperf_bench",
    settle: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Fill a catalog of `size` instances, serve it (`medcloud hub serve`, 1 worker), ingest the 100-instance
    series; what to query. `stack` stops the server and drops the catalog (unless `keep`). `settle`: after
    the fill, VACUUM ANALYZE and CHECKPOINT (PostgreSQL), so the measurement does not share the machine
    with the bulk load's checkpoint and autovacuum (a catalog that grew over months is not just loaded)."""
    data = work / f"hub-{backend}-{size}"
    data.mkdir(parents=True)
    env = _env()
    if backend == "postgresql":
        import sqlalchemy as sa

        name = f"{pg_db}_{size}"
        admin = sa.create_engine(PG_ADMIN + "postgres", isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        admin.dispose()
        url = PG_ADMIN + name
        env["MEDCLOUD_DATABASE_URL"] = url
        if not keep:
            stack.callback(_drop_database, name)
    else:
        url = f"sqlite:///{(data / 'catalog.sqlite3').resolve()}"
    if not keep:
        stack.callback(shutil.rmtree, data, ignore_errors=True)
    filled = fill(
        url, size - 100, seed=SEED, prefix=PREFIX, progress=sys.stderr.isatty(), projects=PROJECTS, sites=SITES
    )
    if settle and backend == "postgresql":
        import sqlalchemy as sa

        engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
            conn.exec_driver_sql("CHECKPOINT")
        engine.dispose()

    def token(*args: str) -> str:
        cmd = _medcloud("hub", "token", "create", "--data", str(data), *args)
        return subprocess.run(cmd, env=env, capture_output=True, check=True).stdout.decode().strip()

    site = token("--role", "site", "--site", "site-a", "--project", "lung")
    reader = token("--role", "researcher", *[a for p in PROJECTS for a in ("--project", p)])
    port = _free_port()
    log = stack.enter_context((work / f"hub-{backend}-{size}.log").open("wb"))
    proc = subprocess.Popen(
        _medcloud("hub", "serve", "--data", str(data), "--port", str(port), "--workers", "1", "--log-level", "warning"),
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    stack.callback(_stop, proc)
    import httpx

    from medcloud.gateway.forwarder import encode_multipart

    base = f"http://127.0.0.1:{port}"
    _wait_http(base + "/healthz", 60, proc)
    parts = [(f, "application/dicom", hashlib.sha256(f).hexdigest(), f"{i}.dcm")
             for i, f in enumerate(series_files())]  # fmt: skip
    body, ctype = encode_multipart(parts)
    r = httpx.post(base + "/api/v1/ingest/batch", content=body, timeout=120,
                   headers={"Authorization": f"Bearer {site}", "Content-Type": ctype})  # fmt: skip
    if r.status_code not in (200, 201):
        raise RuntimeError(f"ingest of the 100-instance series: {r.status_code} {r.text[:300]}")
    return {
        "backend": backend, "instances": size, "fill": filled, "settled": settle and backend == "postgresql",
        "base": base + "/dicom-web", "headers": {"Authorization": f"Bearer {reader}"},
        "patient": layout_patient(size - 100), "dates": layout_date_range(size - 100),
    }  # fmt: skip


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _result(hub: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    keys = ("backend", "instances", "fill", "settled", "patient")
    return {**{k: hub[k] for k in keys}, "queries": result}


def bench_hub(
    work: Path, backend: str, size: int, repeat: int, keep: bool, pg_db: str = "qidoperf_bench", settle: bool = False,
    curl: int = 0,
) -> dict[str, Any]:  # fmt: skip
    """One size on one backend: fill, serve, measure the four queries (`repeat` each; `curl` times each
    with curl too)."""
    import httpx

    with contextlib.ExitStack() as stack:
        hub = start_hub(stack, work, backend, size, keep, pg_db, settle)
        with httpx.Client(timeout=120) as client:
            result = queries(client, hub["base"], hub["headers"], hub["patient"], hub["dates"], repeat)
        by_curl = curl_queries(hub["base"], hub["headers"], hub["patient"], hub["dates"], curl) if curl else None
    out = _result(hub, result)
    if by_curl:
        out["curl"] = by_curl
    return out


def bench_interleaved(
    work: Path, backend: str, sizes: list[int], repeat: int, keep: bool, pg_db: str, settle: bool, chunk: int = 10
) -> list[dict[str, Any]]:
    """Every size filled and served at once, then measured in alternating rounds (`chunk` requests of each
    query on one hub, then the next; the order of the hubs alternates), so that a load spike on the shared
    machine falls on every size alike instead of on whichever was measured while it lasted."""
    import httpx

    with contextlib.ExitStack() as stack:
        hubs = [start_hub(stack, work, backend, size, keep, pg_db, settle) for size in sizes]
        clients = [stack.enter_context(httpx.Client(timeout=120)) for _ in hubs]
        for hub, client in zip(hubs, clients, strict=True):  # warm-up, and the answers' checks
            queries(client, hub["base"], hub["headers"], hub["patient"], hub["dates"], 1)
        times: list[dict[str, list[float]]] = [{} for _ in hubs]
        rows: list[dict[str, int]] = [{} for _ in hubs]
        for r in range(-(-repeat // chunk)):
            n = min(chunk, repeat - r * chunk)
            order = list(range(len(hubs))) if r % 2 == 0 else list(range(len(hubs)))[::-1]
            for i in order:
                hub = hubs[i]
                for name, (url, params) in _requests(hub).items():
                    t, k = _timed(clients[i], url, params, {**hub["headers"], **META}, n)
                    times[i].setdefault(name, []).extend(t)
                    rows[i][name] = k
        out = []
        for hub, t, k in zip(hubs, times, rows, strict=True):
            result = {name: {**_stats(v), "rows": k[name]} for name, v in t.items()}
            result["study_date"]["range"] = hub["dates"][0]
            out.append({**_result(hub, result), "interleaved": {"chunk": chunk, "with_sizes": sizes}})
    return out


def _drop_database(name: str) -> None:
    import sqlalchemy as sa

    admin = sa.create_engine(PG_ADMIN + "postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


# -- Orthanc -----------------------------------------------------------------------------------------------
def bench_orthanc(
    work: Path, size: int, repeat: int, curl: int = 0, clients: int = 4, keep_dir: Path | None = None
) -> dict[str, Any]:
    """Orthanc filled with the layout at `size`, then measured. `keep_dir`: Orthanc's storage and index live
    there and stay; a later run given the same folder measures the Orthanc it holds without uploading again
    when it already holds `size` instances (a 1 M fill takes an hour or more)."""
    binary = orthanc_binary()
    assert binary is not None
    if keep_dir is not None:
        keep_dir.mkdir(parents=True, exist_ok=True)
    root = keep_dir.resolve() if keep_dir is not None else Path(tempfile.mkdtemp(prefix="orthanc-qido-", dir=work))
    cfg = {
        "Name": "qido", "StorageDirectory": str(root / "storage"), "IndexDirectory": str(root / "index"),
        "HttpPort": 8042, "DicomServerEnabled": False, "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False, "StorageCompression": False,
        "Plugins": ["/usr/share/orthanc/plugins/libOrthancDicomWeb.so"],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }  # fmt: skip
    try:
        child = [sys.executable, __file__, "--orthanc-client", str(size), str(repeat), str(curl), str(clients)]
        # about 100-400 files/s: allow an hour per 200 k instances, and never less than an hour
        result: dict[str, Any] = run_beside_orthanc(binary, root, cfg, child, timeout=3600 * max(1, size / 200_000))
    finally:
        if keep_dir is None:
            shutil.rmtree(root, ignore_errors=True)
    return result


T = TypeVar("T")


def upload_overlapped(items: Iterable[T], send: Callable[[T], None], workers: int, window: int) -> int:
    """`send` every item of `items` on `workers` threads, taking the next item from `items` (a generator
    that builds them) while earlier ones are being sent, with at most `window` taken and not yet sent. The
    first error of `send` is raised (after the items in flight are done, none taken after it); the count sent."""
    sent = 0
    with ThreadPoolExecutor(workers) as pool:
        pending: set[Future[None]] = set()
        try:
            for item in items:
                while len(pending) >= window:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for f in done:
                        f.result()
                        sent += 1
                pending.add(pool.submit(send, item))
            for f in pending:
                f.result()
                sent += 1
            pending = set()
        finally:
            for f in pending:
                f.cancel()
    return sent


def orthanc_client(size: int, repeat: int, curl: int = 0, clients: int = 4) -> None:
    """Child mode, inside Orthanc's network namespace: upload the layout and the series, then measure."""
    import httpx

    base = "http://127.0.0.1:8042"
    _wait_http(base + "/system", 60)
    local = threading.local()
    opened: list[httpx.Client] = []

    def post(data: bytes) -> None:  # a keep-alive connection per thread (a new one per file costs more)
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client(timeout=120)
            opened.append(client)
        r = client.post(base + "/instances", content=data, headers={"Content-Type": "application/dicom"})
        r.raise_for_status()

    held = int(httpx.get(base + "/statistics", timeout=120).json()["CountInstances"])
    start = time.perf_counter()
    try:
        if held == size:  # a kept Orthanc (--orthanc-dir) already filled with this layout
            sent = 0
        else:  # a partial fill is re-sent whole: Orthanc keeps an instance it already holds once
            files = itertools.chain(series_files(), synthetic_files(size - 100))  # built while earlier ones upload
            sent = upload_overlapped(files, post, clients, 8 * clients)
    finally:
        for c in opened:
            c.close()
    upload_s = time.perf_counter() - start
    with httpx.Client(timeout=120) as client:
        stats = client.get(base + "/statistics").json()
        patient, dates = layout_patient(size - 100), layout_date_range(size - 100)
        result = queries(client, base + "/dicom-web", {}, patient, dates, repeat)
    out = {"system": "orthanc 1.10.1 + dicomweb 1.7", "instances": int(stats["CountInstances"]),
           "reused_fill": sent == 0, "upload_s": round(upload_s, 1) if sent else None,
           "upload_files_per_s": round(sent / upload_s) if sent else None, "upload_clients": clients,
           "patient": patient, "queries": result}  # fmt: skip
    if curl:
        out["curl"] = curl_queries(base + "/dicom-web", {}, patient, dates, curl)
    print(json.dumps(out))


NULL_BODY = b'[{"0020000D":{"vr":"UI","Value":["1.2.3"]}}]'


def null_server(port: int) -> None:
    """Child mode: an HTTP/1.1 server that answers every request at once with the same small JSON body and
    does no other work (asyncio, one process), so that a client timed against it times itself."""
    import asyncio

    reply = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/dicom+json\r\ncontent-length: "
        + str(len(NULL_BODY)).encode()
        + b"\r\n\r\n"
        + NULL_BODY
    )

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                await reader.readuntil(b"\r\n\r\n")  # GET requests: no body
                writer.write(reply)

    async def run() -> None:
        server = await asyncio.start_server(serve, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    with contextlib.suppress(KeyboardInterrupt):  # stopped by SIGINT (`_stop`)
        asyncio.run(run())


def client_floor(repeat: int, curl: int) -> dict[str, Any]:
    """Each client's own time per request: p50 against `null_server` (a reply that costs the server
    nothing), for the Python client and, with `--curl`, for curl, with the study-list URL and headers of
    the searches. A server's time as a client sees it is at least this; a ratio Orthanc / hub timed by that
    client cannot exceed Orthanc's time over this floor."""
    import httpx

    port = _free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--null-server", str(port)], env=_env())
    try:
        url, params = f"http://127.0.0.1:{port}/dicom-web/studies", {"PatientID": "CASE-1"}
        _wait_http(url, 30, proc)
        out: dict[str, Any] = {"server": "bench/qido.py null_server (asyncio; no work per request)"}
        with httpx.Client(timeout=30) as client:
            out["python"] = {k: v for k, v in _time(client, url, params, META, repeat).items() if k != "rows"}
        if curl:
            out["curl"] = _stats(curl_timed(url, params, META, curl))
        return out
    finally:
        _stop(proc)


def _ceilings(out: dict[str, Any]) -> dict[str, Any]:
    """The highest Orthanc / hub ratio each client could show at all: Orthanc's p50 over the client's floor."""
    orthanc, floor = out.get("orthanc"), out.get("client_floor")
    if not orthanc or not floor:
        return {}
    return {
        client: {k: round(v["p50_ms"] / floor[client]["p50_ms"], 1) for k, v in orthanc[key].items()}
        for client, key in (("python", "queries"), ("curl", "curl"))
        if client in floor and key in orthanc
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--null-server":
        null_server(int(sys.argv[2]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--orthanc-client":
        orthanc_client(*(int(a) for a in sys.argv[2:6]))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="26000,1000000")
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--orthanc-size", type=int, default=26_000, help="Also measured on the hub at this size")
    ap.add_argument("--no-orthanc", action="store_true")
    ap.add_argument("--keep", action="store_true", help="Keep the filled catalogs (PostgreSQL databases stay)")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--pg-db", default="qidoperf_bench", help="PostgreSQL database name prefix (_<size> is added)")
    ap.add_argument(
        "--interleave", action="store_true", help="Serve every size at once and measure them in alternating rounds"
    )
    ap.add_argument("--settle", action="store_true", help="PostgreSQL: VACUUM ANALYZE and CHECKPOINT after the fill")
    ap.add_argument("--curl", type=int, default=0, help="Also time each URL N times with curl (both sides)")
    ap.add_argument("--upload-clients", type=int, default=4, help="Threads uploading the layout into Orthanc")
    ap.add_argument(
        "--orthanc-dir", type=Path, default=None,
        help="Keep Orthanc's storage and index in this folder; reuse them when they already hold the layout",
    )  # fmt: skip
    a = ap.parse_args()
    work = a.work or Path(tempfile.mkdtemp(prefix="qido-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    sizes = sorted({int(s) for s in a.sizes.split(",") if s} | (set() if a.no_orthanc else {a.orthanc_size}))
    out: dict[str, Any] = {
        "bench": "qido", "repeat": a.repeat, "interleave": a.interleave, "settle": a.settle, "hub": [],
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "loadavg_start": os.getloadavg(),
    }  # fmt: skip
    try:
        for backend in filter(None, a.backends.split(",")):  # --backends "" measures Orthanc only
            if a.interleave:
                for run in bench_interleaved(work, backend, sizes, a.repeat, a.keep, a.pg_db, a.settle):
                    out["hub"].append(run)
                    print(json.dumps(run), file=sys.stderr)
                continue
            for size in sizes:
                out["hub"].append(bench_hub(work, backend, size, a.repeat, a.keep, a.pg_db, a.settle, a.curl))
                print(json.dumps(out["hub"][-1]), file=sys.stderr)
        if not a.no_orthanc and orthanc_binary() is not None:
            out["orthanc"] = bench_orthanc(work, a.orthanc_size, a.repeat, a.curl, a.upload_clients, a.orthanc_dir)
        out["client_floor"] = client_floor(max(a.repeat, 100), a.curl)
    finally:
        if a.work is None and not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    out["loadavg_1m"] = round(os.getloadavg()[0], 1)  # the machine is shared: say how busy it was
    out["ratios"] = _ratios(out, a.orthanc_size)
    out["curl_ratios"] = _ratios(out, a.orthanc_size, "curl")
    out["ratio_ceilings"] = _ceilings(out)
    out["pg_p95_growth"] = _growth(out, "postgresql", sizes)
    out["sqlite_p95_growth"] = _growth(out, "sqlite", sizes)
    print(json.dumps(out))


def _ratios(out: dict[str, Any], size: int, key: str = "queries") -> dict[str, Any]:
    """Orthanc p50 / hub p50 per query at `size`, as the Python client (`queries`) or curl (`curl`) timed them."""
    orthanc = out.get("orthanc")
    if not orthanc or key not in orthanc:
        return {}
    ratios: dict[str, Any] = {}
    for run in out["hub"]:
        if run["instances"] == size and key in run:
            ratios[run["backend"]] = {k: round(orthanc[key][k]["p50_ms"] / v["p50_ms"], 1) for k, v in run[key].items()}
    return ratios


def _growth(out: dict[str, Any], backend: str, sizes: list[int]) -> dict[str, Any]:
    runs = {r["instances"]: r for r in out["hub"] if r["backend"] == backend}
    ordered = sorted(runs)
    if len(ordered) < 2:
        return {}
    small, big = runs[ordered[-2]]["queries"], runs[ordered[-1]]["queries"]  # the two largest sizes
    return {k: round(big[k]["p95_ms"] / small[k]["p95_ms"], 2) for k in small}


if __name__ == "__main__":
    main()
