"""Lockout after repeated failed authentications: `lockout_threshold` failures of one key within
`lockout_window_seconds` lock that key for `lockout_seconds`, and the lock is audited.

Keys are what an attacker cannot use against somebody else:
- `addr:<client address>` for bearer-token guesses (a malformed token, an unknown id or a wrong secret).
  The token id is never locked: ids are not secret (they appear in audit trails and token lists), so
  locking by id would let anyone lock a site's gateway out by sending wrong secrets for its id, and a
  256-bit secret cannot be guessed anyway. Locking the address stops the noise and the enumeration.
- `person:<subject>` for failed passkey ceremonies. Only a holder of that person's signed-in session can
  fail them, so an outsider cannot lock a person out.

Which keys are locked is read from the catalog at most once a second per process (one cheap query), so
checking a lock on every request costs nothing measurable, and every hub process sees a lock within a
second of it being set.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

from medcloud.errors import TooManyAttempts
from medcloud.store import Catalog, utcnow

REFRESH_SECONDS = 1.0


class LockoutBook:
    """Counts failures per key and refuses locked keys."""

    def __init__(
        self,
        catalog: Catalog,
        *,
        threshold: int,
        window_seconds: int,
        lock_seconds: int,
        exempt_addresses: tuple[str, ...] | list[str] = (),
    ) -> None:
        self._catalog = catalog
        self.threshold = threshold
        self.window = timedelta(seconds=window_seconds)
        self.lock_for = timedelta(seconds=lock_seconds)
        self._exempt = frozenset(f"addr:{a}" for a in exempt_addresses)
        self._locked: dict[str, datetime] = {}
        self._loaded = -1e9
        self._guard = threading.Lock()

    def exempt(self, key: str) -> bool:
        return key in self._exempt

    def checks_from_memory(self, key: str) -> bool:
        """Whether `check(key)` would be answered without reading the catalog (its copy is fresh)."""
        if self.exempt(key):
            return True
        with self._guard:
            return time.monotonic() - self._loaded < REFRESH_SECONDS

    def locked_until(self, key: str) -> datetime | None:
        """When the lock on `key` ends, or None if it is not locked."""
        now_mono = time.monotonic()
        with self._guard:
            stale = now_mono - self._loaded >= REFRESH_SECONDS
        if stale:
            active = self._catalog.lockouts.active(utcnow())
            with self._guard:
                self._locked, self._loaded = active, now_mono
        with self._guard:
            until = self._locked.get(key)
        if until is None:
            return None
        if until.tzinfo is None:  # SQLite returns naive datetimes
            until = until.replace(tzinfo=timezone.utc)
        return until if until > utcnow() else None

    def check(self, key: str) -> None:
        """Refuse a locked key (429), with the same answer whatever the key."""
        until = None if self.exempt(key) else self.locked_until(key)
        if until is not None:
            wait = max(1, int((until - utcnow()).total_seconds()) + 1)
            raise TooManyAttempts("too many failed attempts: try again later", retry_after=wait)

    def fail(self, key: str, *, client: str = "", reason: str = "") -> bool:
        """Count one failure of `key`; True if it now locks (audited as `auth.lockout`)."""
        if self.exempt(key):
            return False
        now = utcnow()
        cat = self._catalog
        with cat.write() as conn:
            count = cat.lockouts.fail(conn, key, now, now - self.window)
            if count < self.threshold:
                return False
            until = now + self.lock_for
            cat.lockouts.lock(conn, key, until)
            cat.audit.append(
                conn,
                subject="hub",
                action="auth.lockout",
                resource=key[:200],
                outcome="locked",
                client=client,
                detail={"failures": count, "window_s": int(self.window.total_seconds()),
                        "until": until.isoformat(), "reason": reason[:100]},
            )  # fmt: skip
        with self._guard:
            self._locked[key] = until
        return True

    def unlock(self, key: str, *, by: str, client: str = "") -> bool:
        cat = self._catalog
        with cat.write() as conn:
            done = cat.lockouts.unlock(conn, key)
            cat.audit.append(
                conn, subject=by, action="auth.unlock", resource=key[:200], outcome="ok" if done else "not-found",
                client=client,
            )  # fmt: skip
        with self._guard:
            self._locked.pop(key, None)
        return done
