"""The hub's app factory: settings in, FastAPI app out. Routers are thin; security is a dependency."""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import medcloud
from medcloud.config import Settings, load_settings
from medcloud.hub import problems
from medcloud.hub.deps import authenticate
from medcloud.hub.state import HubState
from medcloud.security.policy import Principal

# Router modules under medcloud.hub.routes, each exposing `router`.
ROUTERS: tuple[str, ...] = ("ingest", "catalog", "sites", "tokens", "audit", "inference", "models", "dicomweb")

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "media-src 'self' blob: mediastream:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
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
        is_api = str(scope.get("path", "")).startswith("/api/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.extend(SECURITY_HEADERS)
                if is_api:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def web_dir() -> Path:
    return Path(str(resources.files("medcloud") / "web"))


def create_app(settings: Settings | None = None, *, state: HubState | None = None) -> FastAPI:
    """Build the hub. The catalog is migrated and opened at start-up (or `state` is used as given)."""
    settings = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = False
        if getattr(app.state, "hub", None) is None:
            app.state.hub = HubState.open(settings)
            owned = True
        try:
            yield
        finally:
            if owned:
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
    for name in ROUTERS:
        module = importlib.import_module(f"medcloud.hub.routes.{name}")
        app.include_router(module.router)

    @app.get("/healthz", tags=["meta"], summary="Liveness (no token needed)")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "version": medcloud.__version__}

    @app.get("/api/v1/openapi.json", tags=["meta"], summary="The API description (token needed)")
    async def openapi(_: Principal = Depends(authenticate)) -> dict[str, Any]:
        return app.openapi()

    static = web_dir()
    if (static / "index.html").is_file():
        # The page's files hold no data; every API call the page makes carries the user's token.
        app.mount("/static", StaticFiles(directory=static), name="static")

        @app.get("/", include_in_schema=False)
        async def index() -> FileResponse:
            return FileResponse(static / "index.html", media_type="text/html")
    else:

        @app.get("/", include_in_schema=False)
        async def root(request: Request) -> JSONResponse:
            return JSONResponse({"service": "medcloud hub", "health": "/healthz", "api": "/api/v1/openapi.json"})

    app.add_middleware(SecurityHeaders)
    return app
