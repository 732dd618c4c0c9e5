"""The one HTTP client base for the hub's API clients (datasets, jobs, results): a bearer token, the hub's
problem details turned into medcloud errors. httpx is imported only when a client is made."""

from __future__ import annotations

from typing import TYPE_CHECKING

from medcloud.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    MedcloudError,
    NotFound,
    TooLarge,
    Unauthenticated,
)

if TYPE_CHECKING:
    import httpx

__all__ = ["HubClient", "raise_for"]

_ERRORS: dict[int, type[MedcloudError]] = {
    400: InvalidInput,
    401: Unauthenticated,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: TooLarge,
}


def raise_for(response: httpx.Response) -> None:
    """Nothing for a 2xx; otherwise the medcloud error for the status, with the hub's problem detail."""
    if response.is_success:
        return
    try:
        body = response.json()
        detail = str(body.get("detail") or body.get("title") or "") if isinstance(body, dict) else ""
    except ValueError:
        detail = response.text[:300]
    cls = _ERRORS.get(response.status_code, MedcloudError)
    raise cls(f"hub answered {response.status_code}: {detail}".rstrip(": "))


class HubClient:
    """One hub over an `httpx.Client` (made from `base_url` and `token` if not given), with the token on
    every request; `agent` names the client in the User-Agent header."""

    agent = "medcloud"
    timeout_s = 60.0

    def __init__(self, base_url: str = "", token: str = "", *, client: httpx.Client | None = None) -> None:
        if client is None:
            import httpx

            if not base_url:
                raise InvalidInput("no hub URL: pass --hub or set MEDCLOUD_HUB_URL")
            if not token:
                raise InvalidInput("no token: pass --token or set MEDCLOUD_TOKEN")
            client = httpx.Client(base_url=base_url.rstrip("/"), timeout=httpx.Timeout(self.timeout_s, connect=10.0))
        self._client = client
        self._headers = {"Authorization": f"Bearer {token}", "User-Agent": self.agent} if token else {}

    def close(self) -> None:
        """Close the HTTP connections."""
        self._client.close()
