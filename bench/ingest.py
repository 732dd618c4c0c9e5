"""Ingest benchmark: files/s through the hub's `POST /api/v1/ingest`, one client and four, vs Orthanc.

    .venv/bin/python bench/ingest.py [--n 2000] [--clients 1,4] [--batch 100] [--repeat 3] [--hub-workers 2]
                                     [--modes batch,single] [--no-orthanc] [--gateway] [--profile DIR]
                                     [--encryption off|on|both]

The corpus is bench/corpus.py's (pydicom's CT/MR files with fresh UIDs and identifying values). It is
de-identified once with a fresh site key (not timed), as a gateway would, and the same de-identified
bytes, held in memory, are sent to every system in the same run. Each measurement gets a fresh data
folder, so nothing is a duplicate. Timing is wall clock from the first request to the last reply;
every reply must be a success, and the stored count is checked afterwards. Two hub modes: one file
per request (`POST /api/v1/ingest`), and `--batch` files per multipart request
(`POST /api/v1/ingest/batch`, one durability barrier per request), which is how the gateway sends
when files are waiting.

Orthanc is measured one file per request (`POST /instances`, its usual REST upload) and, like for like
with the hub's batch endpoint, with the same batches sent as ZIP archives to `/instances`.
Orthanc (Debian package, never in CI) runs loopback-only in its own network namespace (FACTS.md):
`unshare -n` for the server, `nsenter --net` for its client, which is this script in a child mode.
With `--gateway`, the whole gateway (`medcloud gateway run --once`: de-identify + outbox + forward)
is timed on the raw corpus too. With `--profile DIR` the hub runs under py-spy when it is installed.
Every measurement is repeated `--repeat` times, interleaved (Orthanc, hub batch, hub single, then again),
and the median is reported with each round's figure; ratios are of the medians, with each round's ratio
beside them. CPU seconds per file of the clients and of the server's process tree are printed too.
With `--encryption both`, every hub mode is also measured with encryption at rest on (a key file,
docs/security.md), interleaved in the same rounds, and `encryption_cost` gives the slowdown of the
medians and of each round (target: at most 15%).
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
import zipfile
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


def _wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering {url}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def _wait_workers(log: Path, workers: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until `workers` uvicorn workers have finished starting (the hub runs with `--log-level info`).

    /healthz answers as soon as one worker is up; timing from then would measure the others' start-up
    (imports, catalog check) as if it were serving work, and leave one worker to serve alone.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before its {workers} workers started")
        if log.read_bytes().count(b"Application startup complete.") >= workers:
            return
        time.sleep(0.05)
    raise RuntimeError(f"{workers} workers did not start within {timeout} s (see {log})")


# -- clients ---------------------------------------------------------------------------------------
def _tree_cpu(pid: int | None) -> float:
    """CPU seconds (user + system) used so far by process `pid` and its live descendants (Linux /proc)."""
    if pid is None:
        return 0.0
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2 :].split()
        stats[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        if p in stats:
            total += stats[p][1]
        todo += [c for c, (ppid, _) in stats.items() if ppid == p]
    return total


def send_all(
    url: str,
    files: list[bytes],
    clients: int,
    headers: dict[str, str],
    with_sha: bool,
    batch: int = 1,
    server_pid: int | None = None,
    zip_batches: bool = False,
) -> dict[str, Any]:
    """POST every file once, `clients` threads with one keep-alive connection each; wall-clock timed.

    With `batch` > 1, files go `batch` at a time as multipart/related to `url` (the hub's batch
    endpoint), encoded exactly as the gateway encodes them; encoding is inside the timed span.
    """
    import httpx

    from medcloud.gateway.forwarder import encode_multipart

    statuses: dict[int, int] = {}
    errors: list[str] = []
    lock = threading.Lock()
    chunks = [list(range(i, min(i + batch, len(files)))) for i in range(0, len(files), batch)]
    next_chunk = iter(chunks)
    start_gate = threading.Barrier(clients + 1)

    timing: dict[str, float] = {}  # the hub's Server-Timing, summed over requests (ms)

    def worker() -> None:
        local: dict[int, int] = {}
        with httpx.Client(timeout=300, headers=headers) as client:
            start_gate.wait()
            while True:
                with lock:
                    chunk = next(next_chunk, None)
                if chunk is None:
                    break
                try:
                    if batch > 1 and zip_batches:
                        # Orthanc's own many-files-per-request form: a ZIP archive POSTed to /instances.
                        buf = io.BytesIO()
                        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
                            for i in chunk:
                                zf.writestr(f"{i}.dcm", files[i])
                        r = client.post(url, content=buf.getvalue(), headers={"Content-Type": "application/zip"})
                        if r.status_code == 200:
                            answer = r.json()
                            done = len(answer) if isinstance(answer, list) else 0
                            local[200] = local.get(200, 0) + done
                            if done != len(chunk):
                                local[599] = local.get(599, 0) + len(chunk) - done
                            continue
                    elif batch > 1:
                        body, ctype = encode_multipart(
                            [
                                (files[i], "application/dicom", hashlib.sha256(files[i]).hexdigest(), f"{i}.dcm")
                                for i in chunk
                            ]
                        )
                        r = client.post(url, content=body, headers={"Content-Type": ctype})
                        for part in r.headers.get("server-timing", "").split(","):
                            name, _, dur = part.strip().partition(";dur=")
                            if dur:
                                with lock:
                                    timing[name] = timing.get(name, 0.0) + float(dur)
                        if r.status_code == 200:
                            for res in r.json()["items"]:
                                code = {"stored": 201, "duplicate": 200}.get(res["status"], 0)
                                if not code:
                                    code = int(res.get("problem", {}).get("status") or 599)
                                local[code] = local.get(code, 0) + 1
                            continue
                    else:
                        body = files[chunk[0]]
                        h = {"X-Content-SHA256": hashlib.sha256(body).hexdigest()} if with_sha else {}
                        r = client.post(url, content=body, headers=h)
                except httpx.HTTPError as exc:
                    with lock:
                        errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                local[r.status_code] = local.get(r.status_code, 0) + len(chunk)
                if r.status_code >= 300 and len(errors) < 5:
                    with lock:
                        errors.append(f"HTTP {r.status_code}: {r.text[:200]}")
        with lock:
            for k, v in local.items():
                statuses[k] = statuses.get(k, 0) + v

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    start_gate.wait()
    t0, c0, s0 = time.perf_counter(), time.process_time(), _tree_cpu(server_pid)
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    client_cpu, server_cpu = time.process_time() - c0, _tree_cpu(server_pid) - s0
    total_bytes = sum(len(f) for f in files)
    return {
        "clients": clients,
        "files_per_request": batch,
        "seconds": round(seconds, 3),
        "files_per_s": round(len(files) / seconds, 1),
        "mb_per_s": round(total_bytes / seconds / 1e6, 2),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "errors": errors[:5],
        # CPU per file: the clients (this process) and the server's process tree, so a ratio can be read
        # as "where did the machine's time go" on a machine the two share.
        "client_cpu_ms_per_file": round(client_cpu * 1000 / len(files), 3),
        "server_cpu_ms_per_file": round(server_cpu * 1000 / len(files), 3) if server_pid else None,
        **({"server_timing_ms_per_file": {k: round(v / len(files), 3) for k, v in timing.items()}} if timing else {}),
    }


def _summarise(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The median round (by files/s) of a system, with every round's files/s."""
    ok = [r for r in rounds if r.get("files_per_s")]
    if not ok:
        return rounds[-1]
    ordered = sorted(ok, key=lambda r: r["files_per_s"])
    out = dict(ordered[len(ordered) // 2])
    out["rounds_files_per_s"] = [r["files_per_s"] for r in ok]
    return out


# -- medcloud hub ----------------------------------------------------------------------------------
HUB_WORKERS = 1  # --hub-workers


class Hub:
    start_timeout_s = 180.0  # a loaded 2-core machine starts slowly

    def __init__(self, root: Path, profile_dir: Path | None = None, key_file: Path | None = None) -> None:
        self.data = root
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.profile_dir = profile_dir
        self.env = _env()
        if key_file is not None:  # encryption at rest on, the key outside the data folder
            self.env["MEDCLOUD_ENCRYPTION_KEY_FILE"] = str(key_file)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def token(self, *args: str) -> str:
        out = subprocess.run(
            _medcloud("hub", "token", "create", "--data", str(self.data), *args),
            env=self.env,
            capture_output=True,
            check=True,
        )
        return out.stdout.decode().strip()

    def start(self, label: str) -> None:
        cmd = _medcloud(
            "hub", "serve", "--data", str(self.data), "--port", str(self.port), "--workers", str(HUB_WORKERS),
            "--log-level", "info",  # each worker logs its start: `_wait_workers` counts them
        )  # fmt: skip
        if self.profile_dir is not None and shutil.which("py-spy"):
            self.profile_dir.mkdir(parents=True, exist_ok=True)
            # Collapsed stacks with idle threads: wall-clock attribution, fsync waits included.
            out = self.profile_dir / f"hub-{label}.folded"
            spy = ["py-spy", "record", "--format", "raw", "--idle", "--subprocesses", "--rate", "250"]
            cmd = [*spy, "-o", str(out), "--", *cmd]
        log = self.data.parent / f"hub-{label}.log"
        with log.open("wb") as out:
            self.proc = subprocess.Popen(cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        _wait_http(self.url + "/healthz", self.start_timeout_s, self.proc)
        _wait_workers(log, HUB_WORKERS, self.start_timeout_s, self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGINT)  # py-spy writes its profile on SIGINT
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def count(self, token: str, site: str) -> int:
        import httpx

        r = httpx.get(
            f"{self.url}/api/v1/instances",
            params={"site": site, "limit": 1},
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        )
        r.raise_for_status()
        return int(r.json()["total"])


def bench_hub(
    work: Path, files: list[bytes], clients: int, profile: Path | None, batch: int = 1, key_file: Path | None = None
) -> dict[str, Any]:
    hub = Hub(work / f"hub-{clients}-{batch}{'-enc' if key_file else ''}", profile, key_file)
    site, project = "BENCH", "BENCH"
    token = hub.token("--role", "site", "--site", site, "--project", project)
    reader = hub.token("--role", "researcher", "--project", project)
    hub.start(f"{clients}c-{batch}b")
    try:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/dicom"}
        url = hub.url + ("/api/v1/ingest/batch" if batch > 1 else "/api/v1/ingest")
        assert hub.proc is not None
        result = send_all(url, files, clients, headers, with_sha=True, batch=batch, server_pid=hub.proc.pid)
        result["stored"] = hub.count(reader, site)
        if key_file is not None:
            from medcloud.config import load_settings
            from medcloud.security.envelope import at_rest_status

            status = at_rest_status(load_settings(data_dir=hub.data, encryption_key_file=key_file))
            result["share_encrypted"] = status["share_encrypted"]
            result["catalog_encrypted"] = status.get("catalog", {}).get("encrypted")  # SQLCipher pages
    finally:
        hub.stop()
        shutil.rmtree(hub.data, ignore_errors=True)
    return result


# -- Orthanc ---------------------------------------------------------------------------------------
def orthanc_binary() -> str | None:
    return shutil.which("Orthanc") or ("/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").exists() else None)


def bench_orthanc(work: Path, file_list: Path, n: int, clients: int, batch: int = 1) -> dict[str, Any]:
    """Orthanc in a loopback-only network namespace; this script, inside it, is the client."""
    binary = orthanc_binary()
    assert binary is not None
    root = Path(tempfile.mkdtemp(prefix=f"orthanc-{clients}-", dir=work))
    port = 8042
    cfg = {
        "Name": "bench",
        "StorageDirectory": str(root / "storage"),
        "IndexDirectory": str(root / "index"),
        "HttpPort": port,
        "DicomServerEnabled": False,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "HttpServerEnabled": True,
        "Plugins": [],
        "StorageCompression": False,
        "ConcurrentJobs": 2,
    }
    try:
        child = [
            sys.executable,
            __file__,
            "--orthanc-client",
            str(port),
            str(file_list),
            str(clients),
            "{pid}",
            str(batch),
        ]
        result: dict[str, Any] = run_beside_orthanc(binary, root, cfg, child)
        return result
    finally:
        shutil.rmtree(root / "storage", ignore_errors=True)


def run_beside_orthanc(binary: str, root: Path, cfg: dict[str, Any], child: list[str], timeout: float = 1800) -> Any:
    """Start Orthanc with `cfg` in a loopback-only network namespace of its own (it cannot bind one address
    only), run `child` inside that namespace as its client ("{pid}" in an argument becomes Orthanc's pid),
    and return the JSON the child prints. Orthanc is stopped whatever happens; `root` holds cfg and log."""
    (root / "cfg.json").write_text(json.dumps(cfg))
    log = (root / "orthanc.log").open("wb")
    proc = subprocess.Popen(
        ["unshare", "-n", "bash", "-c", f"ip link set lo up; exec {binary} {root / 'cfg.json'}"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        # Join its namespace only once Orthanc runs: before unshare(2), /proc/PID/ns/net is still ours.
        own = os.readlink("/proc/self/ns/net")
        deadline = time.monotonic() + 30
        while True:
            try:
                if os.readlink(f"/proc/{proc.pid}/ns/net") != own and "Orthanc" in os.readlink(f"/proc/{proc.pid}/exe"):
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Orthanc did not start (exit {proc.poll()}): see {root / 'orthanc.log'}")
            time.sleep(0.05)
        argv = [arg.replace("{pid}", str(proc.pid)) for arg in child]
        out = subprocess.run(
            ["nsenter", f"--net=/proc/{proc.pid}/ns/net", *argv], capture_output=True, env=_env(), timeout=timeout
        )
        if out.returncode != 0:
            raise RuntimeError(f"Orthanc client failed: {out.stderr.decode()[-2000:]}")
        return json.loads(out.stdout)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def orthanc_client(port: int, file_list: Path, clients: int, server_pid: int, batch: int = 1) -> None:
    """Child mode, run inside Orthanc's network namespace."""
    import httpx

    url = f"http://127.0.0.1:{port}"
    _wait_http(url + "/system", 60)
    files = [Path(p).read_bytes() for p in file_list.read_text().splitlines()]
    result = send_all(
        url + "/instances",
        files,
        clients,
        {"Content-Type": "application/dicom"},
        with_sha=False,
        server_pid=server_pid,
        batch=batch,
        zip_batches=batch > 1,
    )
    result["stored"] = len(httpx.get(url + "/instances", timeout=60).json())
    print(json.dumps(result))


# -- the gateway, end to end -----------------------------------------------------------------------
def bench_gateway(work: Path, raw: list[Path], key: Path) -> dict[str, Any]:
    hub = Hub(work / "hub-gateway")
    token = hub.token("--role", "site", "--site", "GW", "--project", "BENCH")
    reader = hub.token("--role", "researcher", "--project", "BENCH")
    (work / "gw-token").write_text(token)
    listing = work / "gw-files.txt"
    listing.write_text("\n".join(str(p) for p in raw))
    hub.start("gateway")
    try:
        t0 = time.perf_counter()
        out = subprocess.run(
            _medcloud(
                "gateway",
                "run",
                "--hub",
                hub.url,
                "--token-file",
                str(work / "gw-token"),
                "--files",
                str(listing),
                "--root",
                str(raw[0].parents[1]),
                "--key-file",
                str(key),
                "--state",
                str(work / "gw-state"),
                "--once",
                "--settle",
                "0",
            ),
            env=_env(),
            capture_output=True,
        )
        seconds = time.perf_counter() - t0
        stored = hub.count(reader, "GW")
    finally:
        hub.stop()
    return {
        "seconds": round(seconds, 3),
        "files_per_s": round(len(raw) / seconds, 1),
        "exit_code": out.returncode,
        "stored": stored,
        "note": "wall clock of `medcloud gateway run --once` incl. start-up, de-identification, outbox fsyncs",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--clients", default="1,4")
    parser.add_argument("--corpus", type=Path, help="Reuse a corpus folder made by bench/corpus.py")
    parser.add_argument("--no-orthanc", action="store_true")
    parser.add_argument(
        "--batch", type=int, default=100, help="Also send N files per request to /api/v1/ingest/batch (1: skip)."
    )
    parser.add_argument("--gateway", action="store_true", help="Also time the whole gateway on the raw corpus.")
    parser.add_argument("--profile", type=Path, help="Write py-spy profiles of the hub here.")
    parser.add_argument("--hub-workers", type=int, default=2, help="uvicorn worker processes for the hub.")
    parser.add_argument("--repeat", type=int, default=3, help="Interleaved rounds; medians are reported.")
    parser.add_argument(
        "--modes",
        default="batch,single",
        help="Hub modes: batch (multipart, as the gateway sends), single (one file per request).",
    )
    parser.add_argument(
        "--encryption",
        choices=["off", "on", "both"],
        default="off",
        help="Hub with encryption at rest: off, on, or both side by side (reports encryption_cost).",
    )
    parser.add_argument(
        "--orthanc-client", nargs=5, metavar=("PORT", "LIST", "CLIENTS", "SERVER_PID", "BATCH"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    global HUB_WORKERS
    HUB_WORKERS = args.hub_workers
    if args.orthanc_client:
        port, listing, clients, server_pid, batch = args.orthanc_client
        orthanc_client(int(port), Path(listing), int(clients), int(server_pid), int(batch))
        return

    import corpus
    from medcloud.deid import Deidentifier, DeidOptions, SiteKey

    client_counts = [int(c) for c in args.clients.split(",") if c.strip()]
    with tempfile.TemporaryDirectory(prefix="medcloud-bench-ingest-") as tmp:
        work = Path(tmp)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            raw = (
                sorted(args.corpus.rglob("*.dcm"))[: args.n]
                if args.corpus
                else corpus.make_corpus(work / "corpus", args.n)
            )
        key = SiteKey.generate(work / "site.key")
        deid = Deidentifier(key, DeidOptions(allow_burned_in=True))
        deid_dir = work / "deid"
        deid_dir.mkdir()
        files: list[bytes] = []
        for i, path in enumerate(raw):
            out = deid.deidentify_file(path)
            files.append(out.data)
            (deid_dir / f"{i:05d}.dcm").write_bytes(out.data)
        file_list = work / "deid-files.txt"
        file_list.write_text("\n".join(str(p) for p in sorted(deid_dir.iterdir())))

        report: dict[str, Any] = {
            "files": len(files),
            "mean_file_kb": round(sum(len(f) for f in files) / len(files) / 1024, 1),
            "cpus": os.cpu_count(),
            "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
            "input": "bench/corpus.py files, de-identified once (not timed); same bytes to every system",
            "hub_workers": HUB_WORKERS,
            "repeat": args.repeat,
        }
        binary = orthanc_binary()
        orthanc_skip = None
        if args.no_orthanc:
            orthanc_skip = "--no-orthanc"
        elif binary is None:
            orthanc_skip = "Orthanc not installed (apt-get install orthanc)"
        elif shutil.which("unshare") is None or shutil.which("nsenter") is None:
            orthanc_skip = "unshare/nsenter unavailable"
        modes = [m.strip() for m in args.modes.split(",") if m.strip()]
        batched = "batch" in modes and args.batch > 1
        hubs = (["hub_batch"] if batched else []) + (["hub"] if "single" in modes else [])
        systems = {"off": hubs, "on": [f"{h}_enc" for h in hubs], "both": [v for h in hubs for v in (h, f"{h}_enc")]}[
            args.encryption
        ]
        key_file = work / "kek.hex"
        if args.encryption != "off":
            from medcloud.security.envelope import new_key_text

            key_file.write_text(new_key_text() + "\n")
        if orthanc_skip is None:
            # Orthanc one file per request (its usual REST upload), and, like for like with the hub's
            # batch endpoint, the same batches as ZIP archives POSTed to /instances.
            systems += ["orthanc"] + (["orthanc_zip"] if batched else [])
        runs: dict[str, dict[int, list[dict[str, Any]]]] = {s: {c: [] for c in client_counts} for s in systems}
        # Repeats are interleaved (every system once per round) so that drift in the machine's speed
        # touches every system alike; the report gives the median of the rounds and each round's ratio.
        for _round in range(args.repeat):
            for c in client_counts:
                for system in systems:
                    if system.startswith("orthanc"):
                        batch = args.batch if system == "orthanc_zip" else 1
                        try:
                            one = bench_orthanc(work, file_list, len(files), c, batch=batch)
                        except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
                            one = {"error": str(exc)}
                    else:
                        batch = args.batch if system.startswith("hub_batch") else 1
                        enc = key_file if system.endswith("_enc") else None
                        one = bench_hub(work / f"r{_round}", files, c, args.profile, batch=batch, key_file=enc)
                    runs[system][c].append(one)
        for system in systems:
            report[system] = {f"clients_{c}": _summarise(runs[system][c]) for c in client_counts}
        if args.encryption == "both":
            cost: dict[str, Any] = {"target_max_slowdown_pct": 15.0}
            for h in hubs:
                for c in client_counts:
                    plain = report[h][f"clients_{c}"].get("files_per_s")
                    enc = report[f"{h}_enc"][f"clients_{c}"].get("files_per_s")
                    if plain and enc:
                        per_round = [
                            round(100 * (1 - b["files_per_s"] / a["files_per_s"]), 1)
                            for a, b in zip(runs[h][c], runs[f"{h}_enc"][c], strict=True)
                            if a.get("files_per_s") and b.get("files_per_s")
                        ]
                        # CPU time of the hub's process tree per file: far less sensitive than wall time to
                        # what else runs on a shared machine.
                        cpu = {
                            k: [r["server_cpu_ms_per_file"] for r in runs[sys_][c] if r.get("server_cpu_ms_per_file")]
                            for k, sys_ in (("plain", h), ("encrypted", f"{h}_enc"))
                        }
                        cpu_med = {k: statistics.median(v) for k, v in cpu.items() if v}
                        cost[f"{h}_clients_{c}"] = {
                            "plain_files_per_s": plain,
                            "encrypted_files_per_s": enc,
                            "slowdown_pct_of_medians": round(100 * (1 - enc / plain), 1),
                            "slowdown_pct_per_round": per_round,
                            "server_cpu_ms_per_file_rounds": cpu,
                            "server_cpu_extra_pct_of_medians": round(
                                100 * (cpu_med["encrypted"] / cpu_med["plain"] - 1), 1
                            )
                            if len(cpu_med) == 2
                            else None,
                        }
            report["encryption_cost"] = cost
        if orthanc_skip is not None:
            report["orthanc"] = {"skipped": orthanc_skip}
        else:
            ratios: dict[str, Any] = {}
            pairs = [(h, o) for h in ("hub_batch", "hub") for o in ("orthanc", "orthanc_zip")
                     if h in systems and o in systems]  # fmt: skip
            for mine, peer in pairs:
                for c in client_counts:
                    h = report[mine][f"clients_{c}"].get("files_per_s")
                    o = report[peer][f"clients_{c}"].get("files_per_s")
                    if h and o:
                        per_round = [
                            round(a["files_per_s"] / b["files_per_s"], 2)
                            for a, b in zip(runs[mine][c], runs[peer][c], strict=True)
                            if a.get("files_per_s") and b.get("files_per_s")
                        ]
                        key = f"{mine}_over_{peer}_clients_{c}"
                        ratios[key] = {"of_medians": round(h / o, 2), "per_round": per_round}
            report["ratio_over_orthanc"] = ratios
            report["target_ratio"] = 5.0
        if args.gateway:
            report["gateway_end_to_end"] = bench_gateway(work, raw, work / "site.key")
        report["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
