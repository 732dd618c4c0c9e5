"""`medcloud serve-model`: the smallest process that answers inference, for scale-to-zero platforms.

Standard-library HTTP server + numpy + Pillow + onnxruntime; no torch, no FastAPI, no SQLAlchemy, so a
fresh process answers its first request quickly. One bearer token authorises callers: the process knows
only its SHA-256 (from `--token-file` or `MEDCLOUD_SERVE_TOKEN_SHA256`) and compares in constant time.
It answers the same inference JSON as the hub's `POST /api/v1/inference`; it keeps no image and writes
no audit trail of its own (one log line per request on stderr, without image data).

HTTP/1.1 keep-alive clients stay in step: a request refused before its body is read gets that body read
and discarded (up to `DRAIN_LIMIT`) or the answer says `Connection: close` and the connection is closed.
Uploads need a Content-Length (411 otherwise, chunked included). Every error, including those the
standard library's parser raises (`send_error`), is the hub's RFC 9457 problem+json shape.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import sys
import threading
import time
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from medcloud.errors import ConfigError, InvalidInput, MedcloudError, NotFound, TooLarge, Unauthenticated
from medcloud.vision.registry import ModelVersion
from medcloud.vision.runtime import Photo, decode_photo
from medcloud.vision.service import model_info, parse_threshold

TOKEN_ENV = "MEDCLOUD_SERVE_TOKEN_SHA256"  # noqa: S105 - the name of a variable, not a secret
MAX_BODY = 25 * 1024 * 1024
# A refused request's body up to this size is read and thrown away so the keep-alive connection stays
# usable; a larger (or unknown-length) one is not read: the answer says `Connection: close` and closes.
DRAIN_LIMIT = 1024 * 1024
DRAIN_TIMEOUT_S = 5.0
IDLE_TIMEOUT_S = 60.0  # a connection that sends nothing (or stops mid-body) for this long is closed
# The hub's problem type base (medcloud.hub.problems.PROBLEM_BASE), not imported: that module needs FastAPI.
PROBLEM_BASE = "https://medcloud.invalid/problems/"
_MODEL_PATH = re.compile(r"^/api/v1/models/([A-Za-z0-9._-]{1,64})/([A-Za-z0-9._-]{1,64})$")
_LENGTH = re.compile(r"[0-9]{1,15}")  # ASCII digits only: str.isdigit() also accepts "²", which int() refuses
_ROUTES = {"/healthz": "GET", "/api/v1/models": "GET", "/api/v1/inference": "POST"}
# Problem types for the errors the standard library's parser reports through `send_error`.
_SEND_ERROR_SLUGS = {
    400: "bad-request",
    404: "not-found",
    408: "request-timeout",
    414: "uri-too-long",
    431: "headers-too-large",
    501: "not-implemented",
    505: "http-version-not-supported",
}


class LengthRequired(InvalidInput):
    """A body without Content-Length (chunked, or none): serve-model reads only counted bodies."""

    status = 411
    type_slug = "length-required"
    title = "Length required"


class MethodNotAllowed(InvalidInput):
    status = 405
    type_slug = "method-not-allowed"
    title = "Method not allowed"


class Answer(Protocol):
    def to_json(self, model_version: str) -> dict[str, Any]: ...


class Predictor(Protocol):
    """The detector (`GramStainModel`) or a federated image classifier (`ImageClassifier`)."""

    @property
    def decode_side(self) -> int: ...

    def predict_photo(self, photo: Photo, score_threshold: float = ...) -> Answer: ...


def token_sha256(token_file: Path | None) -> str:
    """The expected token hash: a token file (the token itself, or `sha256:<hex>`) or the env variable."""
    if token_file is not None:
        text = token_file.read_text(encoding="utf-8").strip()
        if text.startswith("sha256:"):
            digest = text.removeprefix("sha256:").strip().lower()
        else:
            digest = hashlib.sha256(text.encode()).hexdigest()
    else:
        digest = os.environ.get(TOKEN_ENV, "").strip().lower()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ConfigError(f"serve-model needs --token-file or {TOKEN_ENV}=<64 hex digits of SHA-256(token)>")
    return digest


def _multipart_image(content_type: str, body: bytes) -> bytes:
    msg = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
    for part in msg.iter_parts():
        if part.get_param("name", header="content-disposition") in ("image", "file"):
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                return payload
    raise InvalidInput("multipart body has no 'image' (or 'file') part")


def problem_body(status: int, slug: str, title: str, detail: str, instance: str) -> dict[str, Any]:
    """RFC 9457 problem details, the same shape as the hub's."""
    return {"type": PROBLEM_BASE + slug, "title": title, "status": status, "detail": detail, "instance": instance}


def make_handler(model: Predictor, version: ModelVersion, expected_sha256: str) -> type[BaseHTTPRequestHandler]:
    expected = expected_sha256.encode()

    class Handler(BaseHTTPRequestHandler):
        server_version = "medcloud-serve-model"
        sys_version = ""
        protocol_version = "HTTP/1.1"
        timeout = IDLE_TIMEOUT_S
        _body_settled = True  # set False when a request starts; True once its body is read or dealt with

        def log_message(self, format: str, *args: Any) -> None:
            sys.stderr.write(f"serve-model {self.address_string()} {format % args}\n")

        def _instance(self) -> str:
            return urlsplit(getattr(self, "path", "") or "").path

        def _send(self, status: int, body: dict[str, Any], content_type: str = "application/json") -> None:
            if not self._body_settled:
                self._settle_body()
            data = json.dumps(body, ensure_ascii=False).encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            if status == 401:
                self.send_header("WWW-Authenticate", 'Bearer realm="medcloud"')
            if status == 405:
                self.send_header("Allow", _ROUTES.get(self._instance(), "GET"))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def _problem(self, exc: MedcloudError) -> None:
            body = problem_body(exc.status, exc.type_slug, exc.title, exc.detail, self._instance())
            self._send(exc.status, body, "application/problem+json")

        def _settle_body(self) -> None:
            """Before answering a request whose body was not read: drain a small one, else close."""
            self._body_settled = True
            length = self.headers.get("Content-Length")
            if self.headers.get("Transfer-Encoding") is not None or (
                length is not None and not _LENGTH.fullmatch(length)
            ):
                self.close_connection = True  # where the body ends is unknown
                return
            n = int(length) if length is not None else 0
            if n == 0:
                return
            if n > DRAIN_LIMIT:
                self.close_connection = True
                return
            try:
                self.connection.settimeout(DRAIN_TIMEOUT_S)
                left = n
                while left > 0:
                    chunk = self.rfile.read(min(left, 65536))
                    if not chunk:
                        break
                    left -= len(chunk)
                self.connection.settimeout(self.timeout)
                if left:
                    self.close_connection = True
            except OSError:
                self.close_connection = True

        def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
            """Errors the standard library raises itself (malformed request line, headers, method): problem+json."""
            try:
                short, _long = self.responses[code]
            except KeyError:
                short = "Error"
            if getattr(self, "request_version", "HTTP/0.9") == "HTTP/0.9":
                self.request_version = "HTTP/1.0"  # unparsed request: still answer with a status line
            self.log_error("code %d, message %s", code, message)
            self.close_connection = True
            self._body_settled = True
            # `path` is only this request's once its line parsed (`command` set); else it may be the last one's.
            instance = self._instance() if self.command else ""
            body = problem_body(code, _SEND_ERROR_SLUGS.get(code, "http-error"), short, message or short, instance)
            data = json.dumps(body, ensure_ascii=False).encode()
            self.send_response(code, short)
            self.send_header("Content-Type", "application/problem+json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD" and code >= 200 and code not in (204, 304):
                self.wfile.write(data)

        def _authenticate(self) -> None:
            scheme, _, token = self.headers.get("Authorization", "").partition(" ")
            presented = hashlib.sha256(token.strip().encode()).hexdigest().encode()
            # Always hash and compare, so timing says nothing about how close a guess was.
            ok = hmac.compare_digest(presented, expected)
            if scheme.lower() != "bearer" or not token or not ok:
                raise Unauthenticated("missing or wrong bearer token")

        def _check_post(self, path: str) -> int:
            """Everything a POST is refused for before its body is read; returns the announced length."""
            self._authenticate()
            if path != "/api/v1/inference":
                if path in _ROUTES:
                    raise MethodNotAllowed(f"{path} answers {_ROUTES[path]} only")
                raise NotFound(f"no route {path}")
            length = self.headers.get("Content-Length")
            if self.headers.get("Transfer-Encoding") is not None:
                raise LengthRequired("chunked uploads are not accepted: send the image with a Content-Length")
            if length is None:
                raise LengthRequired("send the image with a Content-Length header")
            if not _LENGTH.fullmatch(length):
                raise InvalidInput(f"Content-Length must be a number of bytes, not {length[:40]!r}")
            n = int(length)
            if n > MAX_BODY:
                raise TooLarge(f"body of {n} bytes exceeds {MAX_BODY}")
            return n

        def _read_body(self, n: int) -> bytes:
            data = self.rfile.read(n)
            self._body_settled = True
            if len(data) != n:
                self.close_connection = True
                raise InvalidInput(f"the body ended after {len(data)} of the {n} bytes announced")
            return data

        def handle_expect_100(self) -> bool:
            # Refuse before the client sends the body it is holding back; accept only a POST we would read.
            self._body_settled = False
            if self.command == "POST":
                try:
                    self._check_post(urlsplit(self.path).path)
                except MedcloudError as exc:
                    self.close_connection = True  # the client may send the body anyway
                    self._body_settled = True
                    self._problem(exc)
                    return False
            return super().handle_expect_100()

        def do_GET(self) -> None:
            self._body_settled = False
            path = urlsplit(self.path).path
            try:
                if path == "/healthz":
                    # Reported so tests and operators can see the process stayed torch-free.
                    self._send(
                        200, {"status": "ok", "model": version.version, "torch_imported": "torch" in sys.modules}
                    )
                    return
                self._authenticate()
                if path == "/api/v1/models":
                    self._send(200, {"models": [version.summary()]})
                    return
                if (m := _MODEL_PATH.match(path)) is not None:
                    if (m.group(1), m.group(2)) != (version.name, version.version):
                        raise NotFound(
                            f"model {m.group(1)}/{m.group(2)} is not served here "
                            f"(this process serves {version.name}/{version.version})"
                        )
                    self._send(200, version.summary() | version.card)
                    return
                if path == "/api/v1/inference":
                    raise MethodNotAllowed("/api/v1/inference answers POST only")
                raise NotFound(f"no route {path}")
            except MedcloudError as exc:
                self._problem(exc)

        def do_POST(self) -> None:
            self._body_settled = False
            parts = urlsplit(self.path)
            try:
                n = self._check_post(parts.path)
                body = self._read_body(n)
                ctype = self.headers.get("Content-Type", "")
                if ctype.startswith("multipart/form-data"):
                    body = _multipart_image(ctype, body)
                query = parse_qs(parts.query)
                threshold = parse_threshold(query.get("threshold", [None])[0])
                t0 = time.perf_counter()
                photo = decode_photo(body, MAX_BODY, least_side=model.decode_side)
                pred = model.predict_photo(photo, score_threshold=threshold)
                out = pred.to_json(version.version)
                out["model"] = model_info(version)
                out["kept"] = False
                out["server_ms"] = round((time.perf_counter() - t0) * 1000, 2)
                self._send(200, out)
            except MedcloudError as exc:
                self._problem(exc)

    return Handler


def build_server(
    model: Predictor, version: ModelVersion, expected_sha256: str, host: str, port: int
) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((host, port), make_handler(model, version, expected_sha256))
    server.daemon_threads = True
    return server


def run(
    model_dir: Path | None,
    data_dir: Path | None,
    host: str,
    port: int,
    token_file: Path | None,
    threads: int = 2,
    name: str = "gram-stain",
    version: str | None = None,
) -> None:
    """Load the model (hash-checked) and serve until interrupted."""
    from medcloud.vision.service import find_model, loaded_model

    expected = token_sha256(token_file)
    found = find_model(data_dir, name, version, model_dir=model_dir)
    server = build_server(loaded_model(found, threads), found, expected, host, port)
    sys.stderr.write(f"serve-model {found.name}/{found.version} (SYNTHETIC) on http://{host}:{server.server_port}\n")
    sys.stderr.flush()
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def serve_in_thread(server: ThreadingHTTPServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    return thread
