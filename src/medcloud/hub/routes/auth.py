"""Sign-in through the hospital's identity provider (OpenID Connect); see `security.sessions` for the steps.

Browser navigations: GET /auth/login (to the provider), GET /auth/callback (back from it). The page's
calls: GET /api/v1/auth/config (is sign-in offered?), POST /api/v1/auth/session (the hand-over cookie
becomes a session token), POST /api/v1/auth/refresh, POST /api/v1/auth/logout.

The session token never travels in a URL (which proxies and browser history keep): the callback puts
a one-time hand-over code, valid 60 s, in an HttpOnly, SameSite=Strict cookie scoped to
/api/v1/auth/session, and the page trades it for the token with a same-origin POST.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from medcloud.errors import Forbidden, NotFound
from medcloud.hub.deps import authenticate, client_address, hub_state
from medcloud.security.policy import Principal
from medcloud.security.sessions import HANDOFF_SECONDS, LOGIN_SECONDS, SignIn

router = APIRouter(tags=["auth"])

STATE_COOKIE = "medcloud_oidc_state"
HANDOFF_COOKIE = "medcloud_signin"
CALLBACK_PATH = "/auth/callback"
SESSION_PATH = "/api/v1/auth/session"
SIGN_IN_LABEL = "Sign in with hospital account"


def _signin(request: Request) -> SignIn:
    signin = hub_state(request).signin
    if signin is None:
        raise NotFound("sign-in through an identity provider is not configured on this hub")
    return signin


def _person(request: Request, *, use: bool = True) -> Principal:
    """The caller, who must be a person's session: machine tokens are neither refreshed nor signed out here."""
    principal = authenticate(request, use=use)
    if principal.kind != "session":
        raise Forbidden("only a person's session (from signing in) can be refreshed or signed out")
    return principal


def _redirect_uri(request: Request) -> str:
    configured = hub_state(request).settings.oidc_redirect_uri
    return configured or str(request.base_url).rstrip("/") + CALLBACK_PATH


def _secure(request: Request) -> bool:
    return _redirect_uri(request).startswith("https://")


@router.get("/api/v1/auth/config", summary="Whether people can sign in with the hospital's account")
async def auth_config(request: Request) -> dict[str, Any]:
    settings = hub_state(request).settings
    enabled = hub_state(request).signin is not None
    return {
        "oidc": enabled,
        "login_url": "/auth/login" if enabled else None,
        "label": SIGN_IN_LABEL if enabled else None,
        "session_idle_seconds": settings.session_idle_seconds,
        "session_max_seconds": settings.session_max_seconds,
    }


@router.get("/auth/login", include_in_schema=False)
async def login(request: Request, role: str | None = None, return_to: str | None = None) -> Response:
    signin = _signin(request)
    started = await run_in_threadpool(
        signin.start, redirect_uri=_redirect_uri(request), role=role, return_to=return_to,
        client=client_address(request),
    )  # fmt: skip
    response = RedirectResponse(started.url, status_code=303)
    # Binds the callback to this browser (SameSite=Lax: sent on the provider's top-level redirect back).
    response.set_cookie(
        STATE_COOKIE, started.state, max_age=LOGIN_SECONDS, path=CALLBACK_PATH, httponly=True,
        samesite="lax", secure=_secure(request),
    )  # fmt: skip
    return response


@router.get(CALLBACK_PATH, include_in_schema=False)
async def callback(
    request: Request,
    code: str | None = None,
    state: str | None = None,
    error: str | None = None,
    iss: str | None = None,
) -> Response:
    signin = _signin(request)
    finished = await run_in_threadpool(
        signin.finish, state=state, cookie_state=request.cookies.get(STATE_COOKIE), code=code, error=error,
        iss=iss, redirect_uri=_redirect_uri(request), client=client_address(request),
    )  # fmt: skip
    # "#signin" (never sent to a server) tells the page to trade its hand-over cookie for the token.
    response = RedirectResponse(finished.return_to.split("#", 1)[0] + "#signin", status_code=303)
    response.delete_cookie(STATE_COOKIE, path=CALLBACK_PATH)
    response.set_cookie(
        HANDOFF_COOKIE, finished.handoff, max_age=HANDOFF_SECONDS, path=SESSION_PATH, httponly=True,
        samesite="strict", secure=_secure(request),
    )  # fmt: skip
    return response


@router.post(SESSION_PATH, summary="Trade the sign-in hand-over (cookie) for a session token")
async def session(request: Request, response: Response) -> dict[str, Any]:
    signin = _signin(request)
    made = await run_in_threadpool(signin.redeem, request.cookies.get(HANDOFF_COOKIE), client=client_address(request))
    response.delete_cookie(HANDOFF_COOKIE, path=SESSION_PATH)
    p = made.issued.principal
    settings = hub_state(request).settings
    return {
        "token": made.issued.token,
        "token_id": p.token_id,
        "kind": p.kind,
        "person": made.person,
        "role": p.role.value,
        "projects": sorted(p.projects),
        "expires_at": p.expires_at.isoformat() if p.expires_at else None,
        "session_ends_at": made.ends_at.isoformat(),
        "session_idle_seconds": settings.session_idle_seconds,
    }


@router.post("/api/v1/auth/refresh", summary="Extend a person's session through the identity provider")
async def refresh(request: Request) -> dict[str, Any]:
    # Refused once the session is idle, and not itself a use: a page's timer cannot outlast the idle timeout.
    principal = _person(request, use=False)
    expires_at = await run_in_threadpool(_signin(request).refresh, principal, client=client_address(request))
    return {"expires_at": expires_at.isoformat()}


@router.post("/api/v1/auth/logout", summary="End a person's session here and at the identity provider")
async def logout(request: Request) -> dict[str, Any]:
    principal = _person(request)
    settings = hub_state(request).settings
    post_logout = settings.oidc_post_logout_redirect_uri or str(request.base_url)
    url = await run_in_threadpool(
        _signin(request).logout, principal, post_logout_redirect_uri=post_logout, client=client_address(request)
    )
    return {"signed_out": True, "end_session_url": url}
