"""The site key and the keyed, stateless pseudonyms derived from it.

Everything is HMAC-SHA256 under the site key, so two gateways holding the same key give the same
patient the same pseudonym and every UID the same replacement without sharing a mapping table, and
nobody without the key can reverse or confirm a guess.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import os
import secrets
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from medcloud.errors import ConfigError

KEY_BYTES = 32
MAX_SHIFT_DAYS = 3650


@dataclass(frozen=True)
class SiteKey:
    """32 secret bytes that stay at the hospital."""

    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.secret) < KEY_BYTES:
            raise ConfigError(f"site key must be {KEY_BYTES} bytes, got {len(self.secret)}")

    @classmethod
    def generate(cls, path: Path) -> SiteKey:
        """Create a new key file (mode 0600); refuses to overwrite an existing one."""
        key = cls(secrets.token_bytes(KEY_BYTES))
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise ConfigError(f"key file {path} already exists; refusing to overwrite it") from None
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(key.secret.hex() + "\n")
        return key

    @classmethod
    def load(cls, path: Path) -> SiteKey:
        """Read a hex key file; warns when others can read it."""
        try:
            st = path.stat()
            text = path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            raise ConfigError(f"key file {path} not found (create one with `medcloud keygen`)") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read key file {path}: {exc}") from None
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            warnings.warn(f"key file {path} is readable by group/others; chmod 600 it", UserWarning, stacklevel=2)
        try:
            secret = bytes.fromhex(text)
        except ValueError:
            raise ConfigError(f"key file {path} is not hex") from None
        if len(secret) < KEY_BYTES:
            raise ConfigError(f"key file {path} holds {len(secret)} bytes; need {KEY_BYTES}")
        return cls(secret)


class Pseudonymizer:
    """Keyed derivations, memoised per process (a series repeats the same UIDs and patient)."""

    def __init__(self, key: SiteKey) -> None:
        self._key = key.secret
        self._uids: dict[str, str] = {}
        self._patients: dict[str, str] = {}
        self._shifts: dict[str, int] = {}

    def _mac(self, domain: bytes, value: str) -> bytes:
        return hmac.new(self._key, domain + b"\x00" + value.encode("utf-8"), hashlib.sha256).digest()

    def uid(self, uid: str) -> str:
        """`2.25.<128-bit int>`: 44 characters at most, inside UI's 64."""
        got = self._uids.get(uid)
        if got is None:
            if len(self._uids) > 100_000:
                self._uids.clear()
            got = "2.25." + str(int.from_bytes(self._mac(b"uid", uid)[:16], "big"))
            self._uids[uid] = got
        return got

    def patient(self, patient_id: str) -> str:
        """Pseudonymous patient ID, also used as the patient name."""
        got = self._patients.get(patient_id)
        if got is None:
            digest = self._mac(b"patient", patient_id)[:10]
            got = "MC" + base64.b32encode(digest).decode("ascii").rstrip("=")
            if len(self._patients) > 100_000:
                self._patients.clear()
            self._patients[patient_id] = got
        return got

    def day_shift(self, patient_id: str) -> int:
        """Days to add to every date of this patient: -1 .. -MAX_SHIFT_DAYS."""
        got = self._shifts.get(patient_id)
        if got is None:
            n = int.from_bytes(self._mac(b"dateshift", patient_id)[:8], "big")
            got = -(1 + n % MAX_SHIFT_DAYS)
            if len(self._shifts) > 100_000:
                self._shifts.clear()
            self._shifts[patient_id] = got
        return got


def shift_da(value: str, days: int) -> str | None:
    """Shift one DA value (YYYYMMDD; legacy YYYY.MM.DD accepted); None if it is not a date."""
    v = value.strip().replace(".", "")
    if len(v) != 8 or not v.isdigit():
        return None
    try:
        d = dt.date(int(v[:4]), int(v[4:6]), int(v[6:8]))
        return (d + dt.timedelta(days=days)).strftime("%Y%m%d")
    except (ValueError, OverflowError):
        return None


def shift_dt(value: str, days: int) -> str | None:
    """Shift the date part of a DT value, keeping time and offset; partial dates become None."""
    v = value.strip()
    if len(v) < 8:
        return None
    head = shift_da(v[:8], days)
    return None if head is None else head + v[8:]
