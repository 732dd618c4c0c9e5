"""The scrubber that removes a file's own identifying values from free text (character sets: `formats.charset`).

The scrubber is built per file from the header's own identifying values (names, IDs, dates, address,
institution, physicians) and removes every occurrence of them from text that is kept.
"""

from __future__ import annotations

import re
from functools import lru_cache

REDACTED = "***"


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
    return [
        v,
        f"{y}-{m}-{d}",
        f"{y}/{m}/{d}",
        f"{y}.{m}.{d}",
        f"{d}/{m}/{y}",
        f"{m}/{d}/{y}",
        f"{y}年{int(m)}月{int(d)}日",
        f"{y}年{m}月{d}日",
    ]


class Scrubber:
    """Removes a fixed set of identifying strings from text, case-insensitively.

    Every file has its own needles, so compiling one big pattern per file would cost more than the
    rest of the file's processing. Instead a plain substring test picks the few needles present
    (usually none) and only those are compiled, cached by the set found. Latin needles match on word
    boundaries so "Li" does not eat "Lung"; ideographic scripts have no word boundaries.
    """

    def __init__(self, needles: set[str]) -> None:
        # Short numbers (a study ID of "12") would blank ordinary counts and sizes in descriptions.
        self._needles = tuple(
            sorted(
                {
                    n.strip().lower()
                    for n in needles
                    if len(n.strip()) >= 2 and not (n.strip().isdigit() and len(n.strip()) < 4)
                }
            )
        )

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
