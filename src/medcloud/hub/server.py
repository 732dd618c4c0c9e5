"""How `medcloud hub serve` runs uvicorn: what a client may send before the app sees its request.

uvicorn's httptools protocol puts no bound on a request's line and headers nor on the time they take,
so a client could send a 128 MiB header (all of it read before the app can answer 401), or trickle one
for ever. `LimitedHttpToolsProtocol` refuses a head over `max_header_bytes` (431) or slower than
`header_timeout_seconds` (408) and closes the connection. Without httptools, uvicorn's h11 protocol
is used with the same byte limit (`h11_max_incomplete_event_size`). Forwarding headers are never read
by uvicorn (`proxy_headers=False`): the app reads one only when configured (`deps.client_address`).

With TLS (`tls_cert_file`), the same protocol reads the client certificate from the TLS transport once
per connection, refuses one the CRL (`tls_crl_file`, re-read when it changes) lists, and hands it to
the app in the ASGI TLS extension (`scope["extensions"]["tls"]`), which uvicorn itself does not fill.

The protocol also runs the TLS handshake itself (`loop.start_tls` on the accepted TCP connection, with
the context of `security.tls`) rather than letting the event loop do it: a handshake the loop runs fails
silently (asyncio and uvloop drop the error), while here each refusal (no client certificate, one from
another CA, expired or revoked, an old protocol, no allowed suite) reaches `security.handshakes`, which
records it in the audit trail, aggregated per source and minute.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import ssl
import threading
from asyncio.sslproto import SSLProtocol
from collections.abc import Callable
from typing import Any

from medcloud.config import Settings
from medcloud.errors import ConfigError
from medcloud.security.handshakes import ACTION, HandshakeRefusals, refusal_reason
from medcloud.security.tls import ServerTLS, revoked_serials, tls_extension

log = logging.getLogger("medcloud.hub")
HANDSHAKE_TIMEOUT_S = 30


class ServerContext:
    """The server's TLS context, built once per server (per process) on first use, as uvicorn built it at
    start: certificates and the CRL are loaded then. Pickles (for worker processes) without the context."""

    def __init__(self, tls: ServerTLS) -> None:
        self.tls = tls
        self._ctx: ssl.SSLContext | None = None
        self._guard = threading.Lock()

    def get(self) -> ssl.SSLContext:
        with self._guard:
            if self._ctx is None:
                self._ctx = self.tls(None, None)
            return self._ctx

    def __getstate__(self) -> dict[str, Any]:
        return {"tls": self.tls}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["tls"])  # type: ignore[misc]


def _refusal_book(app: Any, loop: asyncio.AbstractEventLoop) -> HandshakeRefusals | None:
    """The app's book of refused handshakes (made on first use), writing to its hub's audit trail."""
    for _ in range(8):  # through uvicorn's wrapping middlewares, if any, to the hub's app
        state = getattr(app, "state", None)
        hub = getattr(state, "hub", None) if state is not None else None
        if hub is not None:
            break
        app = getattr(app, "app", None)
        if app is None:
            return None
    else:
        return None
    book: HandshakeRefusals | None = getattr(state, "tls_refusals", None)
    if book is None:
        catalog = hub.catalog

        def write(client: str, detail: dict[str, Any]) -> None:
            try:
                catalog.audit.record(
                    subject="anonymous", action=ACTION, resource="tls/handshake", outcome="refused:handshake",
                    client=client[:200], detail=detail,
                )  # fmt: skip
            except Exception:  # never let the audit of a refusal take the server down
                log.exception("could not audit a refused TLS handshake from %s", client)

        def record(client: str, detail: dict[str, Any]) -> None:
            loop.run_in_executor(None, write, client, detail)  # the event loop never waits on the catalog

        book = HandshakeRefusals(record)
        assert state is not None
        state.tls_refusals = book
    return book


_REASONS = {403: "Forbidden", 408: "Request Timeout", 431: "Request Header Fields Too Large"}
_SLUGS = {403: "forbidden", 408: "request-timeout", 431: "header-too-large"}


def _refusal(status: int, detail: str) -> bytes:
    """A whole HTTP response with problem details, for a request the app never saw."""
    body = json.dumps(
        {
            "type": f"https://medcloud.invalid/problems/{_SLUGS[status]}",
            "title": _REASONS[status],
            "status": status,
            "detail": detail,
        }
    ).encode()
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\ncontent-type: application/problem+json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - httptools is optional for uvicorn; h11 takes over
    HttpToolsProtocol = None  # type: ignore[assignment,misc]


_JOIN_BELOW = 64 * 1024  # a first body chunk up to this size is copied after the head; a larger one is not


class OneWriteResponse:
    """One request's view of its connection that sends the response's head with the first body bytes.

    uvicorn writes a response's status line and headers, then its body: two writes, two `send` calls, and
    the client woken twice, for an answer that is ready at once (a search, a STOW-RS response). Here the
    head is held until the first body write and goes out with it (one write; joined when that first chunk
    is small, else as a `writelines` pair). Writes before the response starts (`100 Continue`) pass at once;
    a head still held when the response ends (HEAD: no body is written) or the connection closes goes out
    then. Everything else is the transport's.
    """

    __slots__ = ("_cycle", "_head", "_passed", "_transport")

    def __init__(self, transport: asyncio.Transport, cycle: Any) -> None:
        self._transport = transport
        self._cycle = cycle
        self._head: bytes | None = None
        self._passed = False  # the head went out

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._passed or not self._cycle.response_started:
            self._transport.write(data)
        elif self._head is None:  # the head: held for the body
            self._head = bytes(data)
        else:
            head, self._head, self._passed = self._head, None, True
            if len(data) <= _JOIN_BELOW:
                self._transport.write(head + bytes(data))
            else:
                self._transport.writelines([head, data])

    def _flush(self) -> None:
        if self._head is not None:
            head, self._head, self._passed = self._head, None, True
            self._transport.write(head)

    def finished(self, then: Callable[[], None]) -> None:
        """The cycle's end-of-response callback: a head still held (an answer to HEAD has no body write) goes
        out, then `then` (uvicorn's own callback) runs."""
        self._flush()
        then()

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


if HttpToolsProtocol is not None:

    class LimitedHttpToolsProtocol(HttpToolsProtocol):  # type: ignore[misc]
        """uvicorn's httptools protocol with a bound on the bytes and the time of each request's head."""

        def __init__(
            self,
            *args: Any,
            max_head_bytes: int,
            head_timeout_s: float,
            crl_file: str | None = None,
            tls: ServerContext | None = None,
            **kwargs: Any,
        ) -> None:
            super().__init__(*args, **kwargs)
            self._server_tls = tls
            self._established = tls is None  # the TLS handshake is done (or this connection has none)
            self._early: list[bytes] = []  # bytes that arrived in the handshake's last read
            self._early_eof = False
            self._crl_file = crl_file
            self._tls: dict[str, Any] | None = None
            self._cert_refusal: str | None = None
            self._max_head_bytes = max_head_bytes
            self._head_timeout_s = head_timeout_s
            self._in_head = True  # between requests and while a head arrives
            self._head_ended = False  # the head being received ended inside the current chunk
            self._head_bytes = 0
            self._head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            if self._server_tls is not None and transport.get_extra_info("sslcontext") is None:
                self._start_tls(transport, self._server_tls)
                return
            self._connect(transport)

        def _connect(self, transport: asyncio.Transport) -> None:
            super().connection_made(transport)
            self._tls = tls_extension(transport)
            peer = self._tls["medcloud"]["peer"] if self._tls else None
            if peer is not None and self._crl_file and peer.serial in revoked_serials(self._crl_file):
                self._cert_refusal = f"client certificate {peer.serial} ({peer.common_name}) is revoked"
                self._report_refusal(transport, f"revoked client certificate (CRL): serial {peer.serial}")
            self._arm_head_timer()  # a connection that never sends a byte is closed too

        def _start_tls(self, raw: asyncio.Transport, tls: ServerContext) -> None:
            """Put a TLS layer between the TCP transport and this protocol now, as `loop.start_tls` does, but
            synchronously: the loop (uvloop) starts reading as soon as `connection_made` returns, and the
            first bytes (the ClientHello) must reach the TLS layer, not the HTTP parser."""
            waiter = self.loop.create_future()
            layer = SSLProtocol(
                self.loop, self, tls.get(), waiter, server_side=True, call_connection_made=False,
                ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S,
            )  # fmt: skip
            raw.set_protocol(layer)
            layer.connection_made(raw)
            self.loop.create_task(self._handshake_done(raw, layer, waiter))

        async def _handshake_done(self, raw: asyncio.Transport, layer: Any, waiter: asyncio.Future[None]) -> None:
            try:
                await waiter
            except Exception as exc:  # a refused or abandoned handshake
                if not raw.is_closing():
                    raw.close()
                reason = refusal_reason(exc)
                if reason is not None:
                    self._report_refusal(raw, reason)
                return
            secured = layer._app_transport  # what loop.start_tls returns
            if secured is None or secured.is_closing():
                return
            self._established = True
            self._connect(secured)
            early, self._early = self._early, []
            for chunk in early:
                self.data_received(chunk)
            if self._early_eof:
                self.eof_received()

        def _report_refusal(self, transport: asyncio.BaseTransport, reason: str) -> None:
            peer = transport.get_extra_info("peername")
            source = str(peer[0]) if isinstance(peer, (tuple, list)) and peer else "unknown"
            log.warning("TLS refused %s: %s", source, reason)
            book = _refusal_book(self.app, self.loop)
            if book is not None and book.refused(source, reason):
                self.loop.call_later(book.window_s + 0.05, book.flush)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._tls is not None:
                self.scope["extensions"] = {"tls": self._tls}  # type: ignore[dict-item]

        def connection_lost(self, exc: Exception | None) -> None:
            if not self._established:  # the handshake failed or was abandoned: uvicorn never saw it
                self._early.clear()
                return
            self._disarm_head_timer()
            super().connection_lost(exc)

        def eof_received(self) -> None:
            if not self._established:
                self._early_eof = True
                return
            super().eof_received()

        def data_received(self, data: bytes) -> None:
            if not self._established:
                self._early.append(data)
                return
            if self._cert_refusal is not None:
                self._refuse(403, self._cert_refusal)
                return
            in_head = self._in_head
            if in_head and self._head_timer is None:
                self._arm_head_timer()
            self._head_ended = False
            super().data_received(data)
            # Only a chunk that began in a head which is still not over is all head. A chunk in which
            # a head ended, or which began in a body, is not counted: its head part is under one read.
            if in_head and not self._head_ended and not self.transport.is_closing():
                self._head_bytes += len(data)
                if self._head_bytes > self._max_head_bytes:
                    self._refuse(431, f"request line and headers exceed {self._max_head_bytes} bytes")

        def on_headers_complete(self) -> None:
            self._in_head = False
            self._head_ended = True
            self._disarm_head_timer()
            super().on_headers_complete()
            # The cycle was made just now and its task has not run yet (nor, if pipelined, been started).
            one_write = OneWriteResponse(self.transport, self.cycle)
            self.cycle.transport = one_write  # type: ignore[assignment]  # the transport, as the cycle uses it
            self.cycle.on_response = functools.partial(one_write.finished, self.cycle.on_response)

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._in_head = True
            self._head_bytes = 0

        def _arm_head_timer(self) -> None:
            self._disarm_head_timer()
            self._head_timer = self.loop.call_later(self._head_timeout_s, self._head_timed_out)

        def _disarm_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if not self._in_head:
                return
            if self.cycle is not None and not self.cycle.response_complete:
                self._arm_head_timer()  # still answering the request before: its time is not the head's
            elif self._head_bytes:
                self._refuse(408, f"request headers did not arrive within {self._head_timeout_s:g} s")
            else:
                self.transport.close()  # silent: nothing to answer

        def _refuse(self, status: int, detail: str) -> None:
            self._disarm_head_timer()
            if self.transport.is_closing():
                return
            if self.cycle is not None and not self.cycle.response_complete:
                self.transport.close()  # an answer is being written: a second one would garble it
                return
            log.warning("refused a request from %s before the app saw it: %s", self.client, detail)
            self.transport.write(_refusal(status, detail))
            self.transport.close()


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """uvicorn.run keyword arguments that bound a request's head, never trust forwarding headers, send no
    `server` header, and serve TLS (mutual when `tls_client_ca_file` is set) with the hardened context of
    `security.tls`."""
    tls = ServerTLS.from_settings(settings)
    options: dict[str, Any] = {
        "proxy_headers": False,
        "h11_max_incomplete_event_size": settings.max_header_bytes,
        "server_header": False,  # no "server: uvicorn": the hub does not name its software to every caller
    }
    if HttpToolsProtocol is not None:
        # A partial of an importable class pickles, so it reaches every worker process.
        options["http"] = functools.partial(
            LimitedHttpToolsProtocol,
            max_head_bytes=settings.max_header_bytes,
            head_timeout_s=settings.header_timeout_seconds,
            crl_file=str(settings.tls_crl_file) if settings.tls_crl_file else None,
            tls=ServerContext(tls) if tls is not None else None,  # the protocol runs the handshake (audited)
        )
    else:  # pragma: no cover
        if tls is not None and tls.client_ca_file:
            raise ConfigError("mutual TLS needs uvicorn's httptools protocol (pip install httptools)")
        options["http"] = "h11"
        if tls is not None:
            options["ssl_context_factory"] = tls
    return options
