"""STOW-RS benchmark: files/s stored through medcloud's `POST /dicom-web/studies` vs Orthanc's DICOMweb plugin.

    .venv/bin/python bench/stow.py [--n 2000] [--clients 1,4] [--per-request 1,100] [--repeat 3]
                                   [--hub-workers 2] [--no-orthanc]

The same de-identified bytes (bench/corpus.py's CT/MR files with fresh UIDs, de-identified once, not
timed) go to both servers in the same run, as `multipart/related; type="application/dicom"` requests of
one instance or of `N` instances each, from 1 and 4 client threads with one keep-alive connection each.
Orthanc 1.10 (Debian package, with its DICOMweb plugin) runs loopback-only in its own network
namespace, as in bench/ingest.py. Each measurement gets a fresh data folder and a hub whose workers have
all started (each logs its start; until session 12 the timing began when the first answered /healthz, so
a second worker's start-up ran inside the four-client figures); timing is wall clock from the first
request to the last reply; every instance must be acknowledged (ReferencedSOPSequence)
and the stored count is checked afterwards. Rounds are interleaved and medians reported, with each
round's ratio. CPU per file of the clients and of each server's process tree is printed too.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent / "src"))

import ingest as harness  # noqa: E402 - bench/ingest.py: the hub and Orthanc harness, CPU accounting

DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


def stow_body(files: list[bytes]) -> tuple[bytes, str]:
    """One STOW-RS request body of `files` and its Content-Type."""
    boundary = uuid.uuid4().hex
    chunks: list[bytes] = []
    for data in files:
        chunks.append(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode("ascii"))
        chunks.append(data)
        chunks.append(b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode("ascii"))
    return b"".join(chunks), f'multipart/related; type="application/dicom"; boundary={boundary}'


def send_stow(url: str, files: list[bytes], clients: int, headers: dict[str, str], per_request: int,
              server_pid: int | None) -> dict[str, Any]:  # fmt: skip
    """STOW every file once, `per_request` per request, from `clients` threads; wall-clock timed."""
    import httpx

    lock = threading.Lock()
    chunks = [files[i : i + per_request] for i in range(0, len(files), per_request)]
    next_chunk = iter(chunks)
    gate = threading.Barrier(clients + 1)
    counts = {"stored": 0, "failed": 0}
    statuses: dict[str, int] = {}
    errors: list[str] = []

    def worker() -> None:
        with httpx.Client(timeout=300, headers=headers) as client:
            gate.wait()
            while True:
                with lock:
                    chunk = next(next_chunk, None)
                if chunk is None:
                    return
                body, ctype = stow_body(chunk)  # encoding is inside the timed span, as a client pays it
                try:
                    r = client.post(url, content=body, headers={"Content-Type": ctype})
                    referenced = len(r.json().get("00081199", {}).get("Value", [])) if r.status_code < 500 else 0
                except (httpx.HTTPError, ValueError) as exc:
                    with lock:
                        errors.append(f"{type(exc).__name__}: {exc}"[:200])
                    referenced = 0
                    r = None
                with lock:
                    counts["stored"] += referenced
                    counts["failed"] += len(chunk) - referenced
                    if r is not None:
                        statuses[str(r.status_code)] = statuses.get(str(r.status_code), 0) + 1
                        if r.status_code != 200 and len(errors) < 5:
                            errors.append(f"HTTP {r.status_code}: {r.text[:200]}")

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    gate.wait()
    t0, c0, s0 = time.perf_counter(), time.process_time(), harness._tree_cpu(server_pid)
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    client_cpu, server_cpu = time.process_time() - c0, harness._tree_cpu(server_pid) - s0
    return {
        "clients": clients,
        "files_per_request": per_request,
        "seconds": round(seconds, 3),
        "files_per_s": round(len(files) / seconds, 1),
        "acknowledged": counts["stored"],
        "failed": counts["failed"],
        "http_statuses": statuses,
        "errors": errors[:5],
        "client_cpu_ms_per_file": round(client_cpu * 1000 / len(files), 3),
        "server_cpu_ms_per_file": round(server_cpu * 1000 / len(files), 3) if server_pid else None,
    }


class Hub(harness.Hub):
    """bench/ingest.py's hub, given longer to start (a shared machine under load takes more than 60 s)."""

    start_timeout_s = 300.0


def bench_hub(work: Path, files: list[bytes], clients: int, per_request: int) -> dict[str, Any]:
    hub = Hub(work / f"hub-{clients}-{per_request}-{uuid.uuid4().hex[:6]}")
    site, project = "BENCH", "BENCH"
    token = hub.token("--role", "site", "--site", site, "--project", project)
    reader = hub.token("--role", "researcher", "--project", project)
    try:
        hub.start(f"stow-{clients}c-{per_request}")
        assert hub.proc is not None
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/dicom+json"}
        result = send_stow(hub.url + "/dicom-web/studies", files, clients, headers, per_request, hub.proc.pid)
        result["stored"] = hub.count(reader, site)
    finally:
        hub.stop()
        shutil.rmtree(hub.data, ignore_errors=True)
    return result


def bench_orthanc(work: Path, file_list: Path, clients: int, per_request: int) -> dict[str, Any]:
    """Orthanc with its DICOMweb plugin in a loopback-only network namespace; this script is its client."""
    return run_orthanc(work, ["--orthanc-client", "{port}", str(file_list), str(clients), "{pid}", str(per_request)])


def run_orthanc(work: Path, child_args: list[str]) -> dict[str, Any]:
    """Start Orthanc in its own network namespace and run this script inside it with `child_args`."""
    binary = harness.orthanc_binary()
    assert binary is not None
    root = Path(tempfile.mkdtemp(prefix="orthanc-stow-", dir=work))
    port = 8042
    cfg = {
        "Name": "bench", "StorageDirectory": str(root / "storage"), "IndexDirectory": str(root / "index"),
        "HttpPort": port, "DicomServerEnabled": False, "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False, "HttpServerEnabled": True, "Plugins": [DICOMWEB_PLUGIN],
        "StorageCompression": False, "ConcurrentJobs": 2, "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }  # fmt: skip
    try:
        child = [sys.executable, __file__, *(a.replace("{port}", str(port)) for a in child_args)]
        result: dict[str, Any] = harness.run_beside_orthanc(binary, root, cfg, child)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return result


def orthanc_client(port: int, file_list: Path, clients: int, server_pid: int, per_request: int) -> None:
    """Child mode, inside Orthanc's network namespace."""
    import httpx

    url = f"http://127.0.0.1:{port}"
    harness._wait_http(url + "/system", 60)
    files = [Path(p).read_bytes() for p in file_list.read_text().splitlines()]
    result = send_stow(url + "/dicom-web/studies", files, clients, {"Accept": "application/dicom+json"},
                       per_request, server_pid)  # fmt: skip
    result["stored"] = len(httpx.get(url + "/instances", timeout=60).json())
    print(json.dumps(result))


def series_files(files: list[bytes], n: int = 100) -> tuple[list[bytes], str, str]:
    """`n` instances of one new series (synthetic: the first corpus file with fresh SOP UIDs)."""
    import io

    import pydicom
    from pydicom.uid import generate_uid

    ds = pydicom.dcmread(io.BytesIO(files[0]))
    study, series = generate_uid(prefix="2.25."), generate_uid(prefix="2.25.")
    out = []
    for i in range(n):
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(prefix="2.25.")
        ds.InstanceNumber = i + 1
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        out.append(buf.getvalue())
    return out, study, series


def time_metadata(url: str, headers: dict[str, str], warm: int = 10) -> dict[str, Any]:
    """The first GET of a series' metadata (cold: a server just started) and the median of `warm` more."""
    import httpx

    with httpx.Client(timeout=120, headers={"Accept": "application/dicom+json", **headers}) as client:
        t = time.perf_counter()
        r = client.get(url)
        cold = time.perf_counter() - t
        r.raise_for_status()
        n = len(r.json())
        times = []
        for _ in range(warm):
            t = time.perf_counter()
            client.get(url).raise_for_status()
            times.append(time.perf_counter() - t)
    times.sort()
    return {"instances": n, "cold_ms": round(cold * 1000, 1), "warm_median_ms": round(times[len(times) // 2] * 1000, 1)}


def bench_metadata_hub(work: Path, files: list[bytes], study: str, series: str) -> dict[str, Any]:
    hub = Hub(work / f"hub-metadata-{uuid.uuid4().hex[:6]}")
    token = hub.token("--role", "site", "--site", "BENCH", "--project", "BENCH")
    reader = hub.token("--role", "researcher", "--project", "BENCH")
    try:
        hub.start("metadata")
        send_stow(hub.url + "/dicom-web/studies", files, 1, {"Authorization": f"Bearer {token}"}, 100, None)
        hub.stop()
        hub.start("metadata-restarted")  # nothing of the series is in any process cache
        url = f"{hub.url}/dicom-web/studies/{study}/series/{series}/metadata"
        return time_metadata(url, {"Authorization": f"Bearer {reader}"})
    finally:
        hub.stop()
        shutil.rmtree(hub.data, ignore_errors=True)


def orthanc_metadata(port: int, file_list: Path, study: str, series: str) -> None:
    """Child mode inside Orthanc's namespace: store the series, then time its metadata."""
    import httpx

    url = f"http://127.0.0.1:{port}"
    harness._wait_http(url + "/system", 60)
    files = [Path(p).read_bytes() for p in file_list.read_text().splitlines()]
    send_stow(url + "/dicom-web/studies", files, 1, {}, 100, None)
    httpx.post(url + "/tools/reset", timeout=60)  # Orthanc restarts in place: a cold server
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # /system answers again only once the restart is over
        time.sleep(0.5)
        try:
            if httpx.get(url + "/system", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            continue
    print(json.dumps(time_metadata(f"{url}/dicom-web/studies/{study}/series/{series}/metadata", {})))


def make_files(work: Path, n: int) -> list[bytes]:
    import corpus
    from medcloud.deid import Deidentifier, DeidOptions, SiteKey

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = corpus.make_corpus(work / "corpus", n)
    deid = Deidentifier(SiteKey.generate(work / "site.key"), DeidOptions(allow_burned_in=True))
    return [deid.deidentify_file(p).data for p in raw]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--clients", default="1,4")
    parser.add_argument("--per-request", default="1,100", help="Instances per STOW-RS request (comma list).")
    parser.add_argument("--repeat", type=int, default=3, help="Interleaved rounds; medians are reported.")
    parser.add_argument("--hub-workers", type=int, default=2, help="uvicorn worker processes for the hub.")
    parser.add_argument("--no-orthanc", action="store_true")
    parser.add_argument("--orthanc-client", nargs=5, help=argparse.SUPPRESS)
    parser.add_argument("--orthanc-metadata", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--no-metadata", action="store_true", help="Skip the series-metadata timing.")
    parser.add_argument("--only-metadata", action="store_true", help="Only the series-metadata timing.")
    args = parser.parse_args()
    harness.HUB_WORKERS = args.hub_workers
    if args.orthanc_client:
        port, listing, clients, pid, per = args.orthanc_client
        orthanc_client(int(port), Path(listing), int(clients), int(pid), int(per))
        return
    if args.orthanc_metadata:
        port, listing, study, series = args.orthanc_metadata
        orthanc_metadata(int(port), Path(listing), study, series)
        return
    clients_list = [int(c) for c in args.clients.split(",") if c.strip()]
    sizes = [int(c) for c in args.per_request.split(",") if c.strip()]
    if args.only_metadata:
        clients_list, sizes = [], []
    skip = None
    if args.no_orthanc:
        skip = "--no-orthanc"
    elif harness.orthanc_binary() is None or not Path(DICOMWEB_PLUGIN).exists():
        skip = "Orthanc or its DICOMweb plugin not installed (apt-get install orthanc orthanc-dicomweb)"
    elif shutil.which("unshare") is None or shutil.which("nsenter") is None:
        skip = "unshare/nsenter unavailable"
    with tempfile.TemporaryDirectory(prefix="medcloud-bench-stow-") as tmp:
        work = Path(tmp)
        files = make_files(work, args.n)
        deid_dir = work / "deid"
        deid_dir.mkdir()
        for i, data in enumerate(files):
            (deid_dir / f"{i:05d}.dcm").write_bytes(data)
        file_list = work / "deid-files.txt"
        file_list.write_text("\n".join(str(p) for p in sorted(deid_dir.iterdir())))
        report: dict[str, Any] = {
            "files": len(files),
            "mean_file_kb": round(sum(len(f) for f in files) / len(files) / 1024, 1),
            "cpus": os.cpu_count(),
            "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
            "hub_workers": args.hub_workers,
            "repeat": args.repeat,
            "input": "bench/corpus.py files (synthetic UIDs on pydicom's CT/MR test images), de-identified once",
        }
        systems = ["medcloud"] + (["orthanc"] if skip is None else [])
        runs: dict[str, dict[tuple[int, int], list[dict[str, Any]]]] = {
            s: {(c, p): [] for c in clients_list for p in sizes} for s in systems
        }
        for _round in range(args.repeat):
            for c in clients_list:
                for p in sizes:
                    for system in systems:
                        if system == "orthanc":
                            try:
                                one = bench_orthanc(work, file_list, c, p)
                            except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
                                one = {"error": str(exc)[:500]}
                        else:
                            one = bench_hub(work, files, c, p)
                        runs[system][(c, p)].append(one)
        for system in systems:
            report[system] = {
                f"per_request_{p}_clients_{c}": harness._summarise(runs[system][(c, p)])
                for c in clients_list
                for p in sizes
            }
        if skip is not None:
            report["orthanc"] = {"skipped": skip}
        else:
            ratios: dict[str, Any] = {}
            for c in clients_list:
                for p in sizes:
                    key = f"per_request_{p}_clients_{c}"
                    mine, peer = report["medcloud"][key].get("files_per_s"), report["orthanc"][key].get("files_per_s")
                    if mine and peer:
                        per_round = [
                            round(a["files_per_s"] / b["files_per_s"], 2)
                            for a, b in zip(runs["medcloud"][(c, p)], runs["orthanc"][(c, p)], strict=True)
                            if a.get("files_per_s") and b.get("files_per_s")
                        ]
                        ratios[key] = {"of_medians": round(mine / peer, 2), "per_round": per_round,
                                       "target": 5.0 if p > 1 else 1.0}  # fmt: skip
            report["medcloud_over_orthanc"] = ratios
        if not args.no_metadata:
            one_series, study, series = series_files(files)
            meta_dir = work / "series"
            meta_dir.mkdir()
            for i, data in enumerate(one_series):
                (meta_dir / f"{i:03d}.dcm").write_bytes(data)
            meta_list = work / "series-files.txt"
            meta_list.write_text("\n".join(str(p) for p in sorted(meta_dir.iterdir())))
            metadata: dict[str, Any] = {"medcloud": bench_metadata_hub(work, one_series, study, series)}
            if skip is None:
                try:
                    child = ["--orthanc-metadata", "{port}", str(meta_list), study, series]
                    metadata["orthanc"] = run_orthanc(work, child)
                except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
                    metadata["orthanc"] = {"error": str(exc)[:500]}
            report["series_metadata_100"] = metadata
        report["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
