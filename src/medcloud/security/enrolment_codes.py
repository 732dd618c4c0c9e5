"""Admin-issued one-time passkey enrolment codes: a person who lost their passkey, or needs one on a new
device, enrols outside the first-enrolment window on an administrator's word.

- An administrator (step-up: a recent passkey, `tokens.manage`) or the hub's operator (`medcloud hub
  passkey-code issue`) issues a code for one named person. The code is shown once; the catalog keeps its
  SHA-256 digest only. It lives `mfa_enrol_code_seconds` (1 h) or less, and issuing a new one for the same
  person revokes the person's earlier open codes.
- The person, signed in through the identity provider (a session), redeems it: the code is bound to that
  session, and the session may then register one passkey (whatever the first-enrolment window says, and
  without the step-up a further passkey otherwise needs). The registration spends the code.
- A code that is unknown, malformed, another person's, expired, revoked, spent or redeemed by another
  session gets the one passkey refusal (`passkey not accepted`) and counts towards the person's lockout.
- Issue, redemption, spending (in `passkey.register`) and revocation are audited.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from medcloud.errors import InvalidInput
from medcloud.security.lockout import LockoutBook
from medcloud.security.passkeys import REFUSED, PasskeyRefused, person_key, require_person
from medcloud.security.policy import Principal
from medcloud.store import Catalog, utcnow

# Crockford's base32: no I, L, O, U; 16 characters carry 80 bits, read out in four groups of four.
ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_CHARS = 16
_CONFUSABLE = str.maketrans({"O": "0", "I": "1", "L": "1"})


@dataclass(frozen=True)
class IssuedCode:
    code: str  # shown once
    code_id: str
    person: str
    expires_at: datetime


def normalise(code: str) -> str | None:
    """The canonical form of a typed code (case, dashes, spaces and confusable letters forgiven), or None."""
    text = "".join(code.split()).replace("-", "").upper().translate(_CONFUSABLE)
    if len(text) != CODE_CHARS or any(ch not in ALPHABET for ch in text):
        return None
    return text


def digest(canonical: str) -> str:
    return hashlib.sha256(f"medcloud-passkey-enrolment:{canonical}".encode()).hexdigest()


def _new_code() -> str:
    raw = "".join(secrets.choice(ALPHABET) for _ in range(CODE_CHARS))
    return "-".join(raw[i : i + 4] for i in range(0, CODE_CHARS, 4))


def issue(catalog: Catalog, person: str, *, by: str, client: str = "", seconds: int, max_seconds: int) -> IssuedCode:
    """A new one-time code for `person`, valid `seconds` (at most `max_seconds`); earlier open codes revoked."""
    person = person.strip()
    if not person or len(person) > 256:
        raise InvalidInput("person: the subject the identity provider gives the person (1-256 characters)")
    if not 60 <= seconds <= max_seconds:
        raise InvalidInput(f"an enrolment code lives between 60 s and {max_seconds} s (mfa_enrol_code_seconds)")
    code = _new_code()
    code_id = secrets.token_hex(8)
    now = utcnow()
    expires = now + timedelta(seconds=seconds)
    with catalog.write() as conn:
        revoked = catalog.enrolment_codes.revoke_open(conn, person=person, by=by, at=now)
        catalog.enrolment_codes.add(
            conn,
            {"id": code_id, "code_hash": digest(normalise(code) or ""), "person": person, "created_at": now,
             "created_by": by[:200], "expires_at": expires},
        )  # fmt: skip
        catalog.audit.append(
            conn, subject=by, action="passkey.code.issue", resource=f"person/{person}"[:200], outcome="ok",
            client=client, detail={"code_id": code_id, "expires_at": expires.isoformat(), "revoked_earlier": revoked},
        )  # fmt: skip
    return IssuedCode(code, code_id, person, expires)


def revoke(catalog: Catalog, code_id: str, *, by: str, client: str = "") -> bool:
    """Revoke one open code; False if there was none open under that id."""
    with catalog.write() as conn:
        n = catalog.enrolment_codes.revoke_open(conn, code_id=code_id, by=by, at=utcnow())
        catalog.audit.append(
            conn, subject=by, action="passkey.code.revoke", resource=f"passkey-code/{code_id}"[:200],
            outcome="ok" if n else "not-found", client=client,
        )  # fmt: skip
    return bool(n)


def redeem(catalog: Catalog, lockouts: LockoutBook, principal: Principal, code: str, *, client: str = "") -> datetime:
    """Bind the person's code to this session: it may now register one passkey; until when."""
    person = require_person(principal)
    key = person_key(person)
    lockouts.check(key)
    canonical = normalise(code) if isinstance(code, str) else None
    now = utcnow()
    code_id = None
    if canonical is not None:
        with catalog.write() as conn:
            code_id = catalog.enrolment_codes.redeem(conn, digest(canonical), person, principal.token_id, now)
            if code_id is not None:
                catalog.audit.append(
                    conn, subject=principal.subject, action="passkey.code.redeem", resource=f"person/{person}"[:200],
                    outcome="ok", client=client, detail={"code_id": code_id},
                )  # fmt: skip
    if code_id is None:
        lockouts.fail(key, client=client, reason="passkey.code.redeem")
        raise PasskeyRefused(REFUSED)
    grant = catalog.enrolment_codes.grant(principal.token_id, person, now)
    if grant is None:  # revoked in between
        raise PasskeyRefused(REFUSED)
    return _aware(grant["expires_at"])


def grant_until(catalog: Catalog, principal: Principal) -> datetime | None:
    """Until when this session may register a passkey on a redeemed code, or None."""
    if principal.kind != "session" or not principal.person:
        return None
    grant = catalog.enrolment_codes.grant(principal.token_id, principal.person, utcnow())
    return _aware(grant["expires_at"]) if grant else None


def listing(catalog: Catalog, person: str | None = None) -> list[dict[str, Any]]:
    """Every code with its state (open, redeemed, spent, revoked, expired); never the code or its digest."""
    now = utcnow()
    out = []
    for r in catalog.enrolment_codes.list_all(person):
        if r["spent_at"]:
            state = "spent"
        elif r["revoked_at"]:
            state = "revoked"
        elif _aware(r["expires_at"]) <= now:
            state = "expired"
        else:
            state = "redeemed" if r["redeemed_at"] else "open"
        item = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in r.items() if k != "redeemed_token_id"}
        item["state"] = state
        out.append(item)
    return out


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=timezone.utc)
