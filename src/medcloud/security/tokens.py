"""Bearer tokens: printed once, stored only as a hash, checked in constant time, expiring and revocable.

A token reads `mct_<id>.<secret>`: the id finds the row, the 256-bit secret proves possession. The hub
keeps SHA-256(secret) only; a random 256-bit secret needs no slow hash.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy.engine import Connection

from medcloud.errors import InvalidInput, Unauthenticated
from medcloud.security.policy import Principal, Role
from medcloud.store import Catalog, utcnow

PREFIX = "mct_"
_TOKEN = re.compile(r"^mct_([0-9a-f]{16})\.([A-Za-z0-9_-]{43})$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
DEFAULT_PROJECT = "default"
_SCOPE_ID = re.compile(r"^[0-9a-f]{16,64}$")
# A job token outlives its job's timeout by a little, and is revoked when the job ends.
MAX_JOB_TOKEN_LIFETIME = timedelta(days=7)


# Compared against when a token id is unknown, so that the refusal costs what a wrong secret costs.
_UNKNOWN_DIGEST = hashlib.sha256(b"no such token").hexdigest()


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


# The longest lifetime a token may be given; a token meant to last forever says `never`.
MAX_LIFETIME = timedelta(days=100 * 365)
_UNITS = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}


def parse_duration(text: str) -> timedelta | None:
    """A token lifetime: '90d', '12h', '30m', '2w' (a plain number is days), or 'never' (None).

    Zero is refused (a token that was never valid is a mistake, and "no expiry" must be said as
    `never`), and so is anything over MAX_LIFETIME.
    """
    spelled = text.strip().lower()
    if spelled == "never":
        return None
    m = re.fullmatch(r"(\d{1,12})\s*([dhmw]?)", spelled)
    if not m:
        raise InvalidInput(f"cannot read duration {text!r}: use e.g. 90d, 12h, 30m or never")
    n, unit = int(m.group(1)), _UNITS[m.group(2) or "d"]
    if n == 0:
        raise InvalidInput("a lifetime of zero is refused: give e.g. 90d, or never for a token that does not expire")
    if n > MAX_LIFETIME // unit:
        raise InvalidInput(f"lifetime {text!r} is over {MAX_LIFETIME.days} days: give a shorter one, or never")
    return n * unit


def validate_name(kind: str, value: str) -> str:
    if not _NAME.match(value):
        raise InvalidInput(f"{kind} name {value!r} must be 1-64 letters, digits, '.', '_' or '-'")
    return value


class UnknownToken(Unauthenticated):
    """A well-formed token whose id is unknown or whose secret is wrong: a guess (counted for lockout)."""


class NotInMemory(Exception):
    """`verify(..., memory_only=True)` would have to read or write the catalog for this token (not a fresh
    cache hit with the right secret, or a person's session whose use is tracked): nothing was decided;
    verify it again where a catalog read may block (a worker thread)."""


@dataclass(frozen=True)
class IssuedToken:
    token: str  # shown once, never stored
    principal: Principal


def issue_token(
    catalog: Catalog,
    *,
    role: Role | str,
    site: str | None = None,
    projects: list[str] | tuple[str, ...] = (),
    label: str = "",
    expires_in: timedelta | None = timedelta(days=365),
    issued_by: str = "cli",
    client: str = "",
) -> IssuedToken:
    """Create a token, store its hash, and audit the issue in the same transaction."""
    role = Role(role)
    projects = tuple(validate_name("project", p) for p in projects)
    if role is Role.SITE:
        if not site:
            raise InvalidInput("a site token needs --site")
        validate_name("site", site)
        if not projects:
            projects = (DEFAULT_PROJECT,)
    elif site:
        raise InvalidInput(f"--site applies to site tokens only, not to role '{role.value}'")
    if role is Role.RESEARCHER and not projects:
        raise InvalidInput("a researcher token needs at least one --project (deny by default)")
    if role is Role.JOB:
        raise InvalidInput("job tokens are issued by the hub to one running job, never by hand")
    return _issue(catalog, role, site, projects, label, expires_in, issued_by, client)


def issue_job_token(
    catalog: Catalog,
    *,
    job_id: str,
    dataset_id: str,
    projects: tuple[str, ...],
    lifetime: timedelta,
    issued_by: str,
) -> IssuedToken:
    """A short-lived token for one running job: its dataset version (read) and its artefacts (write)."""
    if not _SCOPE_ID.match(job_id) or not _SCOPE_ID.match(dataset_id):
        raise InvalidInput("a job token needs a job id and a dataset version id")
    if not timedelta(0) < lifetime <= MAX_JOB_TOKEN_LIFETIME:
        raise InvalidInput(f"a job token lives at most {MAX_JOB_TOKEN_LIFETIME}")
    scope = f"job={job_id};dataset={dataset_id}"
    return _issue(catalog, Role.JOB, None, projects, f"job {job_id}", lifetime, issued_by, "", scope)


def _issue(
    catalog: Catalog,
    role: Role,
    site: str | None,
    projects: tuple[str, ...],
    label: str,
    expires_in: timedelta | None,
    issued_by: str,
    client: str,
    scope: str | None = None,
    kind: str = "machine",
    person: str | None = None,
    also: Callable[[Connection, str], None] | None = None,
) -> IssuedToken:
    """Store a new token; `also(conn, token_id)` runs in the same write transaction (break-glass rows)."""
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    now = utcnow()
    if expires_in is not None and expires_in > MAX_LIFETIME:
        raise InvalidInput(f"a token lives at most {MAX_LIFETIME.days} days, or never expires")
    # `timedelta(0)` is falsy: test for None, so that zero means expired at once rather than never.
    expires_at = now + expires_in if expires_in is not None else None
    row = {
        "id": token_id,
        "secret_sha256": _hash(secret),
        "role": role.value,
        "site": site,
        "projects": ",".join(projects),
        "label": label[:200],
        "created_at": now,
        "expires_at": expires_at,
    }
    if scope is not None:
        row["scope"] = scope
    if kind != "machine":
        row["kind"] = kind
        row["person"] = person
    with catalog.write() as conn:
        catalog.tokens.insert(conn, row)
        catalog.audit.append(
            conn,
            subject=issued_by,
            action="token.create",
            resource=f"token/{token_id}",
            outcome="ok",
            client=client,
            detail={
                "role": role.value, "site": site, "projects": list(projects), "expires_at": expires_at,
            } | ({"scope": scope} if scope else {}),
        )  # fmt: skip
        if also is not None:
            also(conn, token_id)
    job, dataset, glass = _parse_scope(scope)
    principal = Principal(
        token_id, role, site, frozenset(projects), label, expires_at, job, dataset, glass, kind=kind, person=person
    )
    return IssuedToken(f"{PREFIX}{token_id}.{secret}", principal)


def _parse_scope(scope: str | None) -> tuple[str | None, str | None, str | None]:
    """(job, dataset, break-glass account) from a stored scope `job=<id>;dataset=<id>` or
    `break-glass=<name>`; Nones without one."""
    parts = dict(p.split("=", 1) for p in (scope or "").split(";") if "=" in p)
    return parts.get("job"), parts.get("dataset"), parts.get(BREAK_GLASS_SCOPE)


BREAK_GLASS_SCOPE = "break-glass"


def parse_token(token: str) -> tuple[str, str]:
    """(token id, SHA-256 of its secret) of a well-formed token, else Unauthenticated."""
    m = _TOKEN.match(token.strip())
    if not m:
        raise Unauthenticated("malformed bearer token")
    return m.group(1), _hash(m.group(2))


def _as_aware(dt: datetime | None) -> datetime | None:
    if dt is not None and dt.tzinfo is None:  # SQLite returns naive datetimes
        return dt.replace(tzinfo=timezone.utc)
    return dt


class TokenVerifier:
    """Checks bearer tokens against the catalog, caching good ones briefly (revocation here is immediate)."""

    def __init__(
        self, catalog: Catalog, cache_seconds: float = 5.0, *, session_idle_seconds: float | None = None
    ) -> None:
        self._catalog = catalog
        self._ttl = cache_seconds
        self._cache: dict[str, tuple[float, str, Principal]] = {}
        self._lock = threading.Lock()
        # People's sessions: refused once unused for `session_idle_seconds`. Each use is remembered here;
        # the row's last_used_at is written at most every `_touch_every` seconds per token and process,
        # so other workers see the use within that time (not a write per request).
        self._idle = session_idle_seconds
        self._touch_every = min(30.0, session_idle_seconds / 4) if session_idle_seconds else 30.0
        self._last_used: dict[str, datetime] = {}
        self._written: dict[str, float] = {}

    def verify(self, token: str, *, use: bool = True, memory_only: bool = False) -> Principal:
        """The token's principal, or Unauthenticated. `use=False`: a person's session is still refused once
        idle, but this request is not counted as a use (the page's own session refresh is not activity).

        `memory_only`: answer only from the cache, for the event loop, or raise `NotInMemory` before touching
        the catalog (a miss, a stale entry, a wrong secret, or a person's session with an idle timeout, whose
        use may be written); the caller then verifies again in a worker thread, with the same result the
        long way. Everything answered here is what the long way answers for a cache hit."""
        m = _TOKEN.match(token.strip())
        if not m:
            raise Unauthenticated("malformed bearer token")
        token_id, secret = m.groups()
        digest = _hash(secret)
        now_mono = time.monotonic()
        with self._lock:
            hit = self._cache.get(token_id)
        row: dict[str, Any] | None = None
        if hit and now_mono - hit[0] < self._ttl and hmac.compare_digest(hit[1], digest):
            principal = hit[2]
        else:
            if memory_only:
                raise NotInMemory(token_id)
            row = self._catalog.tokens.get(token_id)
            # An unknown id and a wrong secret take the same steps and get the same answer.
            stored = row["secret_sha256"] if row is not None else _UNKNOWN_DIGEST
            if not hmac.compare_digest(stored, digest) or row is None:
                raise UnknownToken("unknown token")
            if row["revoked_at"] is not None:
                # The caller holds the real secret: the refusal is audited under the token's holder.
                raise Unauthenticated("token revoked", subject=self._principal(row).subject)
            principal = self._principal(row)
            if principal.break_glass is None:  # a break-glass account is read afresh: closing it is immediate
                with self._lock:
                    self._cache[token_id] = (now_mono, digest, principal)
        if principal.expires_at is not None and principal.expires_at <= utcnow():
            if principal.break_glass is not None:
                raise Unauthenticated("break-glass account is sealed or its use ended", subject=principal.subject)
            raise Unauthenticated("token expired", subject=principal.subject)
        if principal.kind == "session" and self._idle:
            if memory_only:
                raise NotInMemory(token_id)
            self._check_idle(principal, row, use=use)
        return principal

    def _check_idle(self, principal: Principal, row: dict[str, Any] | None, *, use: bool = True) -> None:
        """Refuse a person's session unused for longer than the idle timeout; else note this use (if `use`)."""
        assert self._idle is not None
        token_id, now = principal.token_id, utcnow()
        with self._lock:
            last = self._last_used.get(token_id)
        for attempt in range(2):
            if row is not None:
                stored = _as_aware(row.get("last_used_at")) or _as_aware(row["created_at"])
                last = stored if last is None or (stored is not None and stored > last) else last
            if last is not None and (now - last).total_seconds() <= self._idle:
                break
            if attempt == 0:
                # Another worker may have seen it used since: read the row before refusing.
                row = self._catalog.tokens.get(token_id)
                if row is None:
                    raise Unauthenticated("unknown token")
        else:
            raise Unauthenticated(
                f"session idle for more than {self._idle:g} s: sign in again", subject=principal.subject
            )
        if not use:
            return
        mono = time.monotonic()
        with self._lock:
            self._last_used[token_id] = now
            written = self._written.get(token_id)
            due = written is None or mono - written >= self._touch_every
            if due:
                self._written[token_id] = mono
        if due:
            self._catalog.tokens.touch(token_id, now)

    @staticmethod
    def _principal(row: dict[str, Any]) -> Principal:
        projects = frozenset(p for p in str(row["projects"]).split(",") if p)
        job, dataset, glass = _parse_scope(row.get("scope"))
        role = Role(row["role"])
        if role is Role.JOB and (job is None or dataset is None):
            raise Unauthenticated("job token without its scope")  # never widen a job token by accident
        return Principal(
            token_id=row["id"],
            role=role,
            site=row["site"],
            projects=projects,
            label=row["label"],
            expires_at=_as_aware(row["expires_at"]),
            job=job,
            dataset=dataset,
            break_glass=glass,
            kind=row.get("kind") or "machine",
            person=row.get("person"),
            mfa_at=_as_aware(row.get("mfa_at")),
        )

    def forget(self, token_id: str) -> None:
        with self._lock:
            self._cache.pop(token_id, None)
            self._last_used.pop(token_id, None)
            self._written.pop(token_id, None)


def revoke_token(catalog: Catalog, verifier: TokenVerifier | None, token_id: str, *, by: str, client: str = "") -> bool:
    with catalog.write() as conn:
        done = catalog.tokens.revoke(conn, token_id)
        catalog.audit.append(
            conn,
            subject=by,
            action="token.revoke",
            resource=f"token/{token_id}",
            outcome="ok" if done else "not-found",
            client=client,
        )
    if verifier is not None:
        verifier.forget(token_id)
    return done
