"""Refused TLS handshakes into the audit trail, aggregated so that a flood cannot fill it.

A client with no certificate, one that does not verify (another CA, expired, revoked) or an old protocol
is refused in the TLS handshake, before any HTTP request exists. The hub's protocol
(`hub.server.LimitedHttpToolsProtocol`) reports each such refusal here with the source address and a
reason; this book turns them into `tls.handshake.refused` audit events:

- the first refusal from a source in a window (`window_s`, 60 s) is recorded at once (count 1);
- further refusals from that source in the window are counted, and recorded as one event (their count,
  reasons, first and last time) when the window ends: at most two events per source per minute;
- at most `max_sources` sources get their own events per window; refusals from further sources in that
  window are counted into one overflow event (`client` `*`, the number of sources), so that a spray
  from many addresses cannot fill the log either.

A connection closed before any handshake byte (a TCP health check, a port scan that connects and leaves)
is not a refusal and is not recorded.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

ACTION = "tls.handshake.refused"
OVERFLOW = "*"
# What an OpenSSL reason code means to an auditor.
_REASONS = {
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "no client certificate",
    "CERTIFICATE_VERIFY_FAILED": "invalid client certificate",
    "UNSUPPORTED_PROTOCOL": "protocol version refused",
    "WRONG_VERSION_NUMBER": "not TLS or a refused protocol version",
    "NO_SHARED_CIPHER": "no allowed cipher suite offered",
    "NO_SUITABLE_SIGNATURE_ALGORITHM": "no allowed signature algorithm offered",
    "HTTP_REQUEST": "plain HTTP sent to the TLS port",
    "TLSV1_ALERT_UNKNOWN_CA": "the client refused the hub's certificate (unknown CA)",
    "SSLV3_ALERT_BAD_CERTIFICATE": "the client refused the hub's certificate",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "the client refused the hub's certificate",
}


def refusal_reason(exc: BaseException) -> str | None:
    """Why a handshake failed, in words; None when the client just went away (not a refusal)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"invalid client certificate: {exc.verify_message or exc.reason}"[:200]
    if isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
        return None
    if isinstance(exc, ssl.SSLError):
        code = str(exc.reason or "")
        return _REASONS.get(code, f"TLS error: {code or exc.__class__.__name__}")[:200]
    if isinstance(exc, TimeoutError) or (isinstance(exc, ConnectionAbortedError) and "handshake" in str(exc)):
        return "handshake timed out"
    return None  # ConnectionResetError, BrokenPipeError, ...: the client left


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


@dataclass
class _Window:
    opened: float
    first: float
    last: float = 0.0
    more: int = 0  # refusals after the first, not yet recorded
    reasons: dict[str, int] = field(default_factory=dict)
    sources: set[str] = field(default_factory=set)  # the overflow window only


class HandshakeRefusals:
    """Counts refused handshakes per source and window; `record(client, detail)` writes one audit event."""

    def __init__(
        self,
        record: Callable[[str, dict[str, Any]], None],
        *,
        window_s: float = 60.0,
        max_sources: int = 100,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._record = record
        self.window_s = window_s
        self.max_sources = max_sources
        self._clock = clock
        self._wall = wall
        self._windows: dict[str, _Window] = {}
        self._budget_opened = -1e18
        self._sources_in_budget = 0
        self._guard = threading.Lock()

    def refused(self, source: str, reason: str) -> bool:
        """Count one refusal; True when it opened a new window (call `flush` after `window_s`)."""
        now, wall = self._clock(), self._wall()
        out: list[tuple[str, dict[str, Any]]] = []
        origin, opened = source, False
        with self._guard:
            out += self._close_ended(now)
            if now - self._budget_opened >= self.window_s:
                self._budget_opened, self._sources_in_budget = now, 0
            window = self._windows.get(source)
            if window is None and self._sources_in_budget >= self.max_sources:
                source = OVERFLOW  # too many sources this window: counted together
                window = self._windows.get(OVERFLOW)
            if window is None:
                window = self._windows[source] = _Window(opened=now, first=wall, last=wall)
                opened = True
            if source == OVERFLOW:
                window.sources.add(origin)
            if source != OVERFLOW and opened:
                self._sources_in_budget += 1
                out.append((source, {"reason": reason, "count": 1, "window_s": self.window_s, "first": _iso(wall)}))
            else:
                window.more += 1
                window.last = wall
                window.reasons[reason] = window.reasons.get(reason, 0) + 1
        for client, detail in out:
            self._record(client, detail)
        return opened

    def flush(self) -> int:
        """Record the counts of windows that ended; how many events were written."""
        with self._guard:
            out = self._close_ended(self._clock())
        for client, detail in out:
            self._record(client, detail)
        return len(out)

    def _close_ended(self, now: float) -> list[tuple[str, dict[str, Any]]]:
        out = []
        for source, window in list(self._windows.items()):
            if now - window.opened < self.window_s:
                continue
            del self._windows[source]
            if window.more:
                detail: dict[str, Any] = {
                    "reasons": dict(sorted(window.reasons.items())),
                    "count": window.more,
                    "window_s": self.window_s,
                    "first": _iso(window.first),
                    "last": _iso(window.last),
                    "aggregated": True,
                }
                if source == OVERFLOW:
                    detail["sources"] = len(window.sources)
                    detail["sample"] = sorted(window.sources)[:10]
                out.append((source, detail))
        return out
