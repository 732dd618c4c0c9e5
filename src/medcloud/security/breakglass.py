"""Break-glass accounts: sealed emergency administrator credentials, opened only with a stated reason.

`create` issues an admin token (printed once, stored as a hash like every token) that is expired from
the start: sealed. `use` proves possession of that token, states why, and opens it for a limited time;
`close` revokes it for good (a used credential is never resealed: make a new one). Every step is a
high-severity audit event, every request made with the account carries the break-glass mark in its audit
subject (`policy.BREAK_GLASS_MARK`), and each use waits for a `review`, which the self-check looks for.
"""

from __future__ import annotations

import hmac
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy.engine import Connection

from medcloud.errors import Conflict, InvalidInput, NotFound, Unauthenticated
from medcloud.security.policy import Role
from medcloud.security.tokens import BREAK_GLASS_SCOPE, IssuedToken, _issue, parse_token, validate_name
from medcloud.store import Catalog, utcnow

__all__ = ["HIGH", "close", "create", "review", "status", "use"]

HIGH = "high"  # the severity of every break-glass event
MIN_REASON_CHARS = 10


def _aware(dt: datetime | None) -> datetime | None:
    if dt is not None and dt.tzinfo is None:  # SQLite returns naive datetimes
        return dt.replace(tzinfo=timezone.utc)
    return dt


def create(catalog: Catalog, name: str, *, by: str) -> IssuedToken:
    """A new sealed account; the token is returned once. A name may be reused once its use was reviewed."""
    validate_name("break-glass account", name)
    old = catalog.break_glass.get(name)
    if old is not None and old["state"] != "closed":
        raise Conflict(f"break-glass account {name!r} exists ({old['state']}): close it first")
    if old is not None and old["opened_at"] is not None and old["reviewed_at"] is None:
        raise Conflict(f"break-glass account {name!r} was used and its use is not reviewed yet")

    def also(conn: Connection, token_id: str) -> None:
        catalog.break_glass.put(
            conn, {"name": name, "token_id": token_id, "state": "sealed", "created_at": utcnow(), "created_by": by}
        )
        catalog.audit.append(
            conn, subject=by, action="break-glass.create", resource=f"break-glass/{name}", outcome="sealed",
            detail={"severity": HIGH, "token": token_id},
        )  # fmt: skip

    # Expired at once (a zero lifetime): the token authenticates nothing until `use` opens it.
    return _issue(
        catalog,
        Role.ADMIN,
        None,
        (),
        f"break-glass {name}",
        timedelta(0),
        by,
        "",
        f"{BREAK_GLASS_SCOPE}={name}",
        also=also,
    )


def use(catalog: Catalog, token: str, *, reason: str, minutes: int, by: str, max_minutes: int = 240) -> dict[str, Any]:
    """Open the account whose sealed token this is, for `minutes`, stating why. Refusals are audited."""
    reason = " ".join(reason.split())
    if len(reason) < MIN_REASON_CHARS:
        raise InvalidInput(f"say why the glass is broken (at least {MIN_REASON_CHARS} characters)")
    if not 1 <= minutes <= max_minutes:
        raise InvalidInput(f"a break-glass use lasts 1 to {max_minutes} minutes")
    token_id, digest = parse_token(token)
    with catalog.write() as conn:
        row = catalog.tokens.get_in(conn, token_id)
        account = catalog.break_glass.by_token(conn, token_id)
        problem = ""
        if row is None or account is None or not hmac.compare_digest(row["secret_sha256"], digest):
            problem = "not a break-glass token"
        elif account["state"] != "sealed":
            problem = f"break-glass account {account['name']!r} is {account['state']}, not sealed"
        if problem:
            name = account["name"] if account else "?"
            catalog.audit.append(
                conn, subject=by, action="break-glass.open", resource=f"break-glass/{name}",
                outcome="refused", detail={"severity": HIGH, "reason": problem},
            )  # fmt: skip
        else:
            assert account is not None
            now = utcnow()
            until = now + timedelta(minutes=minutes)
            catalog.tokens.set_expiry(conn, token_id, until)
            catalog.break_glass.update(
                conn, account["name"], "sealed", state="open", opened_at=now, opened_by=by[:200], reason=reason[:1000],
                expires_at=until,
            )  # fmt: skip
            catalog.audit.append(
                conn, subject=by, action="break-glass.open", resource=f"break-glass/{account['name']}",
                outcome="ok", detail={"severity": HIGH, "reason": reason, "expires_at": until, "token": token_id},
            )  # fmt: skip
    if problem:  # raised after the commit, so that the refusal stays in the log
        raise Unauthenticated(problem)
    assert account is not None
    return {"name": account["name"], "token": token_id, "expires_at": until.isoformat()}


def close(catalog: Catalog, name: str, *, by: str) -> None:
    """Revoke the account's token for good (sealed or open); its use still awaits review."""
    with catalog.write() as conn:
        account = catalog.break_glass.get(name, conn)
        if account is None:
            raise NotFound(f"no break-glass account {name!r}")
        if account["state"] == "closed":
            raise Conflict(f"break-glass account {name!r} is already closed")
        catalog.tokens.revoke(conn, account["token_id"])
        catalog.break_glass.update(conn, name, account["state"], state="closed", closed_at=utcnow(), closed_by=by)
        catalog.audit.append(
            conn, subject=by, action="break-glass.close", resource=f"break-glass/{name}", outcome="ok",
            detail={"severity": HIGH, "was": account["state"], "used": account["opened_at"] is not None},
        )  # fmt: skip


def review(catalog: Catalog, name: str, *, note: str, by: str) -> None:
    """Record that a person reviewed what was done during the account's use (after it was closed)."""
    note = " ".join(note.split())
    if not note:
        raise InvalidInput("a review needs a note (what was checked, what was found)")
    with catalog.write() as conn:
        account = catalog.break_glass.get(name, conn)
        if account is None:
            raise NotFound(f"no break-glass account {name!r}")
        if account["opened_at"] is None:
            raise Conflict(f"break-glass account {name!r} was never used: nothing to review")
        if account["state"] != "closed":
            raise Conflict(f"close break-glass account {name!r} before reviewing its use")
        catalog.break_glass.update(
            conn, name, "closed", reviewed_at=utcnow(), reviewed_by=by[:200], review_note=note[:1000]
        )
        catalog.audit.append(
            conn, subject=by, action="break-glass.review", resource=f"break-glass/{name}", outcome="ok",
            detail={"severity": HIGH, "note": note, "opened_at": account["opened_at"], "reason": account["reason"]},
        )  # fmt: skip


def status(catalog: Catalog) -> list[dict[str, Any]]:
    """Every account with its state; an open one past its end reads `expired`, one whose token was revoked
    outside `close` reads `revoked`."""
    now = utcnow()
    out = []
    for a in catalog.break_glass.list_all():
        a = {k: _aware(v) if isinstance(v, datetime) else v for k, v in a.items()}
        if a["state"] == "open" and a["expires_at"] is not None and a["expires_at"] <= now:
            a["state"] = "expired"
        token = catalog.tokens.get(a["token_id"])
        if a["state"] != "closed" and (token is None or token["revoked_at"] is not None):
            a["state"] = "revoked"  # its token was revoked as a plain token: it can no longer be opened
        a["needs_review"] = a["opened_at"] is not None and a["reviewed_at"] is None
        out.append(a)
    return out
