"""A real `medcloud hub serve` on 127.0.0.1 (issue 10, items 7 and 9): limits that hold before the app runs."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from medcloud.config import load_settings
from medcloud.security.tokens import issue_token
from medcloud.store.catalog import Catalog
from tests.live_hub import free_port, hub_process

TIMEOUT_S = 1.0  # header and body timeouts the hub runs with here


@dataclass
class LiveHub:
    port: int
    tokens: dict[str, str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}


@pytest.fixture(scope="module")
def live_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveHub]:
    data = tmp_path_factory.mktemp("live") / "hub"
    data.mkdir()
    catalog = Catalog(load_settings(data_dir=data).resolved_database_url)
    catalog.migrate()
    tokens = {
        "site": issue_token(catalog, role="site", site="site-a", projects=["lung"]).token,
        "admin": issue_token(catalog, role="admin").token,
        "auditor": issue_token(catalog, role="auditor").token,
    }
    catalog.dispose()
    port = free_port()
    env = {"MEDCLOUD_BODY_TIMEOUT_SECONDS": str(TIMEOUT_S), "MEDCLOUD_HEADER_TIMEOUT_SECONDS": str(TIMEOUT_S)}
    with hub_process(data, env, port):
        yield LiveHub(port, tokens)


def _connect(hub: LiveHub, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", hub.port), timeout=timeout)
    return sock


def _read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (socket.timeout if it never does)."""
    got = b""
    while chunk := sock.recv(65536):
        got += chunk
    return got


def test_oversized_header_is_refused_without_reading_it(live_hub: LiveHub) -> None:
    """9: a 128 MiB header without a token was read for 26.6 s before a 401."""
    sock = _connect(live_hub)
    started = time.monotonic()
    sent = 0
    try:
        sock.sendall(b"GET /api/v1/studies HTTP/1.1\r\nHost: x\r\nX-Filler: ")
        while sent < 32 * 1024 * 1024:
            sock.sendall(b"a" * 65536)
            sent += 65536
    except (BrokenPipeError, ConnectionResetError):
        pass  # the hub closed the connection: what we want
    try:
        answer = _read_all(sock)
    except ConnectionResetError:
        answer = b""
    finally:
        sock.close()
    assert sent < 32 * 1024 * 1024, "the hub kept reading a 32 MiB header"
    assert time.monotonic() - started < 5
    if answer:  # a reset may swallow the answer; when it arrives it is a 431 problem
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
        assert b"application/problem+json" in answer


def test_header_limit_answers_431(live_hub: LiveHub) -> None:
    sock = _connect(live_hub)
    try:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Filler: " + b"a" * (100 * 1024))
        answer = _read_all(sock)
    finally:
        sock.close()
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    # Ordinary requests are untouched.
    assert httpx.get(f"{live_hub.url}/healthz", headers={"X-Filler": "a" * 8000}).status_code == 200


def test_body_shorter_than_its_content_length_gets_408(live_hub: LiveHub) -> None:
    """9: a request whose Content-Length exceeds its body was held open for ever."""
    sock = _connect(live_hub)
    started = time.monotonic()
    try:
        head = (
            "POST /api/v1/ingest HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {live_hub.tokens['site']}\r\nContent-Length: 1000\r\n\r\n"
        )
        sock.sendall(head.encode() + b"0123456789")
        answer = _read_all(sock)  # the hub answers, then closes the connection
    finally:
        sock.close()
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:300]
    assert b"request-timeout" in answer
    assert time.monotonic() - started < TIMEOUT_S + 4
    events = httpx.get(f"{live_hub.url}/api/v1/audit?action=ingest", headers=live_hub.auth("auditor")).json()["items"]
    assert events[-1]["outcome"] == "refused:408:request-timeout" and events[-1]["subject"].startswith("site@site-a:")


def test_slow_headers_get_408(live_hub: LiveHub) -> None:
    sock = _connect(live_hub)
    started = time.monotonic()
    try:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        answer = _read_all(sock)
    finally:
        sock.close()
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert time.monotonic() - started < TIMEOUT_S + 4


def test_uvicorn_does_not_take_forwarded_for_from_a_local_caller(live_hub: LiveHub) -> None:
    """7: uvicorn's defaults trusted X-Forwarded-For from 127.0.0.1, so any local caller chose its address."""
    r = httpx.put(
        f"{live_hub.url}/api/v1/sites/site-a",
        json={"target_cases": 7},
        headers={**live_hub.auth("admin"), "X-Forwarded-For": "6.6.6.6"},
    )
    assert r.status_code == 200
    events = httpx.get(f"{live_hub.url}/api/v1/audit?action=site.update", headers=live_hub.auth("auditor")).json()
    assert events["items"][-1]["client"] == "127.0.0.1"


def _read_response(sock: socket.socket) -> bytes:
    """One response (head and Content-Length body) from a kept-alive connection."""
    got = b""
    while b"\r\n\r\n" not in got:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {got[:200]!r}"
        got += chunk
    head, _, body = got.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head


def test_many_requests_with_bodies_share_one_connection(live_hub: LiveHub) -> None:
    """The head limit counts heads only: bodies on a kept-alive connection add nothing to it."""
    # 200 KB, refused as unsupported; sent with its head in one write, it reaches the hub in one read
    # that holds a whole request, far over the 64 KiB head limit.
    body = b"not an image, just text" * 9000
    head = (
        f"POST /api/v1/ingest HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {live_hub.tokens['site']}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    sock = _connect(live_hub)
    try:
        for _ in range(4):
            sock.sendall(head + body)
            assert _read_response(sock).startswith(b"HTTP/1.1 415 ")
    finally:
        sock.close()


def test_answers_do_not_name_the_server_software(live_hub: LiveHub) -> None:
    """No `server: uvicorn` (an attacker's first hint of which exploits to try); the security headers stay."""
    cases = [
        ("/healthz", None, 200),
        ("/dicom-web/studies", "site", 403),
        ("/dicom-web/studies", None, 401),
        ("/api/v1/audit?limit=1", "auditor", 200),
    ]
    for path, who, status in cases:
        r = httpx.get(live_hub.url + path, headers=live_hub.auth(who) if who else {}, timeout=10)
        assert r.status_code == status, r.text
        assert "server" not in r.headers, r.headers
        assert r.headers["x-content-type-options"] == "nosniff" and "content-security-policy" in r.headers


def test_a_response_head_goes_out_with_its_body_and_continue_is_not_held(live_hub: LiveHub) -> None:
    """`OneWriteResponse` on the live server: a small answer arrives as one segment (its head and body in
    one write); `100 Continue` is sent before the body is read, not held back; answers to HEAD, to a body
    on a kept-alive connection and to a refusal still arrive whole."""
    sock = _connect(live_hub)
    try:
        for _ in range(3):  # keep-alive: each answer whole, in one read
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            first = sock.recv(65536)
            head, _, body = first.partition(b"\r\n\r\n")
            length = int(next(v for k, _, v in (h.partition(b": ") for h in head.split(b"\r\n")[1:])
                              if k.lower() == b"content-length"))  # fmt: skip
            assert head.startswith(b"HTTP/1.1 200 ") and len(body) == length > 0, first
        sock.sendall(b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # a head and no body: not held back
        answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 405 ") and answer.endswith(b"\r\n\r\n"), answer  # not served
        body = b"not an image" * 100
        sock.sendall(
            f"POST /api/v1/ingest HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {live_hub.tokens['site']}\r\n"
            f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n".encode()
        )
        assert sock.recv(65536).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")  # before any body was sent
        sock.sendall(body)
        assert _read_response(sock).startswith(b"HTTP/1.1 415 ")
    finally:
        sock.close()


class _Transport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def writelines(self, parts: list[bytes]) -> None:
        self.writes.append(b"|".join(bytes(p) for p in parts))  # one call; "|" shows the parts

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


class _Cycle:
    response_started = False


def test_one_write_response_holds_only_the_head() -> None:
    from medcloud.hub.server import OneWriteResponse

    t, cycle = _Transport(), _Cycle()
    w = OneWriteResponse(t, cycle)  # type: ignore[arg-type]
    w.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # before the response starts: at once
    assert t.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    cycle.response_started = True
    w.write(b"HEAD\r\n\r\n")
    assert len(t.writes) == 1  # the head is held
    w.write(b"body-1")
    w.write(b"body-2")
    assert t.writes[1:] == [b"HEAD\r\n\r\nbody-1", b"body-2"]
    assert not w.is_closing()  # the rest is the transport's
    # A large first chunk is not copied: head and chunk go in one writelines call.
    t2, big = _Transport(), b"x" * (1024 * 1024)
    w2 = OneWriteResponse(t2, cycle)  # type: ignore[arg-type]
    w2.write(b"H")
    w2.write(big)
    assert t2.writes == [b"H|" + big]
    # A response that ends without a body write (HEAD): its head goes out when it ends, then uvicorn's callback.
    t4, ended = _Transport(), []
    w4 = OneWriteResponse(t4, cycle)  # type: ignore[arg-type]
    w4.write(b"H")
    w4.finished(lambda: ended.append(list(t4.writes)))
    assert ended == [[b"H"]]
    # A response closed after its head: the head still goes out first.
    t3 = _Transport()
    w3 = OneWriteResponse(t3, cycle)  # type: ignore[arg-type]
    w3.write(b"H")
    w3.close()
    assert t3.writes == [b"H"] and t3.closed
