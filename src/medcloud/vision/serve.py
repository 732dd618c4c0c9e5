"""`medcloud serve-model`: the smallest process that answers inference, for scale-to-zero platforms.

Standard-library HTTP server + numpy + Pillow + onnxruntime; no torch, no FastAPI, no SQLAlchemy, so a
fresh process answers its first request quickly. One bearer token authorises callers: the process knows
only its SHA-256 (from `--token-file` or `MEDCLOUD_SERVE_TOKEN_SHA256`) and compares in constant time.
It answers the same inference JSON as the hub's `POST /api/v1/inference`; it keeps no image and writes
no audit trail of its own (one log line per request on stderr, without image data).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import sys
import threading
import time
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from medcloud.errors import ConfigError, InvalidInput, MedcloudError, TooLarge, Unauthenticated
from medcloud.vision.registry import ModelVersion
from medcloud.vision.runtime import Prediction, decode_image
from medcloud.vision.service import parse_threshold

TOKEN_ENV = "MEDCLOUD_SERVE_TOKEN_SHA256"  # noqa: S105 - the name of a variable, not a secret
MAX_BODY = 25 * 1024 * 1024


class Predictor(Protocol):
    def predict(self, image: Any, score_threshold: float = ...) -> Prediction: ...


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


def make_handler(model: Predictor, version: ModelVersion, expected_sha256: str) -> type[BaseHTTPRequestHandler]:
    expected = expected_sha256.encode()

    class Handler(BaseHTTPRequestHandler):
        server_version = "medcloud-serve-model"
        sys_version = ""
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            sys.stderr.write(f"serve-model {self.address_string()} {format % args}\n")

        def _send(self, status: int, body: dict[str, Any], content_type: str = "application/json") -> None:
            data = json.dumps(body, ensure_ascii=False).encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            if status == 401:
                self.send_header("WWW-Authenticate", 'Bearer realm="medcloud"')
            self.end_headers()
            self.wfile.write(data)

        def _problem(self, exc: MedcloudError) -> None:
            self._send(
                exc.status,
                {
                    "type": f"https://medcloud.dev/problems/{exc.type_slug}",
                    "title": exc.title,
                    "status": exc.status,
                    "detail": exc.detail,
                    "instance": urlsplit(self.path).path,
                },
                "application/problem+json",
            )

        def _authenticate(self) -> None:
            scheme, _, token = self.headers.get("Authorization", "").partition(" ")
            presented = hashlib.sha256(token.strip().encode()).hexdigest().encode()
            # Always hash and compare, so timing says nothing about how close a guess was.
            ok = hmac.compare_digest(presented, expected)
            if scheme.lower() != "bearer" or not token or not ok:
                raise Unauthenticated("missing or wrong bearer token")

        def _read_body(self) -> bytes:
            length = self.headers.get("Content-Length")
            if length is None or not length.isdigit():
                raise InvalidInput("send the image with a Content-Length")
            n = int(length)
            if n > MAX_BODY:
                raise TooLarge(f"body of {n} bytes exceeds {MAX_BODY}")
            return self.rfile.read(n)

        def do_GET(self) -> None:
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
                self._send(404, {"title": "Not found", "status": 404, "detail": path})
            except MedcloudError as exc:
                self._problem(exc)

        def do_POST(self) -> None:
            parts = urlsplit(self.path)
            try:
                self._authenticate()
                if parts.path != "/api/v1/inference":
                    self._send(404, {"title": "Not found", "status": 404, "detail": parts.path})
                    return
                body = self._read_body()
                ctype = self.headers.get("Content-Type", "")
                if ctype.startswith("multipart/form-data"):
                    body = _multipart_image(ctype, body)
                query = parse_qs(parts.query)
                threshold = parse_threshold(query.get("threshold", [None])[0])
                t0 = time.perf_counter()
                pred = model.predict(decode_image(body, MAX_BODY), score_threshold=threshold)
                out = pred.to_json(version.version)
                out["model"] = {
                    "name": version.name,
                    "version": version.version,
                    "sha256": version.card.get("sha256"),
                    "synthetic": True,
                }
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
    model_dir: Path | None, data_dir: Path | None, host: str, port: int, token_file: Path | None, threads: int = 2
) -> None:
    """Load the model (hash-checked) and serve until interrupted."""
    from medcloud.vision.service import find_model, loaded_model

    expected = token_sha256(token_file)
    version = find_model(data_dir, model_dir=model_dir)
    model = loaded_model(version, threads)
    server = build_server(model, version, expected, host, port)
    sys.stderr.write(
        f"serve-model {version.name}/{version.version} (SYNTHETIC) on http://{host}:{server.server_port}\n"
    )
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
