"""Specific Character Set (0008,0005): decode and encode one file's text as it declares."""

from __future__ import annotations

import re
from functools import lru_cache

__all__ = ["Charset", "charset_for"]

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
# A declaration has a few defined terms of at most 16 characters (CS). The value comes from the upload,
# so only that much of it is read: the cache key, and the work of resolving terms, stay small.
_MAX_TERMS = 8
_TERM_CHARS = 16
# Code String repertoire (PS3.5 6.2): a term with anything else (a NUL, a control byte) names no character
# set; it is read as the default repertoire, as pydicom reads an unknown one, never handed to codecs.
_CODE_STRING = re.compile(r"[A-Z0-9 _]*")


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
        """Text of a value in this character set (unknown bytes replaced, never an error)."""
        if self.simple is not None:
            return raw.decode(self.simple, errors="replace")
        from pydicom.charset import decode_bytes

        return decode_bytes(raw, self.encodings, _DELIMS)

    def encode(self, text: str) -> bytes:
        """Bytes of `text` in this character set."""
        if self.simple is not None:
            return text.encode(self.simple, errors="replace")
        from pydicom.charset import encode_string

        return encode_string(text, self.encodings)


@lru_cache(maxsize=64)
def _cached(terms: tuple[str, ...]) -> Charset:
    return Charset(terms)


_VALUE_KEY_MAX = _MAX_TERMS * (_TERM_CHARS + 1)  # longer values are read term by term each time


def charset_for(raw: bytes) -> Charset:
    """The Charset a (0008,0005) value declares (its first 8 terms); a bounded cache keeps common ones.

    Every file of an upload declares one, nearly always the same bytes: those are looked up as written
    before any term is parsed (this runs for each file at ingest and for each file's DICOM JSON).
    """
    raw = bytes(raw)
    return _by_value(raw) if len(raw) <= _VALUE_KEY_MAX else _parse(raw)


@lru_cache(maxsize=256)  # the declarations seen, as written: most archives use two or three
def _by_value(raw: bytes) -> Charset:
    return _parse(raw)


def _parse(raw: bytes) -> Charset:
    values = raw.decode("ascii", errors="replace").split("\\", _MAX_TERMS)[:_MAX_TERMS]
    terms = tuple(t if _CODE_STRING.fullmatch(t) else "" for t in (v.strip()[:_TERM_CHARS] for v in values))
    # An empty first term means "default repertoire" in multi-valued ISO 2022 declarations.
    if terms and all(not t for t in terms):
        terms = ()
    return _cached(terms)
