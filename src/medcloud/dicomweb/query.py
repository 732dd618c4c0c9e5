"""QIDO-RS query parameters (PS3.18 section 8.3.4) to a `QidoQuery`: matching keys, includefield, paging.

Values arrive percent-decoded (Starlette decodes UTF-8, so `%2C`, `%5E`, `%2A` and kanji come in as
characters). Only attributes the catalog can answer are matching keys; any other key is InvalidInput,
so a client never mistakes an ignored filter for an empty match.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from enum import Enum

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

from medcloud.errors import InvalidInput

__all__ = ["MAX_LIMIT", "Level", "Match", "QidoQuery", "check_path_uid", "parse_qido", "resolve_attribute"]

MAX_LIMIT = 1000


class Level(str, Enum):
    STUDY = "study"
    SERIES = "series"
    INSTANCE = "instance"


@dataclass(frozen=True)
class Match:
    """One matching key: `kind` is uids, values, text (wildcard pattern), date (range), int or empty.

    `empty` is an attribute the catalog holds no value for: only a universal match matches it.
    """

    keyword: str
    kind: str
    values: tuple[str, ...] = ()
    date_from: date | None = None
    date_to: date | None = None
    number: int | None = None


# keyword -> (kind, lowest level at which it is a matching key)
_KEYS: dict[str, tuple[str, Level]] = {
    "StudyInstanceUID": ("uids", Level.STUDY),
    "PatientID": ("text", Level.STUDY),
    "PatientName": ("text", Level.STUDY),
    "StudyDate": ("date", Level.STUDY),
    "StudyDescription": ("text", Level.STUDY),
    "ModalitiesInStudy": ("values", Level.STUDY),
    "AccessionNumber": ("empty", Level.STUDY),
    "StudyTime": ("empty", Level.STUDY),
    "StudyID": ("empty", Level.STUDY),
    "ReferringPhysicianName": ("empty", Level.STUDY),
    "PatientBirthDate": ("empty", Level.STUDY),
    "SeriesInstanceUID": ("uids", Level.SERIES),
    "Modality": ("values", Level.SERIES),
    "SeriesNumber": ("int", Level.SERIES),
    "SeriesDescription": ("text", Level.SERIES),
    "BodyPartExamined": ("text", Level.SERIES),
    "SeriesDate": ("empty", Level.SERIES),
    "SOPInstanceUID": ("uids", Level.INSTANCE),
    "SOPClassUID": ("uids", Level.INSTANCE),
    "InstanceNumber": ("int", Level.INSTANCE),
}
_ORDER = {Level.STUDY: 0, Level.SERIES: 1, Level.INSTANCE: 2}
_CONTROL = frozenset({"limit", "offset", "includefield", "fuzzymatching"})
_HEX_TAG = re.compile(r"^[0-9A-Fa-f]{8}$")
_UID = re.compile(r"^[0-9.]{1,64}$")
_DATE = re.compile(r"^(\d{8})?(-)?(\d{8})?$")


@dataclass(frozen=True)
class QidoQuery:
    """A parsed QIDO-RS request: matching keys by keyword, extra attributes to return, and the page."""

    level: Level
    matches: tuple[Match, ...] = ()
    include: frozenset[str] = frozenset()
    include_all: bool = False
    limit: int = MAX_LIMIT
    offset: int = 0
    warnings: tuple[str, ...] = field(default=())

    def match(self, keyword: str) -> Match | None:
        """The matching key for `keyword`, if the query has one."""
        return next((m for m in self.matches if m.keyword == keyword), None)


def resolve_attribute(name: str) -> str:
    """A keyword for an attribute named by keyword or by 8 hex digits; InvalidInput if unknown."""
    if _HEX_TAG.match(name):
        keyword = keyword_for_tag(int(name, 16))
        if keyword:
            return str(keyword)
        raise InvalidInput(f"unknown attribute tag {name} (private and retired tags cannot be queried)")
    if tag_for_keyword(name) is not None:
        return name
    raise InvalidInput(f"unknown attribute {name[:64]!r}: give a DICOM keyword or 8 hex digits")


@functools.lru_cache(maxsize=8192)  # keywords come from the DICOM dictionary: a bounded set
def attribute_vr(keyword: str) -> str:
    """The dictionary VR of a keyword (the first one where the dictionary lists several)."""
    tag = tag_for_keyword(keyword)
    assert tag is not None
    return str(dictionary_VR(tag)).split(" or ")[0]


def _split_list(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in re.split(r"[\\,]", value) if v.strip())


def _date(text: str, keyword: str) -> date:
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except ValueError:
        raise InvalidInput(f"{keyword}: {text!r} is not a date (YYYYMMDD)") from None


def _parse_match(keyword: str, kind: str, value: str) -> Match | None:
    """A Match for one key=value, or None for a universal match (empty value or '*')."""
    value = value.strip()
    if value in ("", "*"):
        return None
    if kind == "empty":
        return Match(keyword, "empty", (value,))
    if kind == "uids":
        uids = _split_list(value)
        bad = [u for u in uids if not _UID.match(u)]
        if bad:
            raise InvalidInput(f"{keyword}: {bad[0][:70]!r} is not a UID (digits and dots, at most 64)")
        return Match(keyword, "uids", uids)
    if kind == "values":
        return Match(keyword, "values", tuple(v.upper() for v in _split_list(value)))
    if kind == "int":
        try:
            return Match(keyword, "int", number=int(value))
        except ValueError:
            raise InvalidInput(f"{keyword}: {value[:20]!r} is not an integer") from None
    if kind == "date":
        compact = value.replace(" ", "")
        m = _DATE.match(compact)
        if m is None or compact == "-" or (m.group(2) is None and m.group(3) is not None):
            raise InvalidInput(f"{keyword}: {value[:30]!r} is not a date or range (YYYYMMDD, A-B, A-, -B)")
        lo = _date(m.group(1), keyword) if m.group(1) else None
        hi = _date(m.group(3), keyword) if m.group(3) else None
        if m.group(2) is None:
            hi = lo
        if lo and hi and lo > hi:
            raise InvalidInput(f"{keyword}: the range {value!r} ends before it starts")
        return Match(keyword, "date", date_from=lo, date_to=hi)
    if len(value) > 256:
        raise InvalidInput(f"{keyword}: value longer than 256 characters")
    return Match(keyword, "text", (value,))


def _int_param(name: str, values: list[str], low: int) -> int:
    if len(values) > 1:
        raise InvalidInput(f"{name} is given more than once")
    try:
        number = int(values[0])
    except ValueError:
        raise InvalidInput(f"{name} must be an integer, not {values[0][:20]!r}") from None
    if number < low:
        raise InvalidInput(f"{name} must be at least {low}")
    return number


_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


def check_path_uid(value: str, what: str) -> str:
    """A UID from a URL path: at most 64 printable characters (stored UIDs are not all well formed)."""
    if not value or len(value) > 64 or not value.isascii() or not value.isprintable() or " " in value:
        raise InvalidInput(f"{what} {value[:70]!r} is not a UID")
    return value


def parse_qido(level: Level, params: Iterable[tuple[str, str]], *, fixed: dict[str, str] | None = None) -> QidoQuery:
    """Parse query parameters for a search at `level`; `fixed` holds UIDs taken from the path."""
    grouped: dict[str, list[str]] = {}
    for name, value in params:
        if _CONTROL_CHARS.search(name) or _CONTROL_CHARS.search(value):
            raise InvalidInput(f"query parameter {name[:64]!r} holds a control character")
        grouped.setdefault(name, []).append(value)
    warnings: list[str] = []
    include: set[str] = set()
    include_all = False
    for raw in grouped.pop("includefield", []):
        for name in (n.strip() for n in raw.split(",")):
            if not name:
                continue
            if name.lower() == "all":
                include_all = True
            else:
                include.add(resolve_attribute(name))
    limit = MAX_LIMIT
    if "limit" in grouped:
        limit = _int_param("limit", grouped.pop("limit"), 0) or MAX_LIMIT
        if limit > MAX_LIMIT:
            warnings.append(f"limit {limit} lowered to {MAX_LIMIT}")
            limit = MAX_LIMIT
    offset = _int_param("offset", grouped.pop("offset"), 0) if "offset" in grouped else 0
    grouped.pop("fuzzymatching", None)  # fuzzy matching is not offered: exact or wildcard matching applies
    matches: dict[str, Match] = {}
    for name, values in grouped.items():
        if name.lower() in _CONTROL:
            raise InvalidInput(f"query parameter {name!r} must be written in lower case")
        keyword = resolve_attribute(name)
        if keyword == "Modality" and level is Level.STUDY:
            keyword = "ModalitiesInStudy"  # what OHIF and others send at study level
        spec = _KEYS.get(keyword)
        if spec is None:
            raise InvalidInput(f"{keyword} is not a matching key here; searchable: {', '.join(_searchable(level))}")
        kind, lowest = spec
        if _ORDER[lowest] > _ORDER[level]:
            raise InvalidInput(f"{keyword} is an attribute of a lower level; it cannot match {level.value}s")
        if len(values) > 1 and kind != "uids":
            raise InvalidInput(f"{keyword} is given more than once")
        for value in values:
            found = _parse_match(keyword, kind, value)
            if found is None:
                continue
            prior = matches.get(keyword)
            matches[keyword] = Match(keyword, "uids", prior.values + found.values) if prior is not None else found
    for keyword, uid in (fixed or {}).items():
        matches[keyword] = Match(keyword, "uids", (check_path_uid(uid, keyword),))
    return QidoQuery(level, tuple(matches.values()), frozenset(include), include_all, limit, offset, tuple(warnings))


def _searchable(level: Level) -> list[str]:
    return [k for k, (_, lowest) in _KEYS.items() if _ORDER[lowest] <= _ORDER[level]]
