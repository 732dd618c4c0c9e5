"""The one-way profile's two halves: a spool the isolated gateway writes, and the relay that sends it on.

Inside the isolated segment, `SpoolWriter` takes the forwarder's place: each de-identified outbox item
becomes `<sha256>.bin` plus `<sha256>.json` (written last, so a half-written item is never picked up)
in the spool folder, which a one-way relay (data diode, one-way file transfer) carries out. Nothing
there listens and nothing connects anywhere.

Outside, `relay_spool` reads the carried spool, checks every payload against its SHA-256, enqueues it
in the relay's own outbox (durably) and only then deletes it from the spool; a `Forwarder` sends it to
the hub as any gateway would. The payloads are already de-identified: the relay holds no site key.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
import time
from pathlib import Path

from medcloud.fsio import fsync_dir, write_atomic
from medcloud.gateway.forwarder import ForwarderStats
from medcloud.gateway.outbox import Entry, Outbox, SourceRef

log = logging.getLogger("medcloud.gateway")


class SpoolWriter:
    """Moves queued outbox items into a spool folder (the forwarder's interface, without a network)."""

    def __init__(self, outbox: Outbox, spool: Path) -> None:
        self.outbox = outbox
        self.spool = spool
        self.stats = ForwarderStats()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._busy = 0

    def start(self) -> None:
        self.spool.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name="spool-writer", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    @property
    def inflight(self) -> int:
        return self._busy

    def _run(self) -> None:
        while not self._stop.is_set():
            items = self.outbox.claim_due(time.time(), [], limit=100)
            if not items:
                self._wake.wait(0.5)
                self._wake.clear()
                continue
            self._busy = len(items)
            try:
                for item in items:
                    data = self.outbox.payload(item)
                    meta = {
                        "sha256": item.sha256,
                        "size": item.size,
                        "media_type": item.media_type,
                        "filename": item.filename,
                        "kind": item.kind,
                        "sop_instance_uid": item.sop_instance_uid,
                    }
                    write_atomic(self.spool / f"{item.sha256}.bin", data, sync_dir=False)
                    fsync_dir(self.spool)
                    write_atomic(self.spool / f"{item.sha256}.json", json.dumps(meta).encode())
                    self.outbox.mark_delivered(item.id, 0, "spooled")
                    with self.stats.lock:
                        self.stats.sent += 1
            finally:
                self._busy = 0


def relay_spool(spool: Path, outbox: Outbox) -> tuple[int, int]:
    """Enqueue every complete spool item into `outbox`, then remove it from the spool.

    Returns (enqueued, refused): a payload whose bytes do not match its name is left in place, renamed
    `.bad`, and never sent."""
    done = bad = 0
    for meta_path in sorted(spool.glob("*.json")):
        sha = meta_path.stem
        bin_path = spool / f"{sha}.bin"
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            data = bin_path.read_bytes()
        except (OSError, ValueError) as exc:
            log.warning("relay: cannot read spool item %s: %s", sha, exc)
            bad += 1
            continue
        if hashlib.sha256(data).hexdigest() != sha or meta.get("sha256") != sha:
            log.warning("relay: spool item %s does not match its SHA-256; set aside as .bad", sha)
            os.replace(meta_path, meta_path.with_suffix(".json.bad"))
            bad += 1
            continue
        st = bin_path.stat()
        outbox.enqueue_many(
            [
                Entry(
                    SourceRef(f"relay:{sha}", st.st_size, st.st_mtime_ns),
                    data,
                    str(meta.get("media_type") or "application/octet-stream"),
                    str(meta.get("filename") or sha),
                    meta.get("kind"),
                    meta.get("sop_instance_uid"),
                )
            ]
        )
        meta_path.unlink()
        with contextlib.suppress(FileNotFoundError):
            bin_path.unlink()
        done += 1
    return done, bad
