"""DICOMweb rendered-image benchmark: a 512x512 CT rendered as JPEG, and a study browser's page of
thumbnails, cold and warm, on the hub and on Orthanc's DICOMweb plugin side by side.

    .venv/bin/python bench/dicomweb_render.py [--studies 50] [--per-series 3] [--repeat 30] [--no-orthanc]

The images are synthetic (a 512x512 16-bit CT phantom: a water disc with bone and air inserts and
noise, HU through RescaleIntercept -1024, window 40/400), one series of `--per-series` instances per
study, de-identified. The same bytes go to both servers. Measured with one keep-alive client:

- `rendered_jpeg`: `GET .../instances/{i}/rendered` (image/jpeg), cold (each instance's first request)
  and warm (the same instance again), p50/p95 in ms;
- `thumbnail_page`: the page of `--studies` study thumbnails a browser loads with 6 connections, wall
  clock in ms, cold (first load) and warm (reload). The hub answers `GET /studies/{s}/thumbnail`;
  Orthanc 1.7's plugin has no thumbnail resource, so the like-for-like request there is the middle
  instance's `rendered?viewport=128,128`.

Orthanc (Debian package, never in CI) runs loopback-only in its own network namespace (FACTS.md):
`unshare -n` for the server, `nsenter --net` for this script in a child mode as its client.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
SRC = BENCH.parent / "src"
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(SRC))
PAGE_CONNECTIONS = 6

from ingest import _env, _free_port, run_beside_orthanc  # noqa: E402 - bench/ingest.py: the hub and Orthanc harness


def _wait_http(url: str, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


# -- data ------------------------------------------------------------------------------------------
def phantom(seed: int) -> Any:
    """A 512x512 CT slice in stored values (HU + 1024), int16 range, with noise."""
    import numpy as np

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[-256:256, -256:256].astype(np.float32)
    hu = np.full((512, 512), -1000.0, np.float32)
    hu[x * x + y * y < 200**2] = 0.0
    hu[(x - 80) ** 2 + (y + 40) ** 2 < 25**2] = 900.0 + seed % 50
    hu[(x + 90) ** 2 + (y - 30) ** 2 < 30**2] = -700.0
    hu += rng.normal(0, 12, hu.shape).astype(np.float32)
    return np.clip(hu + 1024, 0, 4095).astype(np.uint16)


def make_files(studies: int, per_series: int) -> list[tuple[str, str, str, bytes]]:
    """(study, series, sop, bytes) of synthetic de-identified CT images."""
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    template = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    out: list[tuple[str, str, str, bytes]] = []
    for s in range(studies):
        study, series = generate_uid(prefix="2.25."), generate_uid(prefix="2.25.")
        for i in range(per_series):
            ds = template.copy()
            ds.PatientID = ds.PatientName = f"BENCH-{s:04d}"
            ds.PatientIdentityRemoved = "YES"
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
            ds.SOPInstanceUID = generate_uid(prefix="2.25.")
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.InstanceNumber = i + 1
            ds.set_pixel_data(phantom(s * per_series + i), "MONOCHROME2", 12, generate_instance_uid=False)
            ds.RescaleIntercept, ds.RescaleSlope, ds.WindowCenter, ds.WindowWidth = -1024, 1, 40, 400
            buf = io.BytesIO()
            ds.save_as(buf, enforce_file_format=True)
            out.append((study, series, str(ds.SOPInstanceUID), buf.getvalue()))
    return out


# -- measuring (both servers) ----------------------------------------------------------------------
def _ms(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p95_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))] * 1000, 1),
        "n": len(ordered),
    }


def measure(base: str, headers: dict[str, str], index: list[list[str]], repeat: int, thumbnail: str) -> dict[str, Any]:
    """`index`: (study, series, sop) rows; `thumbnail`: 'study' (GET /studies/{s}/thumbnail) or 'rendered'."""
    import httpx

    by_study: dict[str, list[list[str]]] = {}
    for row in index:
        by_study.setdefault(row[0], []).append(row)
    with httpx.Client(headers=headers, timeout=120) as client:

        def get(path: str, accept: str = "image/jpeg") -> float:
            t0 = time.perf_counter()
            r = client.get(base + path, headers={"Accept": accept})
            took = time.perf_counter() - t0
            if r.status_code != 200 or r.headers["content-type"] != accept:
                raise RuntimeError(f"{path}: {r.status_code} {r.text[:300]}")
            return took

        def rendered(row: list[str], query: str = "") -> str:
            return f"/studies/{row[0]}/series/{row[1]}/instances/{row[2]}/rendered{query}"

        def thumb(study: str) -> str:
            if thumbnail == "study":
                return f"/studies/{study}/thumbnail"
            rows = by_study[study]
            return rendered(rows[len(rows) // 2], "?viewport=128,128")

        # Thumbnails first, while nothing of these studies was rendered yet.
        studies = list(by_study)
        page: dict[str, float] = {}
        for label in ("cold", "warm"):
            with ThreadPoolExecutor(PAGE_CONNECTIONS) as pool:
                t0 = time.perf_counter()
                list(pool.map(lambda s: get(thumb(s)), studies))
                page[f"{label}_ms"] = round((time.perf_counter() - t0) * 1000, 1)
        # Instances no thumbnail touched, for cold renders.
        middles = {rendered(rows[len(rows) // 2]) for rows in by_study.values()}
        fresh = [row for row in index if rendered(row) not in middles]
        cold = [get(rendered(row)) for row in fresh[:repeat]]
        warm_row = fresh[0]
        warm = [get(rendered(warm_row)) for _ in range(repeat)]
        png = [get(rendered(row), "image/png") for row in fresh[repeat : 2 * repeat]]
    return {
        "rendered_jpeg_512": {"cold": _ms(cold), "warm": _ms(warm)},
        "rendered_png_512_cold": _ms(png) if png else None,
        "thumbnail_page": {"studies": len(studies), "connections": PAGE_CONNECTIONS, **page},
    }


# -- the hub ---------------------------------------------------------------------------------------
def bench_hub(work: Path, files: list[tuple[str, str, str, bytes]], repeat: int) -> dict[str, Any]:
    import httpx

    data = work / "hub"

    def token(*args: str) -> str:
        cmd = [sys.executable, "-m", "medcloud.cli", "hub", "token", "create", "--data", str(data), *args]
        return subprocess.run(cmd, env=_env(), capture_output=True, check=True).stdout.decode().strip()

    site = token("--role", "site", "--site", "BENCH", "--project", "BENCH")
    reader = token("--role", "researcher", "--project", "BENCH")
    port = _free_port()
    cmd = [sys.executable, "-m", "medcloud.cli", "hub", "serve", "--data", str(data), "--port", str(port)]
    log = (work / "hub.log").open("wb")
    proc = subprocess.Popen(cmd, env=_env(), stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_http(url + "/healthz", 60)
        with httpx.Client(timeout=120, headers={"Authorization": f"Bearer {site}"}) as c:
            for _, _, _, blob in files:
                c.post(url + "/api/v1/ingest", content=blob).raise_for_status()
        index = [[s, se, i] for s, se, i, _ in files]
        return measure(url + "/dicom-web", {"Authorization": f"Bearer {reader}"}, index, repeat, "study")
    finally:
        proc.terminate()
        proc.wait(30)


# -- Orthanc ---------------------------------------------------------------------------------------
def bench_orthanc(work: Path, files: list[tuple[str, str, str, bytes]], repeat: int) -> dict[str, Any]:
    binary = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
    root = Path(tempfile.mkdtemp(prefix="orthanc-render-", dir=work))
    plugin = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
    cfg = {"Name": "bench", "StorageDirectory": str(root / "storage"), "IndexDirectory": str(root / "index"),
           "HttpPort": 8042, "DicomServerEnabled": False, "RemoteAccessAllowed": False,
           "AuthenticationEnabled": False, "Plugins": [plugin], "StorageCompression": False,
           "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}}  # fmt: skip
    listing = root / "files.json"
    paths = []
    for n, (s, se, i, blob) in enumerate(files):
        p = root / f"{n}.dcm"
        p.write_bytes(blob)
        paths.append([s, se, i, str(p)])
    listing.write_text(json.dumps(paths))
    try:
        child = [sys.executable, __file__, "--orthanc-client", str(listing), str(repeat)]
        result: dict[str, Any] = run_beside_orthanc(binary, root, cfg, child)
        return result
    finally:
        shutil.rmtree(root, ignore_errors=True)


def orthanc_client(listing: Path, repeat: int) -> None:
    """Child mode, inside Orthanc's network namespace: upload, then measure its DICOMweb."""
    import httpx

    url = "http://127.0.0.1:8042"
    _wait_http(url + "/system", 60)
    rows = json.loads(listing.read_text())
    with httpx.Client(timeout=120) as c:
        for row in rows:
            c.post(url + "/instances", content=Path(row[3]).read_bytes()).raise_for_status()
    version = httpx.get(url + "/system").json().get("Version")
    result = measure(url + "/dicom-web", {}, [r[:3] for r in rows], repeat, "rendered")
    result["version"] = version
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--studies", type=int, default=50)
    parser.add_argument("--per-series", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=30, help="Requests per latency figure.")
    parser.add_argument("--no-orthanc", action="store_true")
    parser.add_argument("--orthanc-client", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.orthanc_client:
        orthanc_client(Path(args.orthanc_client[0]), int(args.orthanc_client[1]))
        return
    files = make_files(args.studies, args.per_series)
    # Enough instances that cold renders never repeat one.
    repeat = min(args.repeat, max(1, (len(files) - args.studies) // 2))
    with tempfile.TemporaryDirectory(prefix="bench-render-") as tmp:
        work = Path(tmp)
        result: dict[str, Any] = {
            "images": len(files),
            "image": "512x512 CT, 16-bit, Explicit VR Little Endian (synthetic phantom)",
            "hub": bench_hub(work, files, repeat),
        }
        if not args.no_orthanc and (shutil.which("Orthanc") or Path("/usr/sbin/Orthanc").exists()):
            try:
                result["orthanc"] = bench_orthanc(work, files, repeat)
            except RuntimeError as exc:
                result["orthanc"] = {"error": str(exc)[:500]}
            o, h = result.get("orthanc", {}), result["hub"]
            if "rendered_jpeg_512" in o:
                result["speedup_vs_orthanc"] = {
                    "rendered_cold_p50": round(
                        o["rendered_jpeg_512"]["cold"]["p50_ms"] / h["rendered_jpeg_512"]["cold"]["p50_ms"], 2
                    ),
                    "rendered_warm_p50": round(
                        o["rendered_jpeg_512"]["warm"]["p50_ms"] / h["rendered_jpeg_512"]["warm"]["p50_ms"], 2
                    ),
                    "thumbnail_page_cold": round(o["thumbnail_page"]["cold_ms"] / h["thumbnail_page"]["cold_ms"], 2),
                    "thumbnail_page_warm": round(o["thumbnail_page"]["warm_ms"] / h["thumbnail_page"]["warm_ms"], 2),
                }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
