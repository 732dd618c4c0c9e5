"""Load with a crash: many sites forward at once, the hub is killed with SIGKILL mid-stream and restarted.

    .venv/bin/python bench/load_kill.py [--sites 20] [--files 500] [--kill-at 0.3] [--batch-size 50]
                                        [--workers 1] [--down-s 2] [--deadline-s 900]

Each site is the real gateway forwarder (`medcloud.gateway.forwarder.Forwarder` over its own SQLite
`Outbox`, its own site token), holding `--files` small de-identified DICOM files made from pydicom's
`CT_small.dcm` (every file its own Study/Series/SOP Instance UIDs, so every one is distinct bytes). The
hub is `medcloud hub serve` on a free 127.0.0.1 port. When `--kill-at` of all files have been
acknowledged, the hub process gets SIGKILL; after `--down-s` seconds it is started again on the same
port and data folder, and the forwarders carry on with their own retry and back-off (what they do
against a real hub outage). The run ends when every outbox is empty.

Then, with the hub stopped: catalog rows (and distinct SOP UIDs) against the files sent, lost and
duplicated counts, `medcloud hub check-blobs` and `medcloud audit verify` (their exit codes and
output). Prints one JSON object; exit status 1 unless errors, lost and duplicated are all 0 and both
checks are clean.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

PROJECT = "load"


def make_files(n_sites: int, per_site: int) -> list[list[tuple[str, bytes]]]:
    """(SOP UID, bytes) per site: CT_small.dcm with fresh UIDs, marked de-identified."""
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    base = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    base.PatientIdentityRemoved = "YES"
    out: list[list[tuple[str, bytes]]] = []
    for s in range(n_sites):
        files = []
        for i in range(per_site):
            if i % 10 == 0:  # ten instances per series, one series per study
                study, series = generate_uid(prefix="2.25."), generate_uid(prefix="2.25.")
            base.PatientID = base.PatientName = f"PSEUDO-{s:02d}-{i // 10:03d}"
            base.StudyInstanceUID, base.SeriesInstanceUID = study, series
            sop = generate_uid(prefix="2.25.")
            base.SOPInstanceUID = base.file_meta.MediaStorageSOPInstanceUID = sop
            buf = io.BytesIO()
            base.save_as(buf, enforce_file_format=True)
            files.append((sop, buf.getvalue()))
        out.append(files)
    return out


def make_tokens(data: Path, n_sites: int) -> dict[str, str]:
    from medcloud.config import load_settings
    from medcloud.security.tokens import issue_token
    from medcloud.store import Catalog

    data.mkdir(parents=True, exist_ok=True)
    cat = Catalog.from_settings(load_settings(data_dir=data))
    cat.migrate()
    try:
        tokens = {f"site{s:02d}": issue_token(cat, role="site", site=f"site{s:02d}", projects=[PROJECT]).token
                  for s in range(n_sites)}  # fmt: skip
        tokens["researcher"] = issue_token(cat, role="researcher", projects=[PROJECT]).token
        return tokens
    finally:
        cat.dispose()


class Hub:
    """`medcloud hub serve` as a subprocess on a fixed port; killable."""

    def __init__(self, data: Path, port: int, log: Path) -> None:
        self.data, self.port, self.log = data, port, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{port}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MEDCLOUD_")}
        env["PYTHONPATH"] = str(SRC)
        return env

    def start(self, timeout: float = 90.0) -> float:
        import httpx

        t0 = time.monotonic()
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "medcloud.cli", "hub", "serve", "--data", str(self.data), "--host",
                 "127.0.0.1", "--port", str(self.port)], env=self.env(), stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hub exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return time.monotonic() - t0
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError("hub did not start")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(15)

    def cli(self, *args: str) -> tuple[int, str]:
        proc = subprocess.run(
            [sys.executable, "-m", "medcloud.cli", *args, "--data", str(self.data)],
            env=self.env(), capture_output=True, text=True, check=False, timeout=900,
        )  # fmt: skip
        return proc.returncode, (proc.stdout + proc.stderr)[-3000:]


def run(a: argparse.Namespace) -> dict[str, Any]:
    from tests.live_hub import free_port

    from medcloud.gateway.forwarder import Forwarder, ForwarderConfig
    from medcloud.gateway.outbox import Entry, Outbox, SourceRef

    tmp = Path(tempfile.mkdtemp(prefix="medcloud-loadkill-"))
    hub = Hub(tmp / "data", free_port(), tmp / "hub.log")
    outboxes: list[Outbox] = []
    forwarders: list[Forwarder] = []
    result: dict[str, Any] = {"sites": a.sites, "files_per_site": a.files, "batch_size": a.batch_size}
    try:
        t0 = time.monotonic()
        tokens = make_tokens(hub.data, a.sites)
        files = make_files(a.sites, a.files)
        sent_uids = {sop for site in files for sop, _ in site}
        total = sum(len(site) for site in files)
        result["files"] = total
        result["distinct_uids"] = len(sent_uids)
        result["file_bytes"] = sum(len(d) for site in files for _, d in site) // total
        for s, site in enumerate(files):
            ob = Outbox(tmp / f"gw{s:02d}")
            ob.enqueue_many(
                [
                    Entry(
                        SourceRef(f"/in/site{s:02d}/{i}.dcm", len(d), i),
                        d,
                        "application/dicom",
                        f"{i}.dcm",
                        "dicom",
                        sop,
                    )
                    for i, (sop, d) in enumerate(site)
                ]
            )
            outboxes.append(ob)
        del files
        result["prepare_s"] = round(time.monotonic() - t0, 1)
        result["hub_start_s"] = round(hub.start(), 2)
        for s, ob in enumerate(outboxes):
            cfg = ForwarderConfig(
                hub_url=hub.url, token=tokens[f"site{s:02d}"], workers=a.workers, backoff_base=0.2,
                backoff_cap=a.backoff_cap, batch_size=a.batch_size, read_timeout=120,
            )  # fmt: skip
            forwarders.append(Forwarder(ob, cfg))

        def delivered() -> int:
            return sum(ob.counts().delivered for ob in outboxes)

        started = time.monotonic()
        for fw in forwarders:
            fw.start()
        kill_at = int(total * a.kill_at)
        killed = threading.Event()
        while delivered() < kill_at:
            if time.monotonic() - started > a.deadline_s:
                raise RuntimeError("no progress before the kill")
            time.sleep(0.02)
        at_kill = delivered()
        hub.kill9()
        killed.set()
        result["killed_after_acknowledged"] = at_kill
        result["killed_at_s"] = round(time.monotonic() - started, 2)
        time.sleep(a.down_s)
        result["hub_restart_s"] = round(hub.start(), 2)
        for fw in forwarders:
            fw.wake()
        while any(ob.queued_count() for ob in outboxes):
            if time.monotonic() - started > a.deadline_s:
                break
            time.sleep(0.1)
        elapsed = time.monotonic() - started
        for fw in forwarders:
            fw.stop()
        counts = Counter[str]()
        for ob in outboxes:
            counts.update({k: v for k, v in ob.counts().as_dict().items() if isinstance(v, int)})
        stats = Counter[str]()
        for fw in forwarders:
            stats.update({k: v for k, v in fw.stats.snapshot().items() if isinstance(v, int)})
        result["seconds"] = round(elapsed, 1)
        result["files_per_s"] = round(total / elapsed, 1)
        result["outbox"] = dict(counts)
        result["forwarder"] = dict(stats)
        result["errors_after_retry"] = counts["dead"] + counts["rejected"] + counts["queued"]
        hub.stop()
        # What the hub holds, read from its catalog with the hub stopped.
        from medcloud.config import load_settings
        from medcloud.store import Catalog

        cat = Catalog.from_settings(load_settings(data_dir=hub.data))
        try:
            refs = list(cat.query.blob_refs())
        finally:
            cat.dispose()
        rows = [r.split("/", 1)[1] for _, r in refs if r.startswith("instance/")]
        result["catalog_rows"] = len(rows)
        result["catalog_distinct_uids"] = len(set(rows))
        result["lost"] = len(sent_uids - set(rows))
        result["duplicated"] = len(rows) - len(set(rows))
        result["unexpected_rows"] = len(set(rows) - sent_uids)
        result["distinct_blobs_referenced"] = len({sha for sha, _ in refs})
        rc, out = hub.cli("hub", "check-blobs")
        blobs = json.loads(out[out.index("{") : out.rindex("}") + 1]) if "{" in out else {"raw": out}
        result["check_blobs"] = {"exit_code": rc, **{k: blobs.get(k) for k in ("blobs_ok", "pack_records",
                                 "damaged", "missing", "torn_tails")}}  # fmt: skip
        rc, out = hub.cli("audit", "verify")
        result["audit_verify"] = {"exit_code": rc, "output": out.strip()[-400:]}
        result["ok"] = (
            result["errors_after_retry"] == 0 and result["lost"] == 0 and result["duplicated"] == 0
            and result["check_blobs"]["exit_code"] == 0 and result["audit_verify"]["exit_code"] == 0
        )  # fmt: skip
        return result
    finally:
        for fw in forwarders:
            fw.stop(5)
        for ob in outboxes:
            ob.close()
        hub.stop()
        if a.keep:
            a.keep.mkdir(parents=True, exist_ok=True)
            if (tmp / "hub.log").exists():
                shutil.copy(tmp / "hub.log", a.keep / "hub.log")
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--sites", type=int, default=20)
    ap.add_argument("--files", type=int, default=500, help="files per site")
    ap.add_argument("--kill-at", type=float, default=0.3, help="fraction acknowledged when the hub is killed")
    ap.add_argument("--batch-size", type=int, default=50, help="forwarder files per request (1: one per request)")
    ap.add_argument("--workers", type=int, default=1, help="forwarder threads per site")
    ap.add_argument("--backoff-cap", type=float, default=2.0)
    ap.add_argument("--down-s", type=float, default=2.0, help="seconds the hub stays down")
    ap.add_argument("--deadline-s", type=float, default=900.0)
    ap.add_argument("--keep", type=Path, help="copy the hub log here")
    a = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    result = run(a)
    print(json.dumps(result, indent=2))
    return 0 if result.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
