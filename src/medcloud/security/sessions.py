"""People's sessions from the hospital's identity provider: sign-in, hand-over, refresh, sign-out.

A person who signs in through OpenID Connect gets a short-lived medcloud bearer token of kind 'session',
so that every API keeps one way to authenticate. The steps:

1. `start`: a login row (SHA-256 of a random `state`, the `nonce`, the PKCE verifier), and the
   provider's authorization URL. The state also goes into an HttpOnly cookie, which binds the callback
   to the browser that started the sign-in (no login CSRF).
2. `finish` (the callback): the state is spent; the code is exchanged (with the PKCE verifier and the
   client secret); the ID token is validated; the groups (ID token, then userinfo) are mapped to a role
   and projects (deny by default). No token is made yet: a one-time hand-over code (60 s) is, kept only
   as its SHA-256, and handed to the browser in an HttpOnly, SameSite=Strict cookie - never in a URL.
3. `redeem`: the page POSTs; the hand-over code becomes the session token (the only place it is shown).
4. `refresh`: the provider's refresh token (kept encrypted) is exchanged again; the provider refuses it
   once the grant is revoked or the account disabled, and the groups are mapped again (a group removed,
   the role gone: refused). The session token's end moves to the new access token's end, never past
   `session_max_seconds` after sign-in.
5. `logout`: the session token is revoked, the refresh token revoked at the provider, and the provider's
   end-session URL (RP-initiated logout) returned for the page to go to.

Every step writes an audit event; no token, code or secret ever goes into an audit detail.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from medcloud.config import Settings
from medcloud.errors import ConfigError, Forbidden, InvalidInput, Unauthenticated
from medcloud.security.oidc import (
    GrantBox,
    MappedGrant,
    OidcClient,
    SignInRefused,
    groups_of,
    map_groups,
    new_secret,
    parse_group_roles,
    pkce_pair,
    sha256_hex,
)
from medcloud.security.policy import Principal, Role
from medcloud.security.tokens import IssuedToken, TokenVerifier, _issue, revoke_token
from medcloud.store import Catalog, utcnow

LOGIN_SECONDS = 600  # a sign-in started must come back from the provider within this
HANDOFF_SECONDS = 60  # the page redeems its hand-over code within this
MIN_TOKEN_SECONDS = 60  # a session token lives at least this long between refreshes
DEFAULT_TOKEN_SECONDS = 300  # where the provider does not say how long its access token lives


@dataclass(frozen=True)
class Started:
    url: str
    state: str


@dataclass(frozen=True)
class Finished:
    handoff: str
    return_to: str


@dataclass(frozen=True)
class Session:
    issued: IssuedToken
    person: str
    ends_at: datetime


def safe_return(path: str | None) -> str:
    """A page of this hub to come back to after sign-in (never another site: no open redirect)."""
    if (
        not path
        or not path.startswith("/")
        or path.startswith("//")
        or len(path) > 200
        or any(c in path for c in "\\\r\n\t")
    ):
        return "/"
    return path


class SignIn:
    """Sign-in through the hospital's identity provider for one hub (created when `oidc_issuer` is set)."""

    def __init__(self, settings: Settings, catalog: Catalog, verifier: TokenVerifier) -> None:
        if not (settings.oidc_issuer and settings.oidc_client_id and settings.oidc_client_secret_file):
            raise ConfigError("OpenID Connect needs oidc_issuer, oidc_client_id and oidc_client_secret_file")
        try:
            secret = settings.oidc_client_secret_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"cannot read oidc_client_secret_file: {exc.strerror}") from None
        if not secret:
            raise ConfigError("oidc_client_secret_file is empty")
        if "openid" not in settings.oidc_scopes:
            raise ConfigError("oidc_scopes must include 'openid'")
        self.settings = settings
        self.mapping = parse_group_roles(settings.oidc_group_roles)
        self.client = OidcClient(
            settings.oidc_issuer, settings.oidc_client_id, secret, timeout_s=settings.oidc_http_timeout_seconds
        )
        self._box = GrantBox(secret)
        self._catalog = catalog
        self._verifier = verifier

    def close(self) -> None:
        self.client.close()

    def _audit(self, subject: str, action: str, outcome: str, client: str, **detail: Any) -> None:
        self._catalog.audit.record(
            subject=subject, action=action, resource="auth/oidc", outcome=outcome, client=client, detail=detail
        )

    # -- 1. start -------------------------------------------------------------------------------

    def start(self, *, redirect_uri: str, role: str | None, return_to: str | None, client: str) -> Started:
        wanted = None
        if role:
            try:
                wanted = Role(role)
            except ValueError:
                raise InvalidInput(f"unknown role {role!r}") from None
        state, nonce = new_secret(), new_secret()
        verifier, challenge = pkce_pair()
        try:
            url = self.client.authorization_url(
                redirect_uri=redirect_uri, state=state, nonce=nonce, code_challenge=challenge,
                scopes=self.settings.oidc_scopes,
            )  # fmt: skip
        except SignInRefused as exc:  # the provider cannot be reached or its discovery document is wrong
            self._audit("anonymous", "auth.login", "failed", client, reason=exc.detail)
            raise
        now = utcnow()
        with self._catalog.write() as conn:
            self._catalog.oidc.add_login(
                conn,
                {"state_sha256": sha256_hex(state), "nonce": nonce, "code_verifier": verifier,
                 "role": wanted.value if wanted else None, "return_to": safe_return(return_to),
                 "created_at": now, "expires_at": now + timedelta(seconds=LOGIN_SECONDS)},
            )  # fmt: skip
        return Started(url, state)

    # -- 2. the provider's callback ---------------------------------------------------------------

    def finish(
        self,
        *,
        state: str | None,
        cookie_state: str | None,
        code: str | None,
        error: str | None,
        redirect_uri: str,
        client: str,
        iss: str | None = None,
    ) -> Finished:
        """The callback's checks and the code exchange; every refusal is audited (as `auth.login` failed)."""
        person = None
        try:
            if not state or not cookie_state or not secrets.compare_digest(state, cookie_state):
                raise SignInRefused("sign-in state does not match this browser's")
            with self._catalog.write() as conn:
                login = self._catalog.oidc.take_login(conn, sha256_hex(state))
            if login is None:
                raise SignInRefused("sign-in state unknown, already used or too old")
            if iss is not None and iss != self.client.issuer:
                # RFC 9207: the answer names who sent it; another issuer's answer is a mix-up attack.
                raise SignInRefused("the authorization response comes from another issuer")
            if error:
                raise SignInRefused(f"the identity provider refused the sign-in ({error[:60]})")
            if not code:
                raise SignInRefused("the identity provider sent no authorization code")
            tokens = self.client.exchange_code(
                code=code, redirect_uri=redirect_uri, code_verifier=login["code_verifier"]
            )
            id_token = tokens.get("id_token")
            if not isinstance(id_token, str):
                raise SignInRefused("the identity provider sent no ID token")
            claims = self.client.validate_id_token(id_token, nonce=login["nonce"])
            person = claims["sub"]
            grant = self._map(claims, tokens, Role(login["role"]) if login["role"] else None)
        except SignInRefused as exc:
            self._audit(f"oidc:{person}" if person else "anonymous", "auth.login", "failed", client,
                        reason=exc.detail, person=person)  # fmt: skip
            raise
        now = utcnow()
        ends_at = now + timedelta(seconds=self.settings.session_max_seconds)
        handoff = new_secret()
        session_id = secrets.token_hex(16)
        name = claims.get("preferred_username") or claims.get("email") or person
        with self._catalog.write() as conn:
            self._catalog.oidc.add_session(
                conn,
                {"id": session_id, "handoff_sha256": sha256_hex(handoff),
                 "handoff_expires_at": now + timedelta(seconds=HANDOFF_SECONDS), "person": person,
                 "role": grant.role.value, "projects": ",".join(grant.projects),
                 "label": f"session {name}"[:200], "grant_box": self._seal(session_id, tokens, id_token),
                 "token_expires_at": self._token_end(tokens, now, ends_at), "signed_in_at": now,
                 "ends_at": ends_at},
            )  # fmt: skip
            self._catalog.audit.append(
                conn, subject=f"oidc:{person}", action="auth.login", resource=f"auth/oidc/{session_id}",
                outcome="ok", client=client,
                detail={"person": person, "role": grant.role.value, "projects": list(grant.projects),
                        "groups": list(grant.groups)},
            )  # fmt: skip
        return Finished(handoff, login["return_to"])

    def _map(self, claims: dict[str, Any], tokens: dict[str, Any], wanted: Role | None) -> MappedGrant:
        """Groups from the ID token, else from userinfo, mapped to a role and projects."""
        claim = self.settings.oidc_groups_claim
        groups = groups_of(claims, claim)
        if claim not in claims:
            info = self.client.userinfo(tokens["access_token"], sub=claims["sub"])
            groups = groups_of(info, claim)
        return map_groups(groups, self.mapping, wanted)

    def _seal(self, session_id: str, tokens: dict[str, Any], id_token: str) -> bytes | None:
        kept = {"refresh_token": tokens.get("refresh_token"), "id_token": id_token}
        return self._box.seal(session_id, kept)

    def _token_end(self, tokens: dict[str, Any], now: datetime, ends_at: datetime) -> datetime:
        expires_in = tokens.get("expires_in")
        seconds = expires_in if isinstance(expires_in, int) and expires_in > 0 else DEFAULT_TOKEN_SECONDS
        return min(now + timedelta(seconds=max(seconds, MIN_TOKEN_SECONDS)), ends_at)

    # -- 3. the page redeems its hand-over code -------------------------------------------------------

    def redeem(self, handoff: str | None, *, client: str) -> Session:
        if not handoff:
            raise Unauthenticated("no sign-in to complete: sign in with the hospital account first")
        with self._catalog.write() as conn:
            row = self._catalog.oidc.redeem(conn, sha256_hex(handoff))
        if row is None:  # audited as a refused API request by the hub's error handler
            raise Unauthenticated("sign-in hand-over unknown, already used or too old: sign in again")
        ends_at = _aware(row["ends_at"])
        lifetime = _aware(row["token_expires_at"]) - utcnow()
        issued = _issue(
            self._catalog, Role(row["role"]), None, tuple(p for p in row["projects"].split(",") if p),
            row["label"], lifetime, f"oidc:{row['person']}", client, kind="session", person=row["person"],
        )  # fmt: skip
        with self._catalog.write() as conn:
            self._catalog.oidc.attach_token(conn, row["id"], issued.principal.token_id)
            self._catalog.audit.append(
                conn, subject=issued.principal.subject, action="auth.session", resource=f"auth/oidc/{row['id']}",
                outcome="ok", client=client, detail={"person": row["person"]},
            )  # fmt: skip
        return Session(issued, row["person"], ends_at)

    # -- 4. refresh ------------------------------------------------------------------------------------

    def refresh(self, principal: Principal, *, client: str) -> datetime:
        """Extend a person's session through the provider; refused (and the session ended) when it says no."""
        row = self._session_of(principal)
        now = utcnow()
        try:
            if _aware(row["ends_at"]) <= now:
                raise SignInRefused(
                    f"the session reached its maximum of {self.settings.session_max_seconds} s: sign in again"
                )
            kept = self._box.open(row["id"], row["grant_box"]) if row["grant_box"] else {}
            if not kept.get("refresh_token"):
                raise SignInRefused("the identity provider gave this session no refresh token: sign in again")
            tokens = self.client.refresh(kept["refresh_token"])
            id_token = tokens.get("id_token")
            if isinstance(id_token, str):
                claims = self.client.validate_id_token(id_token, nonce=None, fresh=False)
                if claims["sub"] != row["person"]:
                    raise SignInRefused("the refreshed ID token is about another person")
            else:
                id_token, claims = kept.get("id_token"), {"sub": row["person"]}
            grant = self._map(claims, tokens, Role(row["role"]))
        except SignInRefused as exc:
            self._end(principal, row, client, reason=exc.detail)
            self._audit(principal.subject, "auth.refresh", "refused", client, person=row["person"], reason=exc.detail)
            raise
        if tokens.get("refresh_token") is None:  # not rotated: keep the one we have
            tokens = tokens | {"refresh_token": kept["refresh_token"]}
        token_end = self._token_end(tokens, now, _aware(row["ends_at"]))
        with self._catalog.write() as conn:
            self._catalog.oidc.refreshed(
                conn, row["id"], grant_box=self._box.seal(row["id"], {"refresh_token": tokens["refresh_token"],
                                                                      "id_token": id_token}),
                role=grant.role.value, projects=",".join(grant.projects), token_expires_at=token_end,
            )  # fmt: skip
            self._catalog.tokens.refresh_session(
                conn, principal.token_id, token_end, role=grant.role.value, projects=",".join(grant.projects)
            )
            self._catalog.audit.append(
                conn, subject=principal.subject, action="auth.refresh", resource=f"auth/oidc/{row['id']}",
                outcome="ok", client=client,
                detail={"person": row["person"], "projects": list(grant.projects), "expires_at": token_end},
            )  # fmt: skip
        self._verifier.forget(principal.token_id)
        return token_end

    def _session_of(self, principal: Principal) -> dict[str, Any]:
        if principal.kind != "session":
            raise Forbidden("only a person's session (from signing in) can be refreshed or signed out")
        row = self._catalog.oidc.by_token(principal.token_id)
        if row is None or row["ended_at"] is not None:
            raise Unauthenticated("this session has ended: sign in again", subject=principal.subject)
        return row

    def _end(self, principal: Principal, row: dict[str, Any], client: str, *, reason: str) -> None:
        revoke_token(self._catalog, self._verifier, principal.token_id, by=principal.subject, client=client)
        with self._catalog.write() as conn:
            self._catalog.oidc.end(conn, row["id"])

    # -- 5. logout -------------------------------------------------------------------------------------

    def logout(self, principal: Principal, *, post_logout_redirect_uri: str | None, client: str) -> str | None:
        """End the session here and at the provider; the provider's end-session URL for the page, if any."""
        row = self._session_of(principal)
        kept: dict[str, Any] = {}
        if row["grant_box"]:
            try:
                kept = self._box.open(row["id"], row["grant_box"])
            except SignInRefused:
                kept = {}
        self._end(principal, row, client, reason="logout")
        revoked = False
        if kept.get("refresh_token"):
            try:
                revoked = self.client.revoke(kept["refresh_token"])
            except SignInRefused:
                revoked = False
        url = self.client.end_session_url(
            id_token_hint=kept.get("id_token"), post_logout_redirect_uri=post_logout_redirect_uri
        )
        self._audit(principal.subject, "auth.logout", "ok", client, person=row["person"],
                    provider_grant_revoked=revoked, provider_logout=url is not None)  # fmt: skip
        return url


def _aware(dt: datetime) -> datetime:
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt
