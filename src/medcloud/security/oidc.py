"""The relying party of OpenID Connect: authorization code flow with PKCE (S256), as a confidential client.

Protocol only (no catalog): discovery, the authorization URL, the token endpoint (code, refresh token,
revocation), ID token validation (signature from the provider's JWKS, cached and fetched again once when
a key id is unknown, i.e. after a key rotation; iss, aud, azp, exp, iat, nonce), userinfo, the provider's
end-session URL, the mapping of the hospital's groups to medcloud roles and projects, and the sealed box
that keeps the provider's tokens encrypted at rest. `security.sessions` builds people's sessions on it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from medcloud.errors import ConfigError, Unauthenticated
from medcloud.security.policy import Role

# Asymmetric signatures only: an HMAC-signed ID token (keyed by the client secret) or `none` is refused.
ALLOWED_ALGS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"})
CLOCK_SKEW_S = 60
ID_TOKEN_MAX_AGE_S = 600  # an ID token issued longer ago than this (by its iat) is not a fresh sign-in
DISCOVERY_TTL_S = 3600.0
# People's roles a group may map to, least administrative first: the pick when groups map to several.
PERSON_ROLES: tuple[Role, ...] = (Role.RESEARCHER, Role.CLINICIAN, Role.AUDITOR, Role.ADMIN)


class SignInRefused(Unauthenticated):
    """The identity provider, or what it sent, did not establish who the person is (401)."""

    title = "Sign-in refused"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge) per RFC 7636."""
    verifier = b64url(os.urandom(48))  # 64 characters, within 43..128
    return verifier, b64url(hashlib.sha256(verifier.encode("ascii")).digest())


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def new_secret() -> str:
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class ProviderInfo:
    """What the provider's discovery document says that this relying party uses."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str | None
    end_session_endpoint: str | None
    revocation_endpoint: str | None


class OidcClient:
    """One identity provider, as the hub's confidential client. Thread-safe; calls are blocking."""

    def __init__(self, issuer: str, client_id: str, client_secret: str, *, timeout_s: float = 10.0) -> None:
        if not issuer or not client_id or not client_secret:
            raise ConfigError("OpenID Connect needs oidc_issuer, oidc_client_id and a client secret")
        self.issuer = issuer
        self.client_id = client_id
        self._secret = client_secret
        self._http = httpx.Client(timeout=timeout_s, follow_redirects=False, headers={"Accept": "application/json"})
        self._lock = threading.Lock()
        self._info: tuple[float, ProviderInfo] | None = None
        self._keys: KeySet | None = None

    def close(self) -> None:
        self._http.close()

    # -- discovery and keys ---------------------------------------------------------------------

    def info(self) -> ProviderInfo:
        """The discovery document (cached for an hour); its issuer must be exactly the configured one."""
        with self._lock:
            if self._info and time.monotonic() - self._info[0] < DISCOVERY_TTL_S:
                return self._info[1]
        doc = self._get_json(self.issuer.rstrip("/") + "/.well-known/openid-configuration")
        if doc.get("issuer") != self.issuer:
            raise SignInRefused(f"the provider's discovery document names issuer {doc.get('issuer')!r}")
        try:
            info = ProviderInfo(
                issuer=doc["issuer"],
                authorization_endpoint=str(doc["authorization_endpoint"]),
                token_endpoint=str(doc["token_endpoint"]),
                jwks_uri=str(doc["jwks_uri"]),
                userinfo_endpoint=doc.get("userinfo_endpoint"),
                end_session_endpoint=doc.get("end_session_endpoint"),
                revocation_endpoint=doc.get("revocation_endpoint"),
            )
        except KeyError as exc:
            raise SignInRefused(f"the provider's discovery document lacks {exc.args[0]}") from None
        with self._lock:
            self._info = (time.monotonic(), info)
        return info

    def _key_set(self, *, fetch: bool) -> KeySet:
        with self._lock:
            keys = self._keys
        if keys is None or fetch:
            doc = self._get_json(self.info().jwks_uri)
            try:
                keys = KeySet.import_key_set(doc)  # type: ignore[arg-type]
            except (JoseError, KeyError, TypeError, ValueError) as exc:
                raise SignInRefused(f"the provider's key set cannot be read: {exc}") from None
            with self._lock:
                self._keys = keys
        return keys

    def _get_json(self, url: str, **kwargs: Any) -> dict[str, Any]:
        try:
            resp = self._http.get(url, **kwargs)
        except httpx.HTTPError as exc:
            raise SignInRefused(f"the identity provider did not answer: {type(exc).__name__}") from None
        return _json_object(resp, url)

    # -- the flow -------------------------------------------------------------------------------

    def authorization_url(
        self, *, redirect_uri: str, state: str, nonce: str, code_challenge: str, scopes: Iterable[str]
    ) -> str:
        params = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": redirect_uri,
            "scope": " ".join(scopes),
            "state": state,
            "nonce": nonce,
            "code_challenge": code_challenge,
            "code_challenge_method": "S256",
        }
        endpoint = self.info().authorization_endpoint
        return endpoint + ("&" if "?" in endpoint else "?") + urlencode(params)

    def token_request(self, form: Mapping[str, str]) -> dict[str, Any]:
        """POST to the token endpoint with HTTP Basic client authentication (client_secret_basic)."""
        auth = httpx.BasicAuth(_form_quote(self.client_id), _form_quote(self._secret))
        try:
            resp = self._http.post(self.info().token_endpoint, data=dict(form), auth=auth)
        except httpx.HTTPError as exc:
            raise SignInRefused(f"the identity provider did not answer: {type(exc).__name__}") from None
        if resp.status_code != 200:
            try:
                err = resp.json()
            except ValueError:
                err = {}
            code = err.get("error") if isinstance(err, dict) else None
            raise SignInRefused(f"the identity provider refused the grant ({code or resp.status_code})")
        body = _json_object(resp, "token endpoint")
        if str(body.get("token_type", "")).lower() != "bearer" or not isinstance(body.get("access_token"), str):
            raise SignInRefused("the identity provider's token response has no bearer access token")
        return body

    def exchange_code(self, *, code: str, redirect_uri: str, code_verifier: str) -> dict[str, Any]:
        return self.token_request(
            {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
             "code_verifier": code_verifier}
        )  # fmt: skip

    def refresh(self, refresh_token: str) -> dict[str, Any]:
        return self.token_request({"grant_type": "refresh_token", "refresh_token": refresh_token})

    def revoke(self, token: str, hint: str = "refresh_token") -> bool:
        """Ask the provider to revoke a token (RFC 7009); False where it has no revocation endpoint or fails."""
        endpoint = self.info().revocation_endpoint
        if not endpoint:
            return False
        auth = httpx.BasicAuth(_form_quote(self.client_id), _form_quote(self._secret))
        try:
            resp = self._http.post(endpoint, data={"token": token, "token_type_hint": hint}, auth=auth)
        except httpx.HTTPError:
            return False
        return resp.status_code == 200

    def validate_id_token(
        self, id_token: str, *, nonce: str | None, now: float | None = None, fresh: bool = True
    ) -> dict[str, Any]:
        """The ID token's claims, once its signature, issuer, audience, times and nonce are right.

        `fresh`: issued within ID_TOKEN_MAX_AGE_S (a sign-in); a refresh's ID token need only be unexpired."""
        header = _jose_header(id_token)
        alg = header.get("alg")
        if alg not in ALLOWED_ALGS:
            raise SignInRefused(f"ID token signed with {alg!r}, not an allowed asymmetric algorithm")
        kid = header.get("kid")
        try:
            key = self._key_set(fetch=False).get_by_kid(kid)
        except JoseError:
            # A key id we do not know: the provider may have rotated its keys. Fetch them again, once.
            try:
                key = self._key_set(fetch=True).get_by_kid(kid)
            except JoseError:
                raise SignInRefused("ID token signed by a key the provider does not publish") from None
        try:
            claims = jwt.decode(id_token, key, algorithms=[str(alg)]).claims
        except (JoseError, ValueError) as exc:
            raise SignInRefused(f"ID token signature invalid ({type(exc).__name__})") from None
        self.check_claims(claims, nonce=nonce, now=now, fresh=fresh)
        return claims

    def check_claims(
        self, claims: Mapping[str, Any], *, nonce: str | None, now: float | None = None, fresh: bool = True
    ) -> None:
        """OpenID Connect Core 3.1.3.7: iss, aud (and azp), exp, iat, nonce, sub."""
        now = time.time() if now is None else now
        if claims.get("iss") != self.issuer:
            raise SignInRefused("ID token from another issuer")
        aud = claims.get("aud")
        auds = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if self.client_id not in auds:
            raise SignInRefused("ID token for another audience")
        azp = claims.get("azp")
        if (len(auds) > 1 or azp is not None) and azp != self.client_id:
            raise SignInRefused("ID token authorised for another party")
        exp, iat = claims.get("exp"), claims.get("iat")
        if not isinstance(exp, (int, float)) or exp <= now - CLOCK_SKEW_S:
            raise SignInRefused("ID token expired")
        if not isinstance(iat, (int, float)) or iat > now + CLOCK_SKEW_S or (fresh and iat < now - ID_TOKEN_MAX_AGE_S):
            raise SignInRefused("ID token issued at an implausible time")
        if nonce is not None and not (
            isinstance(claims.get("nonce"), str) and secrets.compare_digest(claims["nonce"], nonce)
        ):
            raise SignInRefused("ID token nonce does not match this sign-in")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not 0 < len(sub) <= 255:
            raise SignInRefused("ID token without a usable subject")

    def userinfo(self, access_token: str, *, sub: str) -> dict[str, Any]:
        """The userinfo claims, which must be about `sub`; {} where the provider has no userinfo endpoint."""
        endpoint = self.info().userinfo_endpoint
        if not endpoint:
            return {}
        claims = self._get_json(endpoint, headers={"Authorization": f"Bearer {access_token}"})
        if claims.get("sub") != sub:
            raise SignInRefused("userinfo is about another subject than the ID token")
        return claims

    def end_session_url(self, *, id_token_hint: str | None, post_logout_redirect_uri: str | None) -> str | None:
        """RP-initiated logout at the provider, or None where it offers none."""
        try:
            endpoint = self.info().end_session_endpoint
        except SignInRefused:
            return None
        if not endpoint:
            return None
        params = {"client_id": self.client_id}
        if id_token_hint:
            params["id_token_hint"] = id_token_hint
        if post_logout_redirect_uri:
            params["post_logout_redirect_uri"] = post_logout_redirect_uri
        return endpoint + ("&" if "?" in endpoint else "?") + urlencode(params)


def _form_quote(value: str) -> str:
    # RFC 6749 2.3.1: client id and secret are form-urlencoded before HTTP Basic encoding.
    return urlencode({"": value})[1:]


def _json_object(resp: httpx.Response, what: str) -> dict[str, Any]:
    if resp.status_code != 200:
        raise SignInRefused(f"the identity provider answered {resp.status_code} ({what})")
    try:
        body = resp.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise SignInRefused(f"the identity provider's answer is not a JSON object ({what})")
    return body


def _jose_header(token: str) -> dict[str, Any]:
    parts = token.split(".") if isinstance(token, str) else []
    if len(parts) != 3:
        raise SignInRefused("ID token is not a signed JWT")
    try:
        header = json.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
    except ValueError:
        raise SignInRefused("ID token header unreadable") from None
    if not isinstance(header, dict):
        raise SignInRefused("ID token header unreadable")
    return header


# -- groups to roles ------------------------------------------------------------------------------


@dataclass(frozen=True)
class MappedGrant:
    """What a person's groups give: one role, and the projects it applies to."""

    role: Role
    projects: tuple[str, ...]
    groups: tuple[str, ...]  # the mapped groups that gave it


def parse_group_roles(mapping: Mapping[str, str]) -> dict[str, tuple[Role, str | None]]:
    """`{"radiology-research": "chest-ct:researcher", "medcloud-admins": "admin"}` checked and split."""
    from medcloud.security.tokens import validate_name

    out: dict[str, tuple[Role, str | None]] = {}
    for group, target in mapping.items():
        project, _, role_name = target.rpartition(":")
        try:
            role = Role(role_name)
        except ValueError:
            raise ConfigError(f"oidc_group_roles[{group!r}]: unknown role {role_name!r}") from None
        if role not in PERSON_ROLES:
            raise ConfigError(f"oidc_group_roles[{group!r}]: role {role.value!r} is for machines, not people")
        if project:
            validate_name("project", project)
        elif role is Role.RESEARCHER:
            raise ConfigError(f"oidc_group_roles[{group!r}]: a researcher group needs 'project:researcher'")
        out[group] = (role, project or None)
    return out


def groups_of(claims: Mapping[str, Any], claim: str) -> tuple[str, ...]:
    value = claims.get(claim)
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list):
        return tuple(g for g in value if isinstance(g, str))
    return ()


def map_groups(
    groups: Iterable[str], mapping: Mapping[str, tuple[Role, str | None]], wanted: Role | None = None
) -> MappedGrant:
    """The role and projects `groups` give (deny by default: no mapped group, no session).

    Where groups map to several roles, `wanted` picks one of them; without it the least administrative."""
    by_role: dict[Role, tuple[list[str], list[str]]] = {}
    for group in sorted(set(groups)):
        if group in mapping:
            role, project = mapping[group]
            projects, gave = by_role.setdefault(role, ([], []))
            gave.append(group)
            if project and project not in projects:
                projects.append(project)
    if not by_role:
        raise SignInRefused("none of this person's groups is mapped to a medcloud role")
    if wanted is not None:
        if wanted not in by_role:
            raise SignInRefused(f"this person's groups do not give the role '{wanted.value}'")
        role = wanted
    else:
        role = next(r for r in PERSON_ROLES if r in by_role)
    projects, gave = by_role[role]
    return MappedGrant(role, tuple(sorted(projects)), tuple(gave))


# -- the provider's tokens at rest ----------------------------------------------------------------


class GrantBox:
    """AES-256-GCM over the provider's refresh and ID tokens, keyed from the client secret (HKDF-SHA256).

    The refresh token is worth nothing without the client secret (a confidential client authenticates
    at the token endpoint), and the secret lives in a file outside the catalog: a copy of the catalog
    alone reveals neither. Each box is bound to its session row (associated data).
    """

    def __init__(self, client_secret: str) -> None:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"medcloud oidc grant box v1").derive(
            client_secret.encode("utf-8")
        )
        self._aead = AESGCM(key)

    def seal(self, session_id: str, data: Mapping[str, Any]) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, json.dumps(dict(data)).encode("utf-8"), session_id.encode())

    def open(self, session_id: str, blob: bytes) -> dict[str, Any]:
        from cryptography.exceptions import InvalidTag

        try:
            data = json.loads(self._aead.decrypt(blob[:12], blob[12:], session_id.encode()))
        except (InvalidTag, ValueError):
            raise SignInRefused("this session's grant cannot be opened (client secret changed?)") from None
        return data if isinstance(data, dict) else {}
