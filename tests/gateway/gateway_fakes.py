"""Stand-ins for gateway tests: a scriptable stand-in hub over real HTTP, and a stand-in de-identifier.

The stand-ins let the outbox, the forwarder and the intake be tested without the real hub and engine;
tests in test_end_to_end.py use the real `medcloud hub serve` and `medcloud.deid` instead.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from medcloud.errors import InvalidInput, UnsupportedFormat

TOKEN = "site-token-for-tests"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Reply:
    status: int
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)


class FakeHub:
    """Idempotent ingest endpoint like the hub's: stores by sha256, answers stored / duplicate / 409.

    `script` is consumed one reply per request before normal handling, to inject failures.
    """

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.stored: dict[str, bytes] = {}
        self.by_uid: dict[str, str] = {}
        self.requests: list[dict[str, Any]] = []
        self.script: list[Reply] = []
        self.batch_enabled = True
        self.batches: list[int] = []  # files per batch request received
        self.override: Callable[[bytes, dict[str, str]], Reply | None] | None = None
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeHub:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                reply = hub.handle(self.path, body, {k.lower(): v for k, v in self.headers.items()})
                payload = json.dumps(reply.body or {}).encode()
                self.send_response(reply.status)
                ctype = "application/json" if reply.status < 400 else "application/problem+json"
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(payload)))
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(payload)

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def handle(self, path: str, body: bytes, headers: dict[str, str]) -> Reply:
        with self.lock:
            self.requests.append({"path": path, "headers": headers, "size": len(body)})
            if self.script:
                return self.script.pop(0)
        if self.override is not None:
            r = self.override(body, headers)
            if r is not None:
                return r
        if path == "/api/v1/ingest/batch" and self.batch_enabled:
            return self._batch(body, headers)
        if path != "/api/v1/ingest":
            return Reply(404, {"title": "Not found", "status": 404})
        return self._one(body, headers)

    def _batch(self, body: bytes, headers: dict[str, str]) -> Reply:
        if headers.get("authorization") != f"Bearer {TOKEN}":
            return Reply(401, {"title": "Authentication required", "status": 401, "detail": "bad token"})
        ctype = headers.get("content-type", "")
        assert ctype.startswith("multipart/related"), ctype
        boundary = ctype.split("boundary=", 1)[1].strip('"').encode()
        chunks = body.split(b"--" + boundary)
        assert chunks[0] == b"" and chunks[-1] == b"--\r\n", "framing"
        items = []
        for index, chunk in enumerate(chunks[1:-1]):
            head, _, data = chunk[2:].partition(b"\r\n\r\n")
            assert data.endswith(b"\r\n")
            part_headers = dict(
                (k.strip().lower(), v.strip())
                for k, _, v in (line.partition(":") for line in head.decode("latin-1").split("\r\n"))
            )
            part_headers["authorization"] = headers.get("authorization", "")
            reply = self._one(data[:-2], part_headers)
            if reply.status < 300:
                items.append({"index": index, **(reply.body or {})})
            else:
                items.append({"index": index, "status": "failed", "problem": reply.body})
        self.batches.append(len(items))
        return Reply(200, {"items": items})

    def _one(self, body: bytes, headers: dict[str, str]) -> Reply:
        if headers.get("authorization") != f"Bearer {TOKEN}":
            return Reply(401, {"title": "Authentication required", "status": 401, "detail": "bad token"})
        sha = hashlib.sha256(body).hexdigest()
        if headers.get("x-content-sha256") != sha:
            return Reply(400, {"title": "Invalid input", "status": 400, "detail": "body does not match sha"})
        uid = headers.get("x-medcloud-filename", "")
        with self.lock:
            if uid in self.by_uid and self.by_uid[uid] != sha:
                return Reply(409, {"title": "Conflict", "status": 409, "detail": "same UID, other bytes"})
            if sha in self.stored:
                return Reply(200, {"status": "duplicate", "sha256": sha})
            self.stored[sha] = body
            self.by_uid[uid] = sha
        return Reply(201, {"status": "stored", "sha256": sha, "kind": "dicom"})


@dataclass
class FakeOutcome:
    data: bytes
    kind: str = "fake"  # not DICOM bytes: the hub-side DICOM check does not apply
    media_type: str = "application/dicom"
    quarantine_reason: str | None = None
    sop_instance_uid: str | None = None
    patient_pseudonym: str | None = None
    suggested_name: str = "file.dcm"


class FakeDeid:
    """Stand-in engine: `BAD` files are malformed, `TXT` files are not images, `BURN` files are quarantined."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def deidentify_bytes(self, data: bytes, filename: str) -> FakeOutcome:
        self.calls.append(filename)
        if data.startswith(b"BAD"):
            raise InvalidInput(f"{filename}: truncated DICOM")
        if data.startswith(b"TXT"):
            raise UnsupportedFormat(f"{filename}: neither DICOM nor a supported image")
        out = b"DEID:" + data
        reason = "BurnedInAnnotation is YES" if data.startswith(b"BURN") else None
        return FakeOutcome(data=out, quarantine_reason=reason, suggested_name=f"{Path(filename).stem}.dcm")
