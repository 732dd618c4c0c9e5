"""The hub: FastAPI app factory and one thin router per resource (`hub/routes/`), security as dependencies
(`deps`), errors as RFC 9457 problem details (`problems`), multipart parsing (`multipart`), the uvicorn
server with its limits (`server`).

The names below load on first use: `medcloud` imports `medcloud.hub.cli` for every command, and the app
needs FastAPI and SQLAlchemy, which `medcloud --help` should not pay for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medcloud.faces import lazy_face

if TYPE_CHECKING:
    from medcloud.hub.app import create_app
    from medcloud.hub.state import HubState

_FACE = {"create_app": "medcloud.hub.app", "HubState": "medcloud.hub.state"}

__all__ = ["HubState", "create_app"]

__getattr__, __dir__ = lazy_face(__name__, _FACE)
