"""The viewer pages at /viewer/: a DICOM stack viewer (cornerstone3D) and a whole-slide viewer (OpenSeadragon).

Their files are built from frontend/ into medcloud/web/viewer/ (`npm ci && npm run build`, run by `make`);
they hold no data: every request the pages make to /dicom-web and /api carries the user's bearer token.
Under /viewer/ the CSP also allows WebAssembly compilation ('wasm-unsafe-eval', for the DICOM image
loader's JPEG / JPEG-LS / JPEG 2000 / HTJ2K decoders); no inline script or style anywhere.
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import Headers
from starlette.responses import FileResponse, Response
from starlette.types import Scope

from medcloud.errors import NotFound

PREFIX = "/viewer"
# Sibling files the build writes beside each large asset, best first: (suffix, Content-Encoding).
ENCODINGS = ((".br", "br"), (".gz", "gzip"))


def _accepted(accept_encoding: str) -> set[str]:
    """Codings the client accepts (q=0 excluded), from an Accept-Encoding header."""
    accepted: set[str] = set()
    for part in accept_encoding.split(","):
        coding, _, params = part.strip().partition(";")
        q = params.strip().removeprefix("q=").strip() if params.strip().startswith("q=") else "1"
        try:
            if float(q) > 0:
                accepted.add(coding.strip().lower())
        except ValueError:
            continue
    return accepted


class PrecompressedStaticFiles(StaticFiles):
    """StaticFiles that answers with the build's `.br` / `.gz` sibling when the client accepts it.

    The bundle is 4.4 MB of JavaScript and WebAssembly; compressed once at build time (frontend/build.mjs)
    it crosses a hospital's network at about a quarter of that, with no CPU spent per request. A ranged
    request, or a client that accepts neither coding, gets the identity file.
    """

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        if not isinstance(response, FileResponse) or response.status_code != 200:
            return response
        headers = Headers(scope=scope)
        if "range" in headers:
            return response
        accepted = _accepted(headers.get("accept-encoding", ""))
        for suffix, coding in ENCODINGS:
            if coding not in accepted:
                continue
            # A sibling of the file StaticFiles already resolved inside the directory (no new path lookup).
            full = f"{response.path}{suffix}"
            try:
                stat = os.stat(full)
            except OSError:
                continue
            return FileResponse(
                full,
                stat_result=stat,
                media_type=response.media_type,
                headers={"Content-Encoding": coding, "Vary": "Accept-Encoding"},
            )
        response.headers["Vary"] = "Accept-Encoding"
        return response


def mount_viewer(app: FastAPI, web: Path) -> None:
    """Serve the built viewer at /viewer/ (index.html for the directory), or say how to build it."""
    built = web / "viewer"
    if (built / "index.html").is_file():
        app.mount(PREFIX, PrecompressedStaticFiles(directory=built, html=True), name="viewer")
        return

    @app.get(PREFIX + "/{path:path}", include_in_schema=False)
    async def not_built(path: str) -> None:
        raise NotFound(
            "the viewer is not built in this installation: run `make` (npm ci && npm run build in frontend/)"
        )
