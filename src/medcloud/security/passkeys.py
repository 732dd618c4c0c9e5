"""Passkeys (WebAuthn) as the second factor of a person's session: registration and authentication.

A person signs in through the hospital's identity provider (a session token, kind 'session'); the
session then proves its passkey here, and a successful authentication sets the session's `mfa_at`.

- Challenges are made by the hub, kept server-side bound to the session and the ceremony, live
  `webauthn_challenge_seconds`, and are deleted when used: a replayed response finds no challenge.
- The relying party id is fixed by settings (never by the request's Host header), so a page served
  from another name cannot create or use this hub's passkeys.
- A sign count that does not grow (a cloned authenticator) is refused; authenticators that keep no
  counter (always 0) are accepted.
- Every refused authentication gives the same answer (`passkey not accepted`), whether the credential
  is unknown, belongs to another person, carries a bad signature, a stale challenge or a replayed count,
  and counts towards the person's lockout (`security.lockout`).
- First passkey: a person who has none may enrol one only from a session signed in within
  `mfa_enrol_window_seconds` (the identity provider has just checked them). Adding a further passkey
  needs a passkey sign-in within `mfa_admin_max_age_seconds`. An administrator can remove a person's
  passkeys (after losing them), which reopens first enrolment at their next sign-in, or issue a one-time
  enrolment code (`security.enrolment_codes`): a session that redeemed one may register one passkey
  outside both rules, and that registration spends the code.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlsplit

from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import options_to_json_dict
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from medcloud.config import Settings
from medcloud.errors import Forbidden, InvalidInput, SecondFactorRequired
from medcloud.security.lockout import LockoutBook
from medcloud.security.policy import Principal
from medcloud.store import Catalog, utcnow

RP_NAME = "medcloud hub"
REGISTER, AUTHENTICATE = "register", "authenticate"
_LOOPBACK = {"", "127.0.0.1", "0.0.0.0", "::", "::1", "localhost"}
_TRANSPORTS = {t.value for t in AuthenticatorTransport}


class PasskeyRefused(Forbidden):
    """One answer for every failed passkey ceremony, whatever went wrong."""

    type_slug = "passkey-refused"
    title = "Passkey not accepted"


REFUSED = "passkey not accepted"
# What a malformed or forged response can raise on its way through the checks: each is one refusal.
_REFUSALS = (PasskeyRefused, WebAuthnException, KeyError, TypeError, ValueError, AttributeError, IndexError)


@dataclass(frozen=True)
class RelyingParty:
    rp_id: str
    origins: tuple[str, ...]


def relying_party(settings: Settings, request_scheme: str, request_host: str) -> RelyingParty:
    """The hub's relying party: id from settings; origin from settings, else the request's own origin
    provided its host name is the relying-party id (a browser reports the page's true origin, and the
    id binds each passkey to this hub's name whatever the Host header says)."""
    rp_id = settings.webauthn_rp_id
    if not rp_id and settings.webauthn_origin:
        rp_id = urlsplit(settings.webauthn_origin).hostname
    if not rp_id:
        rp_id = "localhost" if settings.host in _LOOPBACK else settings.host
    rp_id = rp_id.lower()
    if settings.webauthn_origin:
        return RelyingParty(rp_id, (settings.webauthn_origin.rstrip("/"),))
    host = request_host.strip().lower()
    name = urlsplit(f"//{host}").hostname or ""
    if name != rp_id:
        raise InvalidInput(
            f"this page's host {name!r} is not the passkey relying party {rp_id!r}: open the hub as {rp_id} "
            "or set webauthn_rp_id / webauthn_origin"
        )
    schemes = ("https", "http") if request_scheme == "http" else (request_scheme,)
    return RelyingParty(rp_id, tuple(f"{s}://{host}" for s in schemes))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _as_aware(dt: datetime | None) -> datetime | None:
    if dt is not None and dt.tzinfo is None:
        return dt.replace(tzinfo=timezone.utc)
    return dt


def person_key(person: str) -> str:
    return f"person:{person}"


def require_person(principal: Principal) -> str:
    """The person behind a session; machine tokens have no passkeys."""
    if principal.kind != "session" or not principal.person:
        raise Forbidden("passkeys belong to people's sign-in sessions, not to machine tokens")
    return principal.person


def mfa_fresh(principal: Principal, max_age_seconds: int) -> bool:
    """Whether the session passed its passkey within the last `max_age_seconds`."""
    at = _as_aware(principal.mfa_at)
    return at is not None and utcnow() - at <= timedelta(seconds=max_age_seconds)


def _challenge_of(credential: dict[str, Any]) -> str:
    """The challenge the browser signed (from clientDataJSON), or a refusal."""
    try:
        client_data = json.loads(_unb64url(str(credential["response"]["clientDataJSON"])))
        challenge = client_data["challenge"]
    except (KeyError, TypeError, ValueError, binascii.Error):
        raise PasskeyRefused(REFUSED) from None
    if not isinstance(challenge, str) or not 16 <= len(challenge) <= 128:
        raise PasskeyRefused(REFUSED)
    return challenge


def may_enrol_first(catalog: Catalog, settings: Settings, principal: Principal) -> bool:
    """Whether the session was signed in recently enough to enrol a person's first passkey."""
    row = catalog.tokens.get(principal.token_id)
    created = _as_aware(row["created_at"]) if row else None
    window = timedelta(seconds=settings.mfa_enrol_window_seconds)
    return created is not None and utcnow() - created <= window


def second_factor_status(catalog: Catalog, settings: Settings, principal: Principal) -> dict[str, Any]:
    """What whoami says about the caller's second factor: `state` is ok, needed (has a passkey, has not
    used it in this session), enrol (has none and may enrol now), enrol-expired or not-applicable."""
    if principal.kind != "session" or not principal.person:
        return {"state": "not-applicable", "required": False}
    passkeys = len(catalog.passkeys.for_person(principal.person))
    code = enrolment_code_grant(catalog, principal)
    code_until = _as_aware(code["expires_at"]) if code else None
    at = _as_aware(principal.mfa_at)
    if at is not None:
        state = "ok"
    elif passkeys:
        state = "needed"
    else:
        state = "enrol" if code or may_enrol_first(catalog, settings, principal) else "enrol-expired"
    return {
        "state": state,
        "required": settings.mfa_required,
        "passkeys": passkeys,
        "passed_at": at.isoformat() if at else None,
        "admin_fresh": mfa_fresh(principal, settings.mfa_admin_max_age_seconds),
        # A redeemed enrolment code: this session may register one passkey until then (whatever the state).
        "enrol_code_until": code_until.isoformat() if code_until else None,
    }


def enrolment_code_grant(catalog: Catalog, principal: Principal) -> dict[str, Any] | None:
    """The live enrolment code this session redeemed (`security.enrolment_codes`), if any."""
    if principal.kind != "session" or not principal.person:
        return None
    return catalog.enrolment_codes.grant(principal.token_id, principal.person, utcnow())


def remove_passkeys(catalog: Catalog, person: str, *, by: str, client: str) -> int:
    """Remove a person's passkeys (an administrator's act, after a lost authenticator)."""
    with catalog.write() as conn:
        n = catalog.passkeys.delete_for_person(conn, person)
        catalog.audit.append(
            conn, subject=by, action="passkey.remove", resource=f"person/{person}"[:200], outcome="ok",
            client=client, detail={"removed": n},
        )  # fmt: skip
    return n


class PasskeyCeremonies:
    """Registration and authentication against one hub's catalog, settings, lockouts and relying party."""

    def __init__(
        self, catalog: Catalog, settings: Settings, lockouts: LockoutBook, rp: RelyingParty, *, client: str = ""
    ) -> None:
        self._client = client
        self._catalog = catalog
        self._settings = settings
        self._lockouts = lockouts
        self._rp = rp

    def _challenge(self, principal: Principal, purpose: str) -> bytes:
        challenge = secrets.token_bytes(32)
        expires = utcnow() + timedelta(seconds=self._settings.webauthn_challenge_seconds)
        cat = self._catalog
        with cat.write() as conn:
            cat.passkeys.put_challenge(conn, _b64url(challenge), principal.token_id, purpose, expires)
            cat.audit.append(
                conn, subject=principal.subject, action=f"passkey.{purpose}.options",
                resource=f"person/{principal.person}"[:200], outcome="ok", client=self._client,
            )  # fmt: skip
        return challenge

    # -- registration ---------------------------------------------------------------------------------

    def registration_options(self, principal: Principal) -> dict[str, Any]:
        person = require_person(principal)
        self._lockouts.check(person_key(person))
        existing = self._catalog.passkeys.for_person(person)
        if enrolment_code_grant(self._catalog, principal) is not None:
            pass  # an administrator vouched for this registration with a one-time code
        elif existing:
            if not mfa_fresh(principal, self._settings.mfa_admin_max_age_seconds):
                minutes = self._settings.mfa_admin_max_age_seconds // 60
                raise SecondFactorRequired(
                    f"second factor required: sign in with a passkey you have (within {minutes} min) to add another"
                )
        elif not may_enrol_first(self._catalog, self._settings, principal):
            raise SecondFactorRequired(
                "second factor required: a first passkey can be enrolled only right after signing in; sign in again"
            )
        challenge = self._challenge(principal, REGISTER)
        rp = self._rp
        options = generate_registration_options(
            rp_id=rp.rp_id,
            rp_name=RP_NAME,
            user_id=hashlib.sha256(f"medcloud-person:{person}".encode()).digest()[:32],
            user_name=person[:64],
            user_display_name=person[:64],
            challenge=challenge,
            timeout=self._settings.webauthn_challenge_seconds * 1000,
            authenticator_selection=AuthenticatorSelectionCriteria(
                resident_key=ResidentKeyRequirement.PREFERRED,
                user_verification=UserVerificationRequirement.PREFERRED,
            ),
            exclude_credentials=[PublicKeyCredentialDescriptor(id=_unb64url(c["id"])) for c in existing],
        )
        return dict(options_to_json_dict(options))

    def register(self, principal: Principal, credential: dict[str, Any], *, client: str, label: str = "") -> str:
        """Verify a registration response and store the passkey; its credential id."""
        person = require_person(principal)
        key = person_key(person)
        self._lockouts.check(key)
        rp = self._rp
        try:
            challenge = _challenge_of(credential)
            with self._catalog.write() as conn:
                taken = self._catalog.passkeys.take_challenge(conn, challenge, principal.token_id, REGISTER)
            if not taken:
                raise PasskeyRefused(REFUSED)
            verified = verify_registration_response(
                credential=credential,
                expected_challenge=_unb64url(challenge),
                expected_rp_id=rp.rp_id,
                expected_origin=list(rp.origins),
            )
        except _REFUSALS as exc:
            self._lockouts.fail(key, client=client, reason=f"passkey.register: {type(exc).__name__}")
            raise PasskeyRefused(REFUSED) from None
        credential_id = _b64url(verified.credential_id)
        response = credential.get("response")
        transports = response.get("transports") if isinstance(response, dict) else None
        transports = [t for t in transports if isinstance(t, str)] if isinstance(transports, list) else []
        now = utcnow()
        cat = self._catalog
        with cat.write() as conn:
            added = cat.passkeys.add(
                conn,
                {
                    "id": credential_id,
                    "person": person,
                    "public_key": verified.credential_public_key,
                    "sign_count": verified.sign_count,
                    "transports": ",".join(t for t in transports if t in _TRANSPORTS)[:200],
                    "aaguid": str(verified.aaguid)[:36],
                    "created_at": now,
                },
            )
            # A code this session redeemed is spent by the passkey it let in (or by any passkey it adds).
            code_id = cat.enrolment_codes.spend(conn, principal.token_id, person, credential_id, now) if added else None
            detail: dict[str, Any] = {"credential": credential_id[:64], "label": label[:100]}
            if code_id:
                detail["enrolment_code"] = code_id
            cat.audit.append(
                conn,
                subject=principal.subject,
                action="passkey.register",
                resource=f"person/{person}"[:200],
                outcome="ok" if added else "refused:duplicate",
                client=client,
                detail=detail,
            )
        if not added:
            raise PasskeyRefused(REFUSED)
        return credential_id

    # -- authentication -------------------------------------------------------------------------------

    def authentication_options(self, principal: Principal) -> dict[str, Any]:
        person = require_person(principal)
        self._lockouts.check(person_key(person))
        existing = self._catalog.passkeys.for_person(person)
        if not existing:
            raise SecondFactorRequired("second factor required: register a passkey first")
        challenge = self._challenge(principal, AUTHENTICATE)
        options = generate_authentication_options(
            rp_id=self._rp.rp_id,
            challenge=challenge,
            timeout=self._settings.webauthn_challenge_seconds * 1000,
            allow_credentials=[
                PublicKeyCredentialDescriptor(
                    id=_unb64url(c["id"]),
                    transports=[AuthenticatorTransport(t) for t in str(c["transports"]).split(",") if t],
                )
                for c in existing
            ],
            user_verification=UserVerificationRequirement.PREFERRED,
        )
        return dict(options_to_json_dict(options))

    def authenticate(self, principal: Principal, credential: dict[str, Any], *, client: str) -> datetime:
        """Verify an assertion from one of the person's passkeys; the session's new `mfa_at`."""
        person = require_person(principal)
        key = person_key(person)
        self._lockouts.check(key)
        cat = self._catalog
        rp = self._rp
        now = utcnow()
        try:
            challenge = _challenge_of(credential)
            with cat.write() as conn:
                taken = cat.passkeys.take_challenge(conn, challenge, principal.token_id, AUTHENTICATE)
            row = cat.passkeys.get(str(credential.get("id", ""))[:1400])
            if not taken or row is None or row["person"] != person:
                raise PasskeyRefused(REFUSED)
            verified = verify_authentication_response(
                credential=credential,
                expected_challenge=_unb64url(challenge),
                expected_rp_id=rp.rp_id,
                expected_origin=list(rp.origins),
                credential_public_key=bytes(row["public_key"]),
                credential_current_sign_count=int(row["sign_count"]),
            )
            with cat.write() as conn:
                if not cat.passkeys.use(conn, row["id"], verified.new_sign_count, now):
                    raise PasskeyRefused(REFUSED)  # a count that did not grow: a cloned authenticator
                if not cat.tokens.set_mfa(conn, principal.token_id, now):
                    raise PasskeyRefused(REFUSED)  # the session was revoked meanwhile
                cat.audit.append(
                    conn,
                    subject=principal.subject,
                    action="passkey.authenticate",
                    resource=f"person/{person}"[:200],
                    outcome="ok",
                    client=client,
                    detail={"credential": row["id"][:64], "sign_count": verified.new_sign_count},
                )
        except _REFUSALS as exc:
            self._lockouts.fail(key, client=client, reason=f"passkey.authenticate: {type(exc).__name__}")
            raise PasskeyRefused(REFUSED) from None
        return now
