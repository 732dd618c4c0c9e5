"""Accept negotiation (RFC 9110 section 12.5.1) for DICOMweb: strict on syntax, tolerant on choice.

A malformed header is InvalidInput (400); a well-formed one naming nothing we can serve is
NotAcceptable (406). Lists such as OHIF's, which mix types we serve with types we do not, pick the
best one we can serve.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from medcloud.errors import InvalidInput, MedcloudError

__all__ = ["MediaRange", "NotAcceptable", "Offer", "negotiate", "parse_accept", "parse_media_type"]

_TCHARS = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_TYPE = re.compile(rf"^\s*({_TCHARS})/({_TCHARS})\s*$")
_PARAM = re.compile(rf'^\s*({_TCHARS})\s*=\s*("(?:[^"\\]|\\.)*"|[^\s;,"]+)\s*$')
_MAX_ACCEPT = 4096


class NotAcceptable(MedcloudError):
    """None of the media types the client accepts can be served."""

    status = 406
    type_slug = "not-acceptable"
    title = "Not acceptable"


@dataclass(frozen=True)
class MediaRange:
    """One media range of an Accept header (or a Content-Type): type, subtype, parameters, weight."""

    type: str
    subtype: str
    params: dict[str, str] = field(default_factory=dict)
    q: float = 1.0

    @property
    def essence(self) -> str:
        return f"{self.type}/{self.subtype}"

    def covers(self, media_type: str) -> bool:
        """Whether this range (wildcards included) covers the concrete `media_type`."""
        want_type, _, want_sub = media_type.partition("/")
        if self.type == "*":
            return True
        return self.type == want_type and self.subtype in ("*", want_sub)


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    if '"' not in text:  # nothing quoted (the usual header): a plain split gives the same parts
        return text.split(sep)
    parts: list[str] = []
    buf: list[str] = []
    quoted = escaped = False
    for ch in text:
        if escaped:
            buf.append(ch)
            escaped = False
        elif ch == "\\" and quoted:
            buf.append(ch)
            escaped = True
        elif ch == '"':
            buf.append(ch)
            quoted = not quoted
        elif ch == sep and not quoted:
            parts.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
    if quoted:
        raise InvalidInput("malformed media type: unbalanced quotes")
    parts.append("".join(buf))
    return parts


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def parse_media_type(text: str) -> MediaRange:
    """One media type with parameters (names lower-cased, values unquoted); InvalidInput if malformed."""
    head, *params = _split_outside_quotes(text, ";")
    m = _TYPE.match(head)
    if m is None:
        raise InvalidInput(f"malformed media type {text.strip()[:100]!r}")
    values: dict[str, str] = {}
    q = 1.0
    for raw in params:
        if not raw.strip():
            continue
        pm = _PARAM.match(raw)
        if pm is None:
            raise InvalidInput(f"malformed media type parameter {raw.strip()[:100]!r}")
        name, value = pm.group(1).lower(), _unquote(pm.group(2))
        if name == "q":
            try:
                q = float(value)
            except ValueError:
                raise InvalidInput(f"malformed q value {value[:20]!r}") from None
            if not 0.0 <= q <= 1.0:
                raise InvalidInput(f"q value {value[:20]!r} is outside 0..1")
        else:
            values[name] = value
    return MediaRange(m.group(1).lower(), m.group(2).lower(), values, q)


def parse_accept(header: str | None) -> list[MediaRange]:
    """The media ranges of an Accept header; an absent or empty header accepts anything."""
    if header is None or not header.strip():
        return [MediaRange("*", "*")]
    if len(header) > _MAX_ACCEPT:
        raise InvalidInput(f"Accept header longer than {_MAX_ACCEPT} characters")
    ranges = [parse_media_type(part) for part in _split_outside_quotes(header, ",") if part.strip()]
    if not ranges:
        raise InvalidInput("malformed Accept header: no media range")
    return ranges


@dataclass(frozen=True)
class Offer:
    """A representation a resource can send: `media_type`, and for multipart the part type it carries.

    `transfer_syntaxes` lists the transfer syntaxes the parts can be sent in (empty: not applicable).
    """

    media_type: str
    part_type: str | None = None
    transfer_syntaxes: frozenset[str] = frozenset()


def _matches(rng: MediaRange, offer: Offer) -> bool:
    if not rng.covers(offer.media_type):
        return False
    part = rng.params.get("type")
    if offer.part_type is not None and part is not None and part not in ("*/*", "*"):
        part_range = parse_media_type(part)
        if not part_range.covers(offer.part_type):
            return False
    elif offer.part_type is None and part is not None:
        return False
    ts = rng.params.get("transfer-syntax")
    named = ts is not None and ts != "*"
    return not (named and offer.transfer_syntaxes and ts not in offer.transfer_syntaxes)


def negotiate(accept: list[MediaRange], offers: list[Offer], *, what: str) -> tuple[Offer, MediaRange]:
    """The best offer for `accept` (highest q, then the client's order, then ours), or NotAcceptable."""
    best: tuple[float, int, int] | None = None
    chosen: tuple[Offer, MediaRange] | None = None
    for i, rng in enumerate(accept):
        if rng.q <= 0:
            continue
        for j, offer in enumerate(offers):
            if _matches(rng, offer):
                key = (-rng.q, i, j)
                if best is None or key < best:
                    best, chosen = key, (offer, rng)
    if chosen is None:
        served = ", ".join(o.media_type + (f'; type="{o.part_type}"' if o.part_type else "") for o in offers)
        raise NotAcceptable(f"{what} can be sent as {served}; the Accept header asks for none of these")
    return chosen
