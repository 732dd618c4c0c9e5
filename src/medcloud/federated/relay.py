"""The public key folder, relayed through the hub's API: which names exist and who may write each.

Sites never share a folder: each keeps its own copy of the public folder and `medcloud fl sync`
exchanges it through the hub (`/api/v1/fl/{federation}/public`). The hub relays but must not be able
to alter: what it hands out is checked at the site by the ceremony (signed manifests, confirmed
fingerprints, AAD-bound seals: `federated/ceremony.py`). The hub adds defence in depth on top:

- a name that says who wrote it (`identity-S.*`, `threshold.keyshare-S-for-*`,
  `threshold.release-*-from-S-to-*`, `threshold.link-S.*`, with their `.sig`) is accepted only from site S's token;
- every other name is written once, and only its first writer may publish a new version of it (a lead
  starting a new ceremony);
- names that look like secret keys are refused outright, so a mistyped folder cannot leak one.

Every version is kept (the hub stores it content-addressed) and every write is audited.
"""

from __future__ import annotations

import re

from medcloud.errors import InvalidInput

__all__ = ["MAX_PUBLIC_FILE_BYTES", "author_of", "validate_federation", "validate_public_name"]

# OpenFHE's threshold context with its evaluation keys is the largest public file (a few MB at N=2^14).
MAX_PUBLIC_FILE_BYTES = 128 * 1024**2

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,159}$")
_SITE = r"([A-Za-z0-9._-]{1,64})"
_AUTHORED: tuple[tuple[re.Pattern[str], int], ...] = (
    (re.compile(rf"^identity-{_SITE}\.(?:x25519|ed25519)\.pub$"), 1),
    (re.compile(rf"^threshold\.keyshare-{_SITE}-for-{_SITE}\.sealed(?:\.sig)?$"), 1),
    (re.compile(rf"^threshold\.release-{_SITE}-from-{_SITE}-to-{_SITE}\.sealed(?:\.sig)?$"), 2),
    (re.compile(rf"^threshold\.link-{_SITE}\.(?:json|sig)$"), 1),
)
# What the public folder never holds: the secret halves the site keeps in its own folder.
_SECRET = re.compile(r"(\.secret$|^identity\.(x25519|ed25519)$|private|\.key$|\.pem$|trusted-parties)", re.IGNORECASE)


def validate_federation(name: str) -> str:
    """A federation is named like a project (the sites' tokens must be granted it)."""
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", name) or name in {".", ".."}:
        raise InvalidInput(f"federation name {name!r} must be 1-64 letters, digits, '.', '_' or '-'")
    return name


def validate_public_name(name: str) -> str:
    """A plain file name of the public folder (no path, no hidden file), never a secret key's name."""
    if not _NAME.match(name) or ".." in name:
        raise InvalidInput(f"public file name {name!r} must be a plain file name (letters, digits, '.', '_', '-')")
    if _SECRET.search(name):
        raise InvalidInput(f"{name!r} looks like a secret key: the public folder never holds one")
    return name


def author_of(name: str) -> str | None:
    """The site a file's name says wrote it, or None for a name any first writer may claim."""
    for pattern, group in _AUTHORED:
        m = pattern.match(name)
        if m:
            return m.group(group)
    return None
