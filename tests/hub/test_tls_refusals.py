"""Refused TLS handshakes land in the audit trail, aggregated per source and minute, over real TLS on
127.0.0.1 (the hub of tests/hub/test_tls.py: mutual TLS with a CRL). Refused and recorded: no client
certificate, a certificate from another CA, a revoked one; a flood from one address is one event now and
one counted event when its window ends; another address gets its own; a client that connects and leaves
without a handshake is not a refusal. The book itself is tested with a fake clock, overflow included."""

from __future__ import annotations

import json
import pickle
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import uvicorn

from medcloud.hub.app import create_app
from medcloud.hub.server import uvicorn_options
from medcloud.security.ca import init_ca, issue_certificate, revoke_certificate
from medcloud.security.handshakes import ACTION, HandshakeRefusals
from medcloud.security.tls import client_context
from medcloud.store.tables import audit_events
from tests.hub.test_tls import TlsHub, hub  # noqa: F401  (module fixture)
from tests.live_hub import free_port


@contextmanager
def _serve(tls_hub: TlsHub) -> Iterator[tuple[int, Any]]:
    """A fresh server (its own app, so its own book of refusals) over the TLS hub's settings and catalog."""
    port = free_port()
    app = create_app(tls_hub.settings, state=tls_hub.state)
    options = uvicorn_options(tls_hub.settings)
    pickle.loads(pickle.dumps(options["http"]))  # noqa: S301  (reaches worker processes; context rebuilt there)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", **options))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline
        time.sleep(0.02)
    try:
        yield port, app
    finally:
        server.should_exit = True
        thread.join(10)


def _attempt(port: int, ctx: ssl.SSLContext, source: str = "127.0.0.1") -> str:
    """One connection from `source`: handshake, a request, the first bytes of an answer (or the error)."""
    with socket.socket() as sock:
        sock.settimeout(5)
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", port))
        try:
            with ctx.wrap_socket(sock, server_hostname="127.0.0.1") as tls:
                tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                return tls.recv(100).decode(errors="replace") or "closed"
        except (ssl.SSLError, OSError) as exc:
            return f"refused: {exc}"


def _events(tls_hub: TlsHub, after: int) -> list[dict[str, Any]]:
    with tls_hub.state.catalog.read() as conn:
        rows = conn.execute(
            sa.select(audit_events)
            .where(audit_events.c.action == ACTION, audit_events.c.seq > after)
            .order_by(audit_events.c.seq)
        )
        return [dict(r._mapping) | {"detail": json.loads(r.detail)} for r in rows]


def _wait_events(tls_hub: TlsHub, after: int, n: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while len(got := _events(tls_hub, after)) < n:
        assert time.monotonic() < deadline, got
        time.sleep(0.05)
    time.sleep(0.3)  # and nothing more arrives
    return _events(tls_hub, after)


def test_refused_handshakes_are_audited_with_source_and_reason(hub: TlsHub, tmp_path: Path) -> None:  # noqa: F811
    issue_certificate(hub.ca, "site", "site-gone", hub.certs)
    revoke_certificate(hub.ca, "site-gone")
    other = tmp_path / "other-ca"
    init_ca(other, name="someone else's CA")
    issue_certificate(other, "site", "site-a", tmp_path / "forged")
    with _serve(hub) as (port, _app):
        good = client_context(hub.ca / "ca.crt", hub.certs / "site-a.crt", hub.certs / "site-a.key")
        assert _attempt(port, good).startswith("HTTP/1.1 200")  # control: a good client is served
        start = hub.state.catalog.audit.head_seq()
        assert _attempt(port, client_context(hub.ca / "ca.crt")).startswith("HTTP/") is False  # no certificate
        forged = client_context(
            hub.ca / "ca.crt", tmp_path / "forged" / "site-a.crt", tmp_path / "forged" / "site-a.key"
        )
        assert _attempt(port, forged, "127.0.0.2").startswith("HTTP/") is False
        revoked = client_context(hub.ca / "ca.crt", hub.certs / "site-gone.crt", hub.certs / "site-gone.key")
        assert _attempt(port, revoked, "127.0.0.3").startswith("HTTP/") is False
        # Connecting and leaving without a handshake (a TCP health check) is not a refusal.
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        events = _wait_events(hub, start, 3)
    by_source = {e["client"]: e for e in events}
    assert len(events) == 3 and set(by_source) == {"127.0.0.1", "127.0.0.2", "127.0.0.3"}, events
    assert by_source["127.0.0.1"]["detail"]["reason"] == "no client certificate"
    assert by_source["127.0.0.2"]["detail"]["reason"].startswith("invalid client certificate")
    assert "revoked" in by_source["127.0.0.3"]["detail"]["reason"]
    for e in events:
        assert e["subject"] == "anonymous" and e["outcome"] == "refused:handshake" and e["resource"] == "tls/handshake"
        assert e["detail"]["count"] == 1
    assert hub.state.catalog.audit.verify().ok  # written through the chain like every event


def test_a_flood_is_one_event_now_and_one_count_per_window(hub: TlsHub) -> None:  # noqa: F811
    anonymous = client_context(hub.ca / "ca.crt")
    with _serve(hub) as (port, app):
        start = hub.state.catalog.audit.head_seq()
        for _ in range(25):
            assert _attempt(port, anonymous, "127.0.0.9").startswith("HTTP/") is False
        for _ in range(3):
            assert _attempt(port, anonymous, "127.0.0.10").startswith("HTTP/") is False
        first = _wait_events(hub, start, 2)
        assert sorted((e["client"], e["detail"]["count"]) for e in first) == [("127.0.0.10", 1), ("127.0.0.9", 1)]
        # The window ends (the clock moved on a minute): one counted event per source for the rest.
        book = app.state.tls_refusals
        book._clock = lambda: time.monotonic() + 61
        assert book.flush() == 2
        events = _wait_events(hub, start, 4)
    later = {e["client"]: e["detail"] for e in events[2:]}
    assert later["127.0.0.9"]["count"] == 24 and later["127.0.0.10"]["count"] == 2
    assert later["127.0.0.9"]["reasons"] == {"no client certificate": 24} and later["127.0.0.9"]["aggregated"]


class _Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_book_aggregates_per_source_and_caps_sources_per_window() -> None:
    written: list[tuple[str, dict[str, Any]]] = []
    clock = _Clock()
    book = HandshakeRefusals(lambda c, d: written.append((c, d)), window_s=60, max_sources=3, clock=clock)
    assert book.refused("10.0.0.1", "no client certificate") is True
    for _ in range(999):
        assert book.refused("10.0.0.1", "no client certificate") is False
    assert [(c, d["count"]) for c, d in written] == [("10.0.0.1", 1)]
    assert book.flush() == 0  # the window is still open
    # A spray from many addresses: three get their own event, the rest one overflow event.
    for i in range(2, 500):
        book.refused(f"10.0.1.{i % 250}.{i}", "invalid client certificate: certificate has expired")
    assert len(written) == 3  # 10.0.0.1 and two more sources; everything else is counted, not written
    clock.t += 61
    assert book.flush() == 2  # 10.0.0.1's 999 more, and the overflow bucket
    summary = {c: d for c, d in written[3:]}
    assert summary["10.0.0.1"]["count"] == 999
    overflow = summary["*"]
    assert overflow["count"] == 498 - 2 and overflow["sources"] == 496 and len(overflow["sample"]) == 10
    # A new window: the same source is written at once again.
    book.refused("10.0.0.1", "no client certificate")
    assert written[-1] == (written[0][0], written[-1][1]) and written[-1][1]["count"] == 1
    assert len(written) == 6
