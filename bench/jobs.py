"""Jobs benchmark: one job over a dataset version of N images, on the local pool and on Ray, side by side.

    .venv/bin/python bench/jobs.py [--files 10000] [--image-px 32] [--batch 500] [--backends local,ray]
                                   [--noop-runs 3] [--ray-address URL --ray-token-file F]

A hub (uvicorn on 127.0.0.1, SQLite catalog) holds one frozen version of `--files` SYNTHETIC grey PNG
images (`--image-px` square, random noise, made here; nobody's data), indexed with the catalog filler.
For each backend the same job script is submitted through the API: it reads the manifest, fetches every
file through the job runtime (`iter_files`: `--batch` files per request, one audit event per request,
each file hash-checked against the manifest),
decodes each PNG's header and sums its pixels' byte count, and saves the result as an artefact.

Reported per backend: wall time from submit to the end as the client sees it, submit-to-start overhead
(the hub's `started_at - created_at`), the job's own run time, files/s; and for an empty job, the
submit-to-start and submit-to-end overheads (median of `--noop-runs`). Without `--ray-address`, a
single-node Ray head is started on loopback with token auth (as the tests do) and its start time is
reported too. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import struct
import sys
import tempfile
import threading
import time
import zlib
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from medcloud.config import load_settings  # noqa: E402
from medcloud.hub.app import create_app  # noqa: E402
from medcloud.hub.state import HubState  # noqa: E402
from medcloud.jobs.client import JobClient  # noqa: E402
from medcloud.security.tokens import issue_token  # noqa: E402
from medcloud.store.filler import fill_synthetic  # noqa: E402

JOB = """
import json, struct, sys, time
from medcloud.jobs.runtime import dataset, save_artifact

batch = int(sys.argv[1])
t0 = time.monotonic()
ds = dataset()
t_manifest = time.monotonic() - t0
total = 0
for entry, data in ds.iter_files(batch=batch):  # each file checked against its manifest SHA-256
    assert data[:8] == b"\\x89PNG\\r\\n\\x1a\\n"
    width, height = struct.unpack(">II", data[16:24])
    total += width * height
out = {"files": len(ds.files), "pixels": total, "manifest_s": round(t_manifest, 3),
       "read_s": round(time.monotonic() - t0 - t_manifest, 3)}
save_artifact("result.json", json.dumps(out).encode())
print(json.dumps(out))
"""


def png(px: int, seed: int) -> bytes:
    """A SYNTHETIC greyscale PNG of random noise."""
    raw = b"".join(b"\x00" + os.urandom(px) for _ in range(px))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", px, px, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


def run_job(client: JobClient, code: Path, dataset: str, args: list[str]) -> dict[str, Any]:
    t0 = time.monotonic()
    job = client.submit(code, dataset, args=args, timeout_s=3600)
    done = client.wait(job["id"], timeout_s=3600, poll_s=0.05)
    wall = time.monotonic() - t0
    if done["state"] != "succeeded":
        raise RuntimeError(f"job {done['id']} {done['state']}: {done['message']}\n{client.logs(done['id'])[-3000:]}")
    return {
        "wall_s": round(wall, 3),
        "submit_to_start_s": round((_ts(done["started_at"]) - _ts(done["created_at"])).total_seconds(), 3),
        "run_s": round((_ts(done["finished_at"]) - _ts(done["started_at"])).total_seconds(), 3),
        "id": done["id"],
    }


def bench_backend(hub_url: str, token: str, dataset: str, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    client = JobClient(hub_url, token)
    try:
        noop = work / "noop.py"
        noop.write_text("print('noop')\n")
        noops = [run_job(client, noop, dataset, []) for _ in range(args.noop_runs)]
        job = work / "read_all.py"
        job.write_text(JOB)
        result = run_job(client, job, dataset, [str(args.batch)])
        out = json.loads(client.logs(result["id"]).strip().splitlines()[-1])
        assert out["files"] == args.files and out["pixels"] == args.files * args.image_px**2, out
        result |= {"files_per_s": round(args.files / result["run_s"], 1), "job_report": out}
        result.pop("id")
        return {
            "empty_job": {
                "submit_to_start_s_median": statistics.median(n["submit_to_start_s"] for n in noops),
                "wall_s_median": statistics.median(n["wall_s"] for n in noops),
                "runs": len(noops),
            },
            "dataset_job": result,
        }
    finally:
        client.close()


def serve(settings: Any, state: HubState) -> Any:
    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(create_app(settings, state=state), host="127.0.0.1", port=settings.port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return server, thread


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--image-px", type=int, default=32)
    ap.add_argument("--batch", type=int, default=500, help="files per bulk read request")
    ap.add_argument("--backends", default="local,ray")
    ap.add_argument("--noop-runs", type=int, default=3)
    ap.add_argument("--ray-address", default=None)
    ap.add_argument("--ray-token-file", type=Path, default=None)
    args = ap.parse_args()
    backends = [b for b in args.backends.split(",") if b]
    report: dict[str, Any] = {
        "bench": "jobs",
        "files": args.files,
        "image": f"{args.image_px}x{args.image_px} 8-bit grey PNG, SYNTHETIC noise",
        "files_per_request": args.batch,
        "cpus": os.cpu_count(),
        "load_avg_1m_start": round(os.getloadavg()[0], 2),
        "backends": {},
    }
    with tempfile.TemporaryDirectory(prefix="medcloud-bench-jobs-") as tmp:
        work = Path(tmp)
        t0 = time.monotonic()
        images = [png(args.image_px, i) for i in range(args.files)]
        head = None
        for backend in backends:
            data_dir = work / f"hub-{backend}"
            ray_settings: dict[str, Any] = {}
            if backend == "ray":
                if args.ray_address:
                    ray_settings = {"ray_address": args.ray_address, "ray_token_file": args.ray_token_file}
                else:
                    from tests.jobs.raycluster import start_head

                    t_head = time.monotonic()
                    try:
                        head = start_head(num_gpus=0)
                    except RuntimeError:  # a loaded machine can miss Ray's fixed 30 s raylet start window
                        head = start_head(num_gpus=0)
                    report["ray_head_start_s"] = round(time.monotonic() - t_head, 1)
                    ray_settings = {"ray_address": head.address, "ray_token_file": head.token_file}
            port = free_port()
            settings = load_settings(
                data_dir=data_dir, port=port, jobs_hub_url=f"http://127.0.0.1:{port}", **ray_settings
            )
            state = HubState.open(settings)
            stored = [state.blobs.put_bytes(b) for b in images]
            with state.catalog.write() as conn:
                fill_synthetic(
                    conn, args.files, projects=["bench"], blob_of=lambda i, s=stored: (s[i].sha256, s[i].size)
                )
            with state.catalog.write() as conn:
                version = state.catalog.datasets.freeze(conn, name="bench", query=[], projects=["bench"]).version
            report.setdefault("setup_s", round(time.monotonic() - t0, 1))
            report["dataset_bytes"] = version["total_bytes"]
            token = issue_token(state.catalog, role="researcher", projects=["bench"]).token
            server, thread = serve(settings, state)
            try:
                report["backends"][backend] = bench_backend(
                    f"http://127.0.0.1:{port}", token, version["id"], work, args
                )
            finally:
                server.should_exit = True
                thread.join(timeout=10)
                state.close()
        if head is not None:
            from tests.jobs.raycluster import stop_head

            stop_head(head)
    report["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
