"""Character sets and the identifier scrubber for free text.

The scrubber is built per file from the header's own identifying values (names, IDs, dates, address,
institution, physicians) and removes every occurrence of them from text that is kept.
"""

from __future__ import annotations

import re
from functools import cache, lru_cache

REDACTED = "***"
# Bytes after which ISO 2022 escape state resets; over-including is harmless for decoding.
_DELIMS = {0x5C, 0x5E, 0x3D, 0x0D, 0x0A, 0x09, 0x0C}
_SIMPLE = {
    "": "latin_1",  # default repertoire; latin-1 round-trips any byte, so nothing is lost
    "ISO_IR 6": "latin_1",
    "ISO_IR 100": "latin_1",
    "ISO_IR 192": "utf_8",
    "ISO 2022 IR 6": "latin_1",
    "ISO 2022 IR 100": "latin_1",
}


class Charset:
    """Decode/encode one file's text per its Specific Character Set."""

    def __init__(self, terms: tuple[str, ...]) -> None:
        self.terms = terms
        self.simple: str | None = None
        self.encodings: list[str] = []
        if len(terms) <= 1 and (terms[0] if terms else "") in _SIMPLE:
            self.simple = _SIMPLE[terms[0] if terms else ""]
        else:
            from pydicom.charset import convert_encodings

            self.encodings = convert_encodings(list(terms) or [""])

    def decode(self, raw: bytes) -> str:
        if self.simple is not None:
            return raw.decode(self.simple, errors="replace")
        from pydicom.charset import decode_bytes

        return decode_bytes(raw, self.encodings, _DELIMS)

    def encode(self, text: str) -> bytes:
        if self.simple is not None:
            return text.encode(self.simple, errors="replace")
        from pydicom.charset import encode_string

        return encode_string(text, self.encodings)


@cache
def charset_for(raw: bytes) -> Charset:
    terms = tuple(t.strip() for t in raw.decode("ascii", errors="replace").split("\\"))
    # An empty first term means "default repertoire" in multi-valued ISO 2022 declarations.
    if terms and all(not t for t in terms):
        terms = ()
    return Charset(terms)


def name_parts(value: str) -> list[str]:
    """A PN value and its pieces: each component group (alphabetic, ideographic, phonetic), each
    component, and given+family in both orders, so "Taro Yamada" in a comment is caught too."""
    out: list[str] = []
    for group in value.split("="):
        comps = [c.strip() for c in group.split("^") if c.strip()]
        if not comps:
            continue
        out.append(group.strip("^ "))
        out.extend(comps)
        if len(comps) >= 2:
            out.append(f"{comps[1]} {comps[0]}")
            out.append(f"{comps[0]} {comps[1]}")
            out.append(f"{comps[0]}, {comps[1]}")
            out.append(f"{comps[0]}{comps[1]}")
    return out


def date_forms(value: str) -> list[str]:
    """A DA value as people type it into comments."""
    v = value.strip()
    if len(v) != 8 or not v.isdigit():
        return [v] if len(v) >= 4 else []
    y, m, d = v[:4], v[4:6], v[6:]
    return [v, f"{y}-{m}-{d}", f"{y}/{m}/{d}", f"{y}.{m}.{d}", f"{d}/{m}/{y}", f"{m}/{d}/{y}",
            f"{y}年{int(m)}月{int(d)}日", f"{y}年{m}月{d}日"]


class Scrubber:
    """Removes a fixed set of identifying strings from text, case-insensitively.

    Every file has its own needles, so compiling one big pattern per file would cost more than the
    rest of the file's processing. Instead a plain substring test picks the few needles present
    (usually none) and only those are compiled, cached by the set found. Latin needles match on word
    boundaries so "Li" does not eat "Lung"; ideographic scripts have no word boundaries.
    """

    def __init__(self, needles: set[str]) -> None:
        # Short numbers (a study ID of "12") would blank ordinary counts and sizes in descriptions.
        self._needles = tuple(sorted({
            n.strip().lower() for n in needles
            if len(n.strip()) >= 2 and not (n.strip().isdigit() and len(n.strip()) < 4)
        }))

    def __bool__(self) -> bool:
        return bool(self._needles)

    def clean(self, text: str) -> str | None:
        """The cleaned text, or None when nothing identifying was found."""
        low = text.lower()
        found = tuple(n for n in self._needles if n in low)
        if not found:
            return None
        new, n = _pattern(found).subn(REDACTED, text)
        return new if n else None


@lru_cache(maxsize=4096)
def _pattern(needles: tuple[str, ...]) -> re.Pattern[str]:
    parts = []
    for w in sorted(needles, key=len, reverse=True):
        esc = re.escape(w)
        parts.append(rf"(?<![0-9a-z]){esc}(?![0-9a-z])" if w.isascii() else esc)
    return re.compile("|".join(parts), re.IGNORECASE)
