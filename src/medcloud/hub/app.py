"""The hub's app factory: settings in, FastAPI app out. Routers are thin; security is a dependency."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import medcloud
from medcloud.config import Settings, load_settings
from medcloud.errors import RequestTimeout, TooLarge
from medcloud.hub import openapi as openapi_doc
from medcloud.hub import problems
from medcloud.hub.deps import DATA_PATH_PREFIXES, authenticated
from medcloud.hub.state import HubState
from medcloud.hub.viewer import PREFIX as VIEWER_PREFIX
from medcloud.hub.viewer import mount_viewer
from medcloud.security.policy import Principal

log = logging.getLogger(__name__)
# JSON bodies the API takes are small (a token request, a site's targets, a round record).
MAX_JSON_BODY_BYTES = 1024 * 1024
# Router modules under medcloud.hub.routes, each exposing `router`. Starlette tries routes in order,
# one path regex each, and no two routers share a path: the hottest (DICOMweb: viewers' many small
# requests) come first, so that a QIDO or metadata request does not test ~40 REST routes first.
ROUTERS: tuple[str, ...] = (
    "dicomweb",
    "ingest",
    "catalog",
    "sites",
    "tokens",
    "audit",
    "inference",
    "models",
    "datasets",
    "reports",
    "dicomweb_render",
    "results",
    "slides",
    "jobs",
    "fl_public",
    "auth",
    "webauthn",
    "admin",
)

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "media-src 'self' blob: mediastream:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
# The viewer pages (medcloud.hub.viewer) compile the DICOM decoders' WebAssembly; workers are same-origin files.
VIEWER_CSP = CSP.replace("script-src 'self'", "script-src 'self' 'wasm-unsafe-eval'") + "; worker-src 'self'"
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(self), microphone=(), geolocation=()"),
]


class SecurityHeaders:
    """Adds CSP and friends to every response; API answers are never cached."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        is_api = path.startswith(DATA_PATH_PREFIXES)
        csp = VIEWER_CSP if path.startswith(VIEWER_PREFIX + "/") else CSP

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"content-security-policy", csp.encode()))
                headers.extend(SECURITY_HEADERS)
                if is_api:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


if sys.version_info >= (3, 11):

    async def _within(seconds: float, awaitable: Awaitable[Message]) -> Message:
        # asyncio.timeout arms one timer; wait_for would wrap each body chunk in a new task.
        async with asyncio.timeout(seconds):
            return await awaitable

else:  # pragma: no cover - Python 3.10

    async def _within(seconds: float, awaitable: Awaitable[Message]) -> Message:
        return await asyncio.wait_for(awaitable, seconds)


class BodyLimits:
    """Bounds how a request body may arrive: each piece within `timeout_s`, a JSON body within 1 MiB.

    JSON bodies are those of `json_routes` (routes that take a model), whatever their Content-Type.

    A client that announces more body than it sends would otherwise hold its worker's connection for
    ever; a JSON body is read whole before the route runs, so its size is bounded before it is read.
    Both raise errors the app answers as problem details (408, 413), audited like any refusal.
    """

    def __init__(self, app: ASGIApp, timeout_s: float, json_routes: Sequence[APIRoute] = ()) -> None:
        self.app = app
        self.timeout_s = timeout_s
        # FastAPI reads the whole body of a route that takes a model, whatever its Content-Type.
        # Per method, each route's literal path up to its first parameter, then its pattern: an upload
        # (a POST no JSON route's literal prefix matches) is told apart without running a pattern.
        self.json_routes: dict[str, list[tuple[str, re.Pattern[str]]]] = {}
        for r in json_routes:
            for method in r.methods or set():
                self.json_routes.setdefault(method, []).append((r.path.split("{", 1)[0], r.path_regex))

    def _takes_json(self, scope: Scope) -> bool:
        path = scope.get("path", "")
        routes = self.json_routes.get(scope.get("method", ""), ())
        return any(path.startswith(prefix) and regex.match(path) for prefix, regex in routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        json_limit = MAX_JSON_BODY_BYTES if self._takes_json(scope) else None
        body_done = False
        received = 0

        async def limited_receive() -> Message:
            nonlocal body_done, received
            if body_done:  # after the body only a disconnect can come, and may take as long as it likes
                return await receive()
            try:
                message = await _within(self.timeout_s, receive())
            except asyncio.TimeoutError:
                body_done = True
                raise RequestTimeout(f"no part of the request body arrived for {self.timeout_s:g} s") from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            received += len(message.get("body", b""))
            if json_limit is not None and received > json_limit:
                body_done = True
                raise TooLarge(f"a JSON body is at most {json_limit} bytes")
            return message

        await self.app(scope, limited_receive, send)


async def _checkpoint_loop(state: HubState) -> None:
    """Sign an audit checkpoint every `audit_checkpoint_every` events, or when events came and the last
    checkpoint is `audit_checkpoint_seconds` old (docs/security.md, "Verifiable audit log")."""
    from starlette.concurrency import run_in_threadpool

    s = state.settings
    max_age = s.audit_checkpoint_seconds or float("inf")
    audit = state.catalog.audit
    if audit.log_key is None:
        return
    while True:
        await asyncio.sleep(s.audit_checkpoint_poll_seconds)
        try:
            await run_in_threadpool(audit.maybe_checkpoint, s.audit_checkpoint_every, max_age)
        except Exception:  # a failed checkpoint is retried at the next poll; it must not stop the hub
            log.exception("could not sign an audit checkpoint")


def web_dir() -> Path:
    return Path(str(resources.files("medcloud") / "web"))


# A path no route matches: trying it walks every route of every included router.
_NO_ROUTE_SCOPE: dict[str, Any] = {
    "type": "http",
    "path": "/\x00warm-up",
    "raw_path": b"/%00warm-up",
    "method": "GET",
    "root_path": "",
    "headers": [],
    "query_string": b"",
}


def warm_routes(app: FastAPI) -> None:
    """Build the routing tables of the included routers before the first request.

    FastAPI (0.13x) builds each included router's table of effective routes lazily, on the first request
    that reaches it: about 60 ms per worker process on the 2-core machine, paid by whichever request came
    first (in a benchmark, inside the timed window). Matching a path that no route matches, once at
    start-up, builds all of them; nothing is served and nothing is changed but those caches.
    """
    for route in app.router.routes:
        route.matches(dict(_NO_ROUTE_SCOPE))


def create_app(settings: Settings | None = None, *, state: HubState | None = None) -> FastAPI:
    """Build the hub. The catalog is migrated and opened at start-up (or `state` is used as given)."""
    settings = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = False
        if getattr(app.state, "hub", None) is None:
            app.state.hub = HubState.open(settings)
            owned = True
        warm_routes(app)
        checkpoints = asyncio.create_task(_checkpoint_loop(app.state.hub))
        try:
            yield
        finally:
            checkpoints.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await checkpoints
            if owned:
                await app.state.hub.catalog.db.aclose()  # this loop's PostgreSQL read connections
                app.state.hub.close()
                app.state.hub = None

    app = FastAPI(
        title="medcloud hub",
        version=medcloud.__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.hub = state
    problems.install(app)
    json_routes: list[APIRoute] = []
    plain: list[BaseRoute] = []
    for name in ROUTERS:
        module = importlib.import_module(f"medcloud.hub.routes.{name}")
        app.include_router(module.router)
        json_routes += [r for r in module.router.routes if isinstance(r, APIRoute) and r.dependant.body_params]
        plain += getattr(module, "PLAIN_ROUTES", [])
    # Plain Starlette endpoints that stand in for documented routes on the hot paths (DICOMweb reads and
    # STOW-RS): tried before everything else, they run the documented routes' own checks without FastAPI's
    # dependency solving and without the included routers' matching (routes.dicomweb).
    app.router.routes[0:0] = plain

    @app.get("/healthz", tags=["meta"], summary="Liveness (no token needed)")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "version": medcloud.__version__}

    @app.get("/api/v1/openapi.json", tags=["meta"], summary="The API description (token needed)")
    async def openapi(_: Principal = Depends(authenticated)) -> dict[str, Any]:
        return app.openapi()

    static = web_dir()
    if (static / "index.html").is_file():
        # The page's files hold no data; every API call the page makes carries the user's token.
        app.mount("/static", StaticFiles(directory=static), name="static")

        @app.get("/", include_in_schema=False)
        async def index() -> FileResponse:
            return FileResponse(static / "index.html", media_type="text/html")

        @app.get("/research", include_in_schema=False)
        async def research() -> FileResponse:
            # The researcher's page: progress, study browser, cohorts (its data comes from the API).
            return FileResponse(static / "research.html", media_type="text/html")
    else:

        @app.get("/", include_in_schema=False)
        async def root(request: Request) -> JSONResponse:
            return JSONResponse({"service": "medcloud hub", "health": "/healthz", "api": "/api/v1/openapi.json"})

    mount_viewer(app, static)
    openapi_doc.install(app)
    app.add_middleware(BodyLimits, timeout_s=settings.body_timeout_seconds, json_routes=json_routes)
    app.add_middleware(SecurityHeaders)
    return app
