"""One cleaner for identifying free text: DICOM descriptors and comments now, report text later.

`clean(text)` removes person names (kanji, kana, Latin), phone numbers, e-mail and URLs, IDs and long
digit runs, addresses (Japanese and Western), dates (Western, 年月日 and era forms; removed, shifted
or kept like the engine's dates) and ages over 89, plus any strings the caller already knows identify
the patient (`known`, e.g. the file's own header values). When it cannot clean a text with confidence
(a script it cannot analyse, nothing but identifiers) it says the whole field must go.

Results are cached per distinct (text, date handling): descriptors repeat across a series. The
Japanese analyser is loaded only when a text contains kana or kanji.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal, Protocol

from medcloud.deid.freetext import names, patterns

REDACTED = "***"
DateMode = Literal["remove", "shift", "keep"]

# A field whose identifiers make up more than this share of its characters is removed whole: what is
# left is mostly what the finders missed.
MAX_REDACTED_SHARE = 0.7


# Longer text is not analysed but removed: no field a descriptor or a report needs is this long.
MAX_CHARS = 200_000
CACHE_MAX_CHARS = 2_048


class KnownValues(Protocol):
    """Anything that removes a fixed set of identifying strings (the engine's per-file Scrubber)."""

    def clean(self, text: str) -> str | None: ...


@dataclass(frozen=True)
class Cleaned:
    """A cleaned text and the kinds of identifier removed; text None means "remove the whole field"."""

    text: str | None
    kinds: frozenset[str]

    @property
    def remove(self) -> bool:
        return self.text is None

    @property
    def changed(self) -> bool:
        return self.text is None or bool(self.kinds)


_UNCHANGED = frozenset[str]()


def clean(
    text: str,
    *,
    known: KnownValues | None = None,
    dates: DateMode = "remove",
    shift_days: int = 0,
    max_share: float = MAX_REDACTED_SHARE,
) -> Cleaned:
    """Clean one free-text value of every kind of identifier (see the module docstring).

    `max_share`: a text whose identifiers cover more than this share of it is removed whole (1 turns
    that off; what is left is then kept however little it is)."""
    kinds: set[str] = set()
    if known is not None:
        got = known.clean(text)
        if got is not None:
            text = got
            kinds.add("known")
    general = _clean_cached(text, dates, shift_days if dates == "shift" else 0, max_share)
    if not kinds:
        return general
    if general.text is None:
        return Cleaned(None, general.kinds | kinds)
    if _only_redactions(general.text):
        return Cleaned(None, general.kinds | kinds)
    return Cleaned(general.text, general.kinds | kinds)


def _supported(ch: str) -> bool:
    if ch.isascii() or not ch.isalpha():
        return True
    name = unicodedata.name(ch, "")
    return name.startswith(("LATIN", "GREEK", "CJK", "HIRAGANA", "KATAKANA", "FULLWIDTH", "HALFWIDTH"))


def _only_redactions(text: str) -> bool:
    rest = text.replace(REDACTED, "")
    return not any(c.isalnum() for c in rest)


def _clean_cached(text: str, dates: DateMode, shift_days: int, max_share: float) -> Cleaned:
    """Short texts (descriptors, which repeat) are cached; long ones (reports) are not kept in memory."""
    if len(text) <= CACHE_MAX_CHARS:
        return _clean_short(text, dates, shift_days, max_share)
    return _clean_uncached(text, dates, shift_days, max_share)


@lru_cache(maxsize=8192)
def _clean_short(text: str, dates: DateMode, shift_days: int, max_share: float) -> Cleaned:
    return _clean_uncached(text, dates, shift_days, max_share)


def _clean_uncached(text: str, dates: DateMode, shift_days: int, max_share: float) -> Cleaned:
    if len(text) > MAX_CHARS:
        return Cleaned(None, frozenset({"too_long"}))
    if not text.strip():
        return Cleaned(text, _UNCHANGED)
    if not text.isascii() and not all(_supported(c) for c in text):
        # Hangul, Cyrillic, Arabic...: no analyser here can tell a name from a word.
        return Cleaned(None, frozenset({"unsupported_script"}))
    try:
        spans = find(text, dates=dates, shift_days=shift_days)
    except ImportError:  # pragma: no cover - sudachipy is a dependency; a broken install must not leak
        return Cleaned(None, frozenset({"no_analyser"}))
    if not spans:
        return Cleaned(text, _UNCHANGED)
    out, kinds, redacted = _apply(text, spans)
    if _only_redactions(out) or redacted / max(1, len(text.strip())) > max_share:
        return Cleaned(None, frozenset(kinds))
    return Cleaned(out, frozenset(kinds))


def find(text: str, *, dates: DateMode = "remove", shift_days: int = 0) -> list[patterns.Span]:
    """Where the identifiers are: `(start, end, kind, replacement)` spans on `text`, unmerged."""
    folded = patterns.fold(text)
    spans = patterns.find_shaped(folded, dates, shift_days)
    if names.has_japanese(folded):
        spans.extend(names.japanese_spans(folded))
    if re.search(r"[A-Za-z]", folded):
        spans.extend(names.latin_spans(folded))
        # A house number before a removed street or place name is part of the address ("8 Rue de Rivoli").
        for s, _e, kind, _r in list(spans):
            if kind in ("name", "address"):
                lo = max(0, s - 24)
                m = _HOUSE_NUMBER.search(folded[lo:s])
                if m:
                    spans.append((lo + m.start(), s, "address", None))
        # Particles inside a removed name or place ("Rue de Rivoli", "Ludwig van Beethoven") go with it.
        ends = {e for _s, e, k, _r in spans if k in ("name", "address")}
        starts = {s for s, _e, k, _r in spans if k in ("name", "address")}
        for m in _PARTICLE.finditer(folded):
            if m.start() in ends and m.end() in starts:
                spans.append((m.start(), m.end(), "name", None))
    return spans


_PARTICLE = re.compile(r"\s+(?:de|del|della|di|du|des|la|le|van|von|der|den|da|dos|das|y|bin|al|el)\s+", re.I)


_HOUSE_NUMBER = re.compile(
    r"(?<![\w.\-])\d{1,5}[A-Za-z]?,?\s+(?:(?:rue|via|calle|avenida|viale|piazza|plaza|chemin)\s+)?$", re.I
)


def _apply(text: str, spans: list[patterns.Span]) -> tuple[str, set[str], int]:
    """Replace spans; overlapping spans merge into one redaction (a replacement survives only alone)."""
    merged: list[patterns.Span] = []
    for s, e, kind, repl in sorted(spans, key=lambda sp: (sp[0], -sp[1])):
        touching = merged and s == merged[-1][1] and repl is None and merged[-1][3] is None
        if merged and (s < merged[-1][1] or touching):
            ls, le, lk, lr = merged[-1]
            if lk == "date" and lr is not None and e <= le:
                continue  # "20240401" is a date being shifted, not also an ID to redact
            same = (s, e) == (ls, le) and repl is not None and lr is not None
            merged[-1] = (ls, max(le, e), lk if lr is None or repl is not None else kind, lr if same else None)
            continue
        merged.append((s, e, kind, repl))
    parts: list[str] = []
    kinds: set[str] = set()
    pos = redacted = 0
    for s, e, kind, repl in merged:
        parts.append(text[pos:s])
        parts.append(REDACTED if repl is None else repl)
        kinds.add(kind)
        redacted += (e - s) if repl is None else 0
        pos = e
    parts.append(text[pos:])
    return "".join(parts), kinds, redacted


__all__ = ["REDACTED", "Cleaned", "DateMode", "KnownValues", "clean", "find"]
