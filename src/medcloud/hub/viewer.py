"""The viewer pages at /viewer/: a DICOM stack viewer (cornerstone3D) and a whole-slide viewer (OpenSeadragon).

Their files are built from frontend/ into medcloud/web/viewer/ (`npm ci && npm run build`, run by `make`);
they hold no data: every request the pages make to /dicom-web and /api carries the user's bearer token.
Under /viewer/ the CSP also allows WebAssembly compilation ('wasm-unsafe-eval', for the DICOM image
loader's JPEG / JPEG-LS / JPEG 2000 / HTJ2K decoders); no inline script or style anywhere.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from medcloud.errors import NotFound

PREFIX = "/viewer"


def mount_viewer(app: FastAPI, web: Path) -> None:
    """Serve the built viewer at /viewer/ (index.html for the directory), or say how to build it."""
    built = web / "viewer"
    if (built / "index.html").is_file():
        app.mount(PREFIX, StaticFiles(directory=built, html=True), name="viewer")
        return

    @app.get(PREFIX + "/{path:path}", include_in_schema=False)
    async def not_built(path: str) -> None:
        raise NotFound(
            "the viewer is not built in this installation: run `make` (npm ci && npm run build in frontend/)"
        )
