"""The gateway process: intake on the main thread, the forwarder pool behind it, a status line on top."""

from __future__ import annotations

import logging
import signal
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medcloud.gateway.forwarder import Forwarder, ForwarderConfig
from medcloud.gateway.intake import Deidentify, Intake, read_file_list
from medcloud.gateway.outbox import Counts, Outbox
from medcloud.gateway.relay import SpoolWriter
from medcloud.security.envelope import load_kek

if TYPE_CHECKING:
    from rich.console import Console

log = logging.getLogger("medcloud.gateway")

DEFAULT_MAX_FILE_BYTES = 2 * 1024**3


@dataclass
class GatewayConfig:
    hub_url: str
    token: str
    state_dir: Path
    watch: Path | None = None
    files: Path | None = None
    root: Path | None = None
    once: bool = False
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    settle_seconds: float = 2.0
    workers: int = 4
    batch_size: int = 50
    backoff_cap: float = 60.0
    poll_seconds: float = 2.0
    rescan_seconds: float = 300.0
    use_watchdog: bool = True
    status_every: float = 5.0
    verify: bool | str | ssl.SSLContext = True
    dicom_port: int | None = None  # C-STORE receiver; 0 picks a free port
    dicom_host: str = "127.0.0.1"
    ae_title: str = "MEDCLOUD"
    calling_aets: list[str] = field(default_factory=list)
    proxy: str | None = None  # outbound proxy to the hub (deployment profiles)
    relay_dir: Path | None = None  # one-way profile: spool for a one-way relay instead of a hub connection
    # Encryption at rest of the outbox (same names as the hub's settings; at most one set turns it on).
    encryption_key_file: Path | None = None
    encryption_key_env: str | None = None
    encryption_kms_command: str | None = None

    def resolved_root(self) -> Path:
        if self.root is not None:
            return self.root
        if self.watch is not None:
            return self.watch
        if self.files is not None and str(self.files) != "-":
            return self.files.parent
        return Path.cwd()


@dataclass
class RunSummary:
    counts: Counts
    queued: int = 0
    duplicates: int = 0
    quarantined: int = 0
    rejected: int = 0
    delivered: int = 0
    dead: int = 0
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def needs_attention(self) -> bool:
        return self.dead > 0 or self.rejected > 0


def status_line(counts: Counts, pending: int = 0, rate: float | None = None, paused_for: float = 0.0) -> str:
    parts = [
        f"queued {counts.queued}",
        f"delivered {counts.delivered}",
        f"dead {counts.dead}",
        f"quarantined {counts.quarantined}",
        f"rejected {counts.rejected}",
    ]
    if pending:
        parts.append(f"settling {pending}")
    if rate is not None:
        parts.append(f"{rate:.1f} files/s")
    if paused_for > 0:
        parts.append(f"hub unavailable, next try in {paused_for:.0f} s")
    return " · ".join(parts)


class Gateway:
    """One running gateway: folder watch and/or file list in, de-identified items out to the hub."""

    def __init__(self, config: GatewayConfig, deidentifier: Deidentify, console: Console | None = None) -> None:
        self.config = config
        self.console = console
        self.outbox = Outbox(config.state_dir, kek=load_kek(config))
        self.outbox.acquire_process_lock()
        self.forwarder: Forwarder | SpoolWriter
        if config.relay_dir is not None:
            self.forwarder = SpoolWriter(self.outbox, config.relay_dir)
        else:
            self.forwarder = Forwarder(
                self.outbox,
                ForwarderConfig(
                    hub_url=config.hub_url,
                    token=config.token,
                    workers=config.workers,
                    batch_size=config.batch_size,
                    backoff_cap=config.backoff_cap,
                    verify=config.verify,
                    proxy=config.proxy,
                ),
            )
        self.intake = Intake(
            self.outbox,
            deidentifier,
            config.resolved_root(),
            max_file_bytes=config.max_file_bytes,
            settle_seconds=config.settle_seconds,
            on_enqueued=self.forwarder.wake,
        )
        self._stop = threading.Event()
        self._observer: Any = None
        self.scp: Any = None

    def request_stop(self, *_: object) -> None:
        self._stop.set()

    # -- watching -------------------------------------------------------------------------------
    def _start_watchdog(self, folder: Path) -> None:
        try:
            from watchdog.events import FileSystemEvent, FileSystemEventHandler
            from watchdog.observers import Observer
        except ImportError:
            log.warning("watchdog is not installed; polling %s every %.0f s", folder, self.config.poll_seconds)
            return
        events = self.intake.events

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                if event.event_type in ("opened", "deleted", "closed_no_write"):
                    return
                target = getattr(event, "dest_path", "") or event.src_path
                target = target.decode() if isinstance(target, bytes) else target
                if event.is_directory:
                    if event.event_type in ("created", "moved"):
                        import os

                        for dirpath, _dirs, names in os.walk(target):
                            for name in names:
                                events.put(os.path.join(dirpath, name))
                    return
                events.put(target)

        try:
            observer = Observer()
            observer.schedule(Handler(), str(folder), recursive=True)
            observer.daemon = True
            observer.start()
        except Exception as exc:  # inotify limits, unsupported file systems (NFS, SMB)
            log.warning("cannot watch %s (%s); polling every %.0f s instead", folder, exc, self.config.poll_seconds)
            return
        self._observer = observer

    # -- main loop ------------------------------------------------------------------------------
    def run(self) -> RunSummary:
        cfg = self.config
        started = time.monotonic()
        before = self.outbox.counts()
        swept = self.outbox.sweep_payloads()
        if swept:
            log.info("removed %d payload file(s) left over by an earlier crash", swept)
        if before.queued:
            log.info("resuming: %d item(s) already queued in %s", before.queued, cfg.state_dir)
        self.forwarder.start()

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.request_stop)

        if cfg.dicom_port is not None:
            from medcloud.gateway.scp import StoreSCP

            self.scp = StoreSCP(
                self.intake,
                host=cfg.dicom_host,
                port=cfg.dicom_port,
                ae_title=cfg.ae_title,
                calling_aets=cfg.calling_aets,
            )
            self.scp.start()
        if cfg.files is not None:
            entries = read_file_list(cfg.files)
            self.intake.offer_list(entries)
            log.info("file list %s: %d path(s)", cfg.files, len(entries))
        if cfg.watch is not None:
            if not cfg.once and cfg.use_watchdog:
                self._start_watchdog(cfg.watch)  # before the scan, so nothing slips in between
            n = self.intake.scan(cfg.watch)
            log.info("watching %s: %d file(s) found at start", cfg.watch, n)
        last_scan = last_status = time.monotonic()
        counts = before
        last_counts = 0.0
        delivered_at_start = before.delivered
        rate_mark = (time.monotonic(), before.delivered)
        rate: float | None = None

        live = None
        if self.console is not None and self.console.is_terminal:
            from rich.live import Live

            live = Live("", console=self.console, refresh_per_second=4, transient=False)
            live.start()
        try:
            while not self._stop.is_set():
                self.intake.drain_events()
                mono = time.monotonic()
                if cfg.watch is not None and not cfg.once:
                    interval = cfg.rescan_seconds if self._observer is not None else cfg.poll_seconds
                    if mono - last_scan >= interval:
                        self.intake.scan(cfg.watch)
                        last_scan = mono
                worked = self.intake.process_ready()
                if mono - last_counts >= 1.0:  # full counts scan whole tables: once a second is plenty
                    counts = self.outbox.counts()
                    last_counts = mono
                if mono - rate_mark[0] >= 2.0:
                    rate = (counts.delivered - rate_mark[1]) / (mono - rate_mark[0])
                    rate_mark = (mono, counts.delivered)
                paused_for = max(0.0, self.forwarder.stats.paused_until - time.time())
                line = status_line(counts, self.intake.pending, rate, paused_for)
                if live is not None:
                    live.update(line)
                elif mono - last_status >= cfg.status_every:
                    log.info("status: %s", line)
                    last_status = mono
                if (
                    cfg.once
                    and self.intake.pending == 0
                    and self.intake.events.empty()
                    and self.forwarder.inflight == 0
                    and self.outbox.queued_count() == 0
                ):
                    break
                if not worked:
                    self._stop.wait(0.05 if self.intake.pending else 0.2)
        except KeyboardInterrupt:
            log.info("interrupted: stopping; queued items stay in %s", cfg.state_dir)
        finally:
            if live is not None:
                live.stop()
            if self._observer is not None:
                self._observer.stop()
            if self.scp is not None:
                self.scp.stop()
            self.forwarder.stop()
        counts = self.outbox.counts()
        fstats = self.forwarder.stats.snapshot()
        summary = RunSummary(
            counts=counts,
            queued=self.intake.stats.queued,
            duplicates=self.intake.stats.duplicates,
            quarantined=self.intake.stats.quarantined,
            rejected=self.intake.stats.rejected,
            delivered=counts.delivered - delivered_at_start,
            dead=int(fstats["dead"]),
            seconds=time.monotonic() - started,
            extra=fstats,
        )
        log.info("done: %s", status_line(counts))
        return summary

    def close(self) -> None:
        self.outbox.close()
