"""The forwarder: a small pool of threads that sends queued payloads to the hub.

Retry policy (the hub is idempotent, so resending is always safe):
- 2xx: delivered ("stored" or "duplicate"); only then is the item marked delivered.
- connection errors, timeouts, 502/503/504 and 429: the hub is unreachable or busy; every worker
  pauses (exponential backoff with jitter, capped; `Retry-After` honoured) and the item goes back
  in the queue.
- other 5xx and 408: the item alone backs off.
- any other 4xx: permanent; the item moves to the dead letters with the hub's reason. Nothing is
  dropped silently; `medcloud gateway retry-dead` puts dead letters back once the cause is fixed.

Its length: the retry policy, the worker pool and the batching decide together when an item is done.
"""

from __future__ import annotations

import email.utils
import logging
import random
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from medcloud.errors import MedcloudError
from medcloud.gateway.outbox import Item, Outbox

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("medcloud.gateway")

_STREAM_ABOVE = 64 * 1024 * 1024  # payloads larger than this are streamed from disk, not read whole
_PAUSE_STATUSES = frozenset({429, 502, 503, 504})


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with "equal jitter": half the capped delay fixed, half random."""
    delay = min(cap, base * (2.0 ** min(attempt, 30)))
    r = rng or random
    return delay / 2.0 + r.uniform(0.0, delay / 2.0)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or HTTP date); None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (now if now is not None else time.time()))


def _ascii_filename(name: str) -> str:
    """HTTP header values must be Latin-1; the hub only uses the name as a hint."""
    cleaned = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in name)
    return cleaned[:200] or "file"


def _problem_reason(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip().replace("\n", " ")
        return f"HTTP {response.status_code}: {text[:300]}" if text else f"HTTP {response.status_code}"
    if isinstance(body, dict):
        title = body.get("title") or response.reason_phrase
        detail = body.get("detail")
        return f"HTTP {response.status_code} {title}" + (f": {detail}" if detail else "")
    return f"HTTP {response.status_code}"


def encode_multipart(parts: list[tuple[bytes, str, str, str]]) -> tuple[bytes, str]:
    """A multipart/related body for `POST /api/v1/ingest/batch`: (data, media type, sha256, filename)."""
    import secrets

    while True:
        boundary = "medcloud-" + secrets.token_hex(16)
        marker = boundary.encode()
        if not any(marker in data for data, *_ in parts):
            break
    chunks: list[bytes] = []
    for data, media_type, sha, filename in parts:
        head = (
            f"--{boundary}\r\nContent-Type: {media_type}\r\nContent-Length: {len(data)}\r\n"
            f"X-Content-SHA256: {sha}\r\nX-Medcloud-Filename: {_ascii_filename(filename)}\r\n\r\n"
        )
        chunks += [head.encode("latin-1"), data, b"\r\n"]
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f'multipart/related; type="application/octet-stream"; boundary={boundary}'


@dataclass
class ForwarderConfig:
    hub_url: str
    token: str
    workers: int = 4
    backoff_base: float = 0.5
    backoff_cap: float = 60.0
    connect_timeout: float = 10.0
    read_timeout: float = 120.0
    # TLS: True, False (never in production), a CA bundle path, or a context (mutual TLS: security.tls)
    verify: bool | str | ssl.SSLContext = True
    batch_size: int = 50  # files per multipart request when several are waiting; 1 = one per request
    batch_bytes: int = 32 * 1024 * 1024
    proxy: str | None = None  # outbound HTTP(S) proxy (deployment profiles); None: the environment's, if any


@dataclass
class ForwarderStats:
    sent: int = 0
    stored: int = 0
    duplicates: int = 0
    retries: int = 0
    dead: int = 0
    last_error: str | None = None
    paused_until: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "sent": self.sent,
                "stored": self.stored,
                "duplicates": self.duplicates,
                "retries": self.retries,
                "dead": self.dead,
                "last_error": self.last_error,
                "paused_until": self.paused_until,
            }


EventSink = Callable[[str, Item, str], None]


class Forwarder:
    """Sends outbox items to `POST {hub}/api/v1/ingest` from a pool of worker threads."""

    def __init__(self, outbox: Outbox, config: ForwarderConfig, on_event: EventSink | None = None) -> None:
        self.outbox = outbox
        self.config = config
        self.url = config.hub_url.rstrip("/") + "/api/v1/ingest"
        self.batch_url = self.url + "/batch"
        self._batch_ok = config.batch_size > 1
        self.stats = ForwarderStats()
        self._on_event = on_event
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._claim_lock = threading.Lock()
        self._inflight: set[int] = set()
        self._threads: list[threading.Thread] = []
        self._consecutive_failures = 0
        self._rng = random.Random()

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        for n in range(max(1, self.config.workers)):
            t = threading.Thread(target=self._worker, name=f"forwarder-{n}", daemon=True)
            t.start()
            self._threads.append(t)

    def wake(self) -> None:
        """Tell idle workers that something was enqueued."""
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        """Let in-flight sends finish, then stop. Anything not acknowledged stays queued on disk."""
        self._stop.set()
        self._wake.set()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self._threads.clear()

    @property
    def inflight(self) -> int:
        with self._claim_lock:
            return len(self._inflight)

    # -- worker ---------------------------------------------------------------------------------
    def _worker(self) -> None:
        import httpx

        timeout = httpx.Timeout(self.config.read_timeout, connect=self.config.connect_timeout)
        headers = {"Authorization": f"Bearer {self.config.token}", "User-Agent": "medcloud-gateway"}
        with httpx.Client(
            timeout=timeout, headers=headers, verify=self.config.verify, proxy=self.config.proxy
        ) as client:
            while not self._stop.is_set():
                now = time.time()
                paused = self.stats.paused_until - now
                if paused > 0:
                    self._stop.wait(min(paused, 0.5))
                    continue
                items = self._claim(now)
                if not items:
                    self._idle(now)
                    continue
                try:
                    if len(items) == 1:
                        self._send(client, items[0])
                    else:
                        self._send_batch(client, items)
                except Exception as exc:  # never let one item kill the worker
                    log.exception("forwarder: unexpected error on item(s) %s", [i.id for i in items])
                    self._retry_all(items, status=None, error=f"{type(exc).__name__}: {exc}", pause=False)
                finally:
                    with self._claim_lock:
                        for item in items:
                            self._inflight.discard(item.id)

    def _claim(self, now: float) -> list[Item]:
        """Due items for one request: a batch while the hub takes batches, large files alone."""
        with self._claim_lock:
            limit = self.config.batch_size if self._batch_ok else 1
            due = self.outbox.claim_due(now, sorted(self._inflight), limit=limit)
            chosen: list[Item] = []
            total = 0
            for item in due:
                if chosen and (item.size > _STREAM_ABOVE or total + item.size > self.config.batch_bytes):
                    break
                chosen.append(item)
                total += item.size
                if item.size > _STREAM_ABOVE:
                    break
            for item in chosen:
                self._inflight.add(item.id)
            return chosen

    def _idle(self, now: float) -> None:
        due = self.outbox.next_due()
        wait = 1.0
        if due is not None:
            wait = min(wait, max(0.01, due - now))
        self._wake.wait(wait)
        self._wake.clear()

    def _body(self, item: Item) -> bytes | Iterator[bytes]:
        if item.size <= _STREAM_ABOVE:
            return self.outbox.payload(item)
        fh = self.outbox.open_payload(item)  # FileNotFoundError here, before the request starts

        def chunks() -> Iterator[bytes]:
            with fh:
                while chunk := fh.read(1024 * 1024):
                    yield chunk

        return chunks()

    def _send(self, client: httpx.Client, item: Item) -> None:
        import httpx

        try:
            body = self._body(item)
        except FileNotFoundError:
            self._dead(item, status=None, error="payload file missing from the outbox (state folder altered?)")
            return
        except MedcloudError as exc:  # encrypted at rest and the key is wrong or the file was altered
            self._dead(item, status=None, error=f"payload unreadable: {exc.detail}")
            return
        headers = {
            "Content-Type": item.media_type,
            "Content-Length": str(item.size),
            "X-Content-SHA256": item.sha256,
            "X-Medcloud-Filename": _ascii_filename(item.filename),
        }
        with self.stats.lock:
            self.stats.sent += 1
        try:
            response = client.post(self.url, content=body, headers=headers)
        except httpx.TransportError as exc:
            self._retry(item, status=None, error=f"hub unreachable: {type(exc).__name__}: {exc}", pause=True)
            return
        status = response.status_code
        if 200 <= status < 300:
            self._delivered(item, response)
        elif status in _PAUSE_STATUSES:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            self._retry(item, status=status, error=_problem_reason(response), pause=True, retry_after=retry_after)
        elif status >= 500 or status == 408:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            self._retry(item, status=status, error=_problem_reason(response), pause=False, retry_after=retry_after)
        else:
            reason = _problem_reason(response)
            if status == 401:
                reason += " (the hub refused the gateway token: replace it, then `medcloud gateway retry-dead`)"
            self._dead(item, status=status, error=reason)

    def _send_batch(self, client: httpx.Client, items: list[Item]) -> None:
        """Several items in one multipart/related request; the hub commits them together."""
        import httpx

        parts: list[tuple[Item, bytes]] = []
        for item in items:
            try:
                parts.append((item, self.outbox.payload(item)))
            except FileNotFoundError:
                self._dead(item, status=None, error="payload file missing from the outbox (state folder altered?)")
            except MedcloudError as exc:
                self._dead(item, status=None, error=f"payload unreadable: {exc.detail}")
        if not parts:
            return
        body, content_type = encode_multipart(
            [(data, item.media_type, item.sha256, item.filename) for item, data in parts]
        )
        sent = [item for item, _ in parts]
        with self.stats.lock:
            self.stats.sent += len(sent)
        try:
            response = client.post(self.batch_url, content=body, headers={"Content-Type": content_type})
        except httpx.TransportError as exc:
            self._retry_all(sent, status=None, error=f"hub unreachable: {type(exc).__name__}: {exc}", pause=True)
            return
        status = response.status_code
        if status in (404, 405):
            # A hub without the batch endpoint: the items stay queued untouched and go one by one.
            log.info("the hub does not take batches (HTTP %d); sending one file per request", status)
            self._batch_ok = False
            return
        if status in _PAUSE_STATUSES or status >= 500 or status == 408:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            self._retry_all(
                sent,
                status=status,
                error=_problem_reason(response),
                pause=status in _PAUSE_STATUSES,
                retry_after=retry_after,
            )
            return
        if status in (400, 413, 415):
            # The request as a whole was refused (too big, a part it could not parse): find out which
            # file it was by sending them one by one.
            log.info("batch refused (%s); sending its %d files one by one", _problem_reason(response), len(sent))
            for item in sent:
                self._send(client, item)
            return
        if not 200 <= status < 300:
            reason = _problem_reason(response)
            if status == 401:
                reason += " (the hub refused the gateway token: replace it, then `medcloud gateway retry-dead`)"
            for item in sent:
                self._dead(item, status=status, error=reason)
            return
        try:
            results = {int(r["index"]): r for r in response.json().get("items", [])}
        except (ValueError, KeyError, TypeError, AttributeError):
            self._retry_all(sent, status=status, error="unreadable batch reply from the hub", pause=False)
            return
        delivered: list[tuple[int, int, str]] = []
        retry: list[Item] = []
        for index, item in enumerate(sent):
            res = results.get(index)
            outcome = str(res.get("status")) if isinstance(res, dict) else ""
            if outcome in ("stored", "duplicate"):
                assert isinstance(res, dict)
                hub_sha = res.get("sha256")
                if isinstance(hub_sha, str) and hub_sha and hub_sha.lower() != item.sha256:
                    self._dead(item, status=status, error=f"hub stored sha256 {hub_sha}, sent {item.sha256}")
                else:
                    delivered.append((item.id, status, outcome))
                continue
            problem = res.get("problem") if isinstance(res, dict) else None
            p_status = problem.get("status") if isinstance(problem, dict) else None
            if (
                isinstance(problem, dict)
                and isinstance(p_status, int)
                and 400 <= p_status < 500
                and p_status not in (408, 429)
            ):
                detail = problem.get("detail")
                reason = f"HTTP {p_status} {problem.get('title') or ''}".rstrip() + (f": {detail}" if detail else "")
                self._dead(item, status=p_status, error=reason)
            else:
                retry.append(item)
        self.outbox.mark_delivered_many(delivered)
        with self.stats.lock:
            if delivered and self._consecutive_failures:
                log.info("hub reachable again after %d failed attempt(s)", self._consecutive_failures)
            if delivered:
                self._consecutive_failures = 0
            for _, _, outcome in delivered:
                if outcome == "duplicate":
                    self.stats.duplicates += 1
                else:
                    self.stats.stored += 1
        if retry:
            self._retry_all(retry, status=status, error="the hub could not store this file now", pause=False)
        done = {d[0] for d in delivered}
        for item in sent:
            if item.id in done:
                self._emit("delivered", item, "batch")

    # -- outcomes -------------------------------------------------------------------------------
    def _retry_all(
        self, items: list[Item], *, status: int | None, error: str, pause: bool, retry_after: float | None = None
    ) -> None:
        if len(items) == 1:
            self._retry(items[0], status=status, error=error, pause=pause, retry_after=retry_after)
            return
        cfg = self.config
        now = time.time()
        with self.stats.lock:
            self.stats.retries += len(items)
            self.stats.last_error = error
            first_of_outage = False
            if pause:
                self._consecutive_failures += 1
                first_of_outage = self._consecutive_failures == 1
                pause_for = backoff_delay(self._consecutive_failures - 1, cfg.backoff_base, cfg.backoff_cap, self._rng)
                if retry_after is not None:
                    pause_for = min(retry_after, 3600.0)
                self.stats.paused_until = max(self.stats.paused_until, now + pause_for)
            plan = []
            for item in items:
                delay = backoff_delay(item.attempts, cfg.backoff_base, cfg.backoff_cap, self._rng)
                if pause:
                    delay = max(0.0, self.stats.paused_until - now)
                elif retry_after is not None:
                    delay = min(retry_after, 3600.0)
                plan.append((item.id, now + delay))
        self.outbox.mark_retry_many(plan, status=status, error=error)
        if first_of_outage:
            log.warning(
                "hub unavailable (%s); items stay queued and are retried with backoff up to %.0f s",
                error,
                cfg.backoff_cap,
            )
        elif not pause:
            log.warning("will retry %d file(s): %s", len(items), error)
        for item in items:
            if self._on_event is not None:
                self._on_event("retry", item, error)

    def _delivered(self, item: Item, response: httpx.Response) -> None:
        outcome = "stored"
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            outcome = str(body.get("status") or outcome)
            hub_sha = body.get("sha256")
            if isinstance(hub_sha, str) and hub_sha and hub_sha.lower() != item.sha256:
                # The hub acknowledged other bytes than we sent: do not count it as delivered.
                self._dead(item, status=response.status_code, error=f"hub stored sha256 {hub_sha}, sent {item.sha256}")
                return
        self.outbox.mark_delivered(item.id, response.status_code, outcome)
        with self.stats.lock:
            if self._consecutive_failures:
                log.info("hub reachable again after %d failed attempt(s)", self._consecutive_failures)
            self._consecutive_failures = 0
            if outcome == "duplicate":
                self.stats.duplicates += 1
            else:
                self.stats.stored += 1
        self._emit("delivered", item, outcome)

    def _retry(
        self, item: Item, *, status: int | None, error: str, pause: bool, retry_after: float | None = None
    ) -> None:
        cfg = self.config
        now = time.time()
        delay = backoff_delay(item.attempts, cfg.backoff_base, cfg.backoff_cap, self._rng)
        with self.stats.lock:
            self.stats.retries += 1
            self.stats.last_error = error
            if pause:
                self._consecutive_failures += 1
                pause_for = backoff_delay(self._consecutive_failures - 1, cfg.backoff_base, cfg.backoff_cap, self._rng)
                if retry_after is not None:
                    pause_for = min(retry_after, 3600.0)
                self.stats.paused_until = max(self.stats.paused_until, now + pause_for)
                delay = max(0.0, self.stats.paused_until - now)
            elif retry_after is not None:
                delay = min(retry_after, 3600.0)
            first_of_outage = pause and self._consecutive_failures == 1
        self.outbox.mark_retry(item.id, at=now + delay, status=status, error=error)
        if pause and not first_of_outage:
            # One line per outage, not one per item: the status line shows that it goes on.
            log.debug("will retry %s: %s", item.filename, error)
            if self._on_event is not None:
                self._on_event("retry", item, error)
            return
        if first_of_outage:
            log.warning(
                "hub unavailable (%s); items stay queued and are retried with backoff up to %.0f s",
                error,
                cfg.backoff_cap,
            )
            if self._on_event is not None:
                self._on_event("retry", item, error)
            return
        self._emit("retry", item, f"{error} (next try in {delay:.1f} s)")

    def _dead(self, item: Item, *, status: int | None, error: str) -> None:
        self.outbox.mark_dead(item.id, status=status, error=error)
        with self.stats.lock:
            self.stats.dead += 1
            self.stats.last_error = error
        self._emit("dead", item, error)

    def _emit(self, kind: str, item: Item, detail: str) -> None:
        if kind == "dead":
            log.error("dead letter: %s (%s): %s", item.filename, item.source, detail)
        elif kind == "retry":
            log.warning("will retry %s: %s", item.filename, detail)
        else:
            log.debug("delivered %s: %s", item.filename, detail)
        if self._on_event is not None:
            self._on_event(kind, item, detail)
