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
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from typing import Any

from medcloud.config import Settings
from medcloud.errors import ConfigError
from medcloud.security.tls import ServerTLS, revoked_serials, tls_extension

log = logging.getLogger("medcloud.hub")
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


if HttpToolsProtocol is not None:

    class LimitedHttpToolsProtocol(HttpToolsProtocol):  # type: ignore[misc]
        """uvicorn's httptools protocol with a bound on the bytes and the time of each request's head."""

        def __init__(
            self, *args: Any, max_head_bytes: int, head_timeout_s: float, crl_file: str | None = None, **kwargs: Any
        ) -> None:
            super().__init__(*args, **kwargs)
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
            super().connection_made(transport)
            self._tls = tls_extension(transport)
            peer = self._tls["medcloud"]["peer"] if self._tls else None
            if peer is not None and self._crl_file and peer.serial in revoked_serials(self._crl_file):
                self._cert_refusal = f"client certificate {peer.serial} ({peer.common_name}) is revoked"
            self._arm_head_timer()  # a connection that never sends a byte is closed too

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._tls is not None:
                self.scope["extensions"] = {"tls": self._tls}  # type: ignore[dict-item]

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_head_timer()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
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
    """uvicorn.run keyword arguments that bound a request's head and never trust forwarding headers,
    and serve TLS (mutual when `tls_client_ca_file` is set) with the hardened context of `security.tls`."""
    tls = ServerTLS.from_settings(settings)
    options: dict[str, Any] = {
        "proxy_headers": False,
        "h11_max_incomplete_event_size": settings.max_header_bytes,
    }
    if HttpToolsProtocol is not None:
        # A partial of an importable class pickles, so it reaches every worker process.
        options["http"] = functools.partial(
            LimitedHttpToolsProtocol,
            max_head_bytes=settings.max_header_bytes,
            head_timeout_s=settings.header_timeout_seconds,
            crl_file=str(settings.tls_crl_file) if settings.tls_crl_file else None,
        )
    else:  # pragma: no cover
        if tls is not None and tls.client_ca_file:
            raise ConfigError("mutual TLS needs uvicorn's httptools protocol (pip install httptools)")
        options["http"] = "h11"
    if tls is not None:
        options["ssl_context_factory"] = tls
    return options
