"""DICOM JSON (PS3.18 annex F.2) of a Part 10 file, straight from its bytes.

Why not pydicom's `Dataset.to_json_dict`: it costs ~3-6 ms per CT image (every element becomes a
Python object, then a JSON one), more than the whole ingest of the file. Walking the element spans of
`formats.dicom.parse` and decoding each value once costs a tenth of that, cheap enough to run at ingest
so that WADO-RS metadata is served by concatenating stored JSON.

The output follows pydicom's conversion rules (a test compares the two over pydicom's own test files):
an empty value has no `Value` key; IS and DS are JSON numbers (a value that is not a number is left
out); PN values are objects with `Alphabetic` / `Ideographic` / `Phonetic`; binary values are
`InlineBinary` (base64). Pixel data (and anything after it) is not converted: the caller points to
the frames with a BulkDataURI. The pixel data's BulkDataURI is written relative (`studies/...`); a
server prefixes its base URL when it answers (`with_base`).
"""

from __future__ import annotations

import base64
import json
import math
import re
import struct
import threading
import zlib
from collections.abc import Iterable
from typing import Any, NamedTuple

import zstandard
from pydicom._dicom_dict import DicomDictionary

from medcloud.formats.charset import Charset, charset_for
from medcloud.formats.dicom import (
    _DICT_VR,
    _VR_CODES,
    IMPLICIT_LE_SYNTAX,
    ITEM_END,
    PIXEL_DATA,
    T_CHARSET,
    UNDEFINED,
    Buffer,
    Elem,
    ParsedDicom,
    Syntax,
    _parse_items,
    _skip_encapsulated,
    _truncated,
    dict_vr,
    open_dicom,
    parse,
    tag,
)
from medcloud.formats.limits import MAX_INFLATED_BYTES

__all__ = [
    "BULK_KEY", "bulk_split", "dataset_json", "file_json", "join_with_base", "pack_stored", "parsed_json", "pixel_vr",
    "unpack_stored", "with_base",
]  # fmt: skip

BULK_KEY = b'"BulkDataURI":"'
_NATIVE = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2"})
# pydicom's `stop_before_pixels` stops at the first of these: nothing from here on is metadata.
_PIXEL_TAGS = frozenset({tag("FloatPixelData"), tag("DoubleFloatPixelData"), PIXEL_DATA})
_T_PIXEL_REPRESENTATION = tag("PixelRepresentation")
_T_BITS_ALLOCATED = tag("BitsAllocated")
_PIXEL_FORMAT_TAGS = frozenset(
    {_T_PIXEL_REPRESENTATION, _T_BITS_ALLOCATED}
)  # the top-level values `_note_pixels` keeps
# Tags whose dictionary VR is "US or SS": SS when the pixels are signed (PixelRepresentation 1).
_US_OR_SS = frozenset(int(t) for t, entry in DicomDictionary.items() if entry[0] == "US or SS")
_TEXT_VRS = frozenset({"SH", "LO", "ST", "LT", "UC", "UT", "PN"})  # decoded in the file's character set
_SINGLE_VRS = frozenset({"LT", "ST", "UT", "UR"})  # never split at backslashes
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_NUMBER_FORMATS = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d", "UV": "Q", "SV": "q"}
_IS = re.compile(r"^[+-]?\d+$")
_NUMBER_SIZES = {vr: struct.calcsize(fmt) for vr, fmt in _NUMBER_FORMATS.items()}
_quote = json.encoder.encode_basestring  # a JSON string literal, non-ASCII kept (what json.dumps writes)
_NO_VALUE: Any = object()  # `_value_text`'s first value of an element written without a Value
_KEYS: dict[int, str] = {}  # tag -> '"GGGGEEEE":'
# Short elements written before (key and value text, and Value[0]), by tag, VR and bytes, one table per
# character set and byte order (what else their text depends on): the instances of a series repeat most
# of their header, so most elements are written once per series.
_VALUE_TEXTS: dict[tuple[tuple[str, ...], bool], dict[tuple[int, str, bytes], tuple[str, Any]]] = {}
_VALUE_TEXTS_MAX = 4096  # entries per table (values under _CACHED_BELOW bytes, ~400 B each); cleared when full
_VALUE_TABLES_MAX = 4  # tables (character set and byte order pairs met); all dropped when more are needed
_CACHED_BELOW = 80
_HEADS: dict[str, str] = {}  # VR -> '{"vr":"XX"'


def _key(t: int) -> str:
    key = _KEYS.get(t)
    if key is None:
        key = _KEYS[t] = f'"{t:08X}":'
    return key


def _texts_for(terms: tuple[str, ...], le: bool) -> dict[tuple[int, str, bytes], tuple[str, Any]]:
    table = _VALUE_TEXTS.get((terms, le))
    if table is None:
        if len(_VALUE_TEXTS) >= _VALUE_TABLES_MAX:
            _VALUE_TEXTS.clear()
        table = _VALUE_TEXTS[(terms, le)] = {}
    return table


def _head(vr: str) -> str:
    head = _HEADS.get(vr)
    if head is None:
        head = _HEADS[vr] = '{"vr":' + _quote(vr)
    return head


def _numbers_text(nums: list[int | float]) -> str:
    return ",".join([repr(n) for n in nums])  # int and float reprs are what json.dumps writes


def _strings(raw: bytes, vr: str, charset: Charset) -> list[str]:
    # As pydicom reads them: trailing padding off the whole value, then split (components keep their
    # inner spaces; an empty component stays "").
    text = (charset.decode(raw) if vr in _TEXT_VRS else raw.decode("latin_1")).rstrip("\x00 ")
    return [text] if vr in _SINGLE_VRS else text.split("\\")


def _numbers_is(values: list[str]) -> list[int | float]:
    out: list[int | float] = []
    for v in values:
        if _IS.match(v):
            out.append(int(v))
        else:
            try:  # pydicom reads "1.0" as IS 1
                f = float(v)
            except ValueError:
                continue
            if math.isfinite(f) and f == int(f):
                out.append(int(f))
    return out


def _numbers_ds(values: list[str]) -> list[int | float]:
    out: list[int | float] = []
    for v in values:
        try:
            f = float(v)
        except ValueError:
            continue
        if math.isfinite(f):
            out.append(f)
    return out


class _Walker:
    """Decodes the elements of one file; holds what later elements depend on (charset, signedness)."""

    def __init__(self, buf: Buffer, syn: Syntax) -> None:
        self.buf = buf
        self.syn = syn
        self.signed = False
        self.bits: Any = 16  # the top level's BitsAllocated, as far as `text` has read (16 if absent)

    def dataset(self, elems: list[Elem], charset: Charset, top: bool) -> dict[str, Any]:
        out: dict[str, Any] = {}
        buf = self.buf
        for el in elems:
            t = el.tag
            if t in _PIXEL_TAGS and top:
                break
            vr = el.vr
            if (vr == "UN" or not el.explicit) and t >> 16 & 1 and 0x10 <= t & 0xFFFF <= 0xFF:
                vr = "LO"  # a private creator, whatever the dictionary does not say
            elif t in _US_OR_SS and not el.explicit:
                vr = "SS" if self.signed else "US"
            key = f"{t:08X}"
            if vr == "SQ":
                items = el.items or []
                out[key] = {"vr": "SQ", "Value": [self.dataset(item, charset, False) for item in items]}
                continue
            raw = bytes(buf[el.vstart : el.vend])
            if t == T_CHARSET:
                charset = charset_for(raw.rstrip(b" \x00"))
            try:
                value = self._value(raw, vr, charset)
            except (ValueError, struct.error, UnicodeError):
                continue  # a value that cannot be read is left out, as pydicom's suppress_invalid_tags does
            out[key] = value
            if t == _T_PIXEL_REPRESENTATION and top and "Value" in value:
                self.signed = value["Value"][0] == 1
        return out

    def text(self, elems: list[Elem], charset: Charset, top: bool) -> str:
        """As `dataset`, written straight as the JSON text `json.dumps(dataset(...))` gives (compact,
        non-ASCII kept), without building the objects first: this runs for every file at ingest.

        `top_text` repeats this loop's body inline (it is ingest's hot loop): change both."""
        out: dict[int, str] = {}  # tag -> '"GGGGEEEE":value'; a repeated tag keeps its first place, last value
        buf = self.buf
        le = self.syn.le
        texts = _texts_for(charset.terms, le)
        for t, vr, _, vstart, vend, _, explicit, items in elems:
            if top and t in _PIXEL_TAGS:
                break
            if not explicit or vr == "UN":
                if t >> 16 & 1 and 0x10 <= t & 0xFFFF <= 0xFF:
                    vr = "LO"  # a private creator, whatever the dictionary does not say
                elif not explicit and t in _US_OR_SS:
                    vr = "SS" if self.signed else "US"
            if vr == "SQ":
                out[t] = self._sequence_text(t, items, charset)
                continue
            raw = buf[vstart:vend]
            if t == T_CHARSET:
                charset, texts = self._charset_of(raw, le)
            ck = (t, vr, raw) if vend - vstart < _CACHED_BELOW else None
            got = texts.get(ck) if ck is not None else None
            if got is None and (got := self._written(t, vr, raw, charset, texts, ck)) is None:
                continue
            out[t] = got[0]
            if top and t in _PIXEL_FORMAT_TAGS:
                self._note_pixels(t, got[1])
        return "{" + ",".join(out.values()) + "}"

    def top_text(self, pos: int, wanted: frozenset[int]) -> tuple[str, dict[int, tuple[int, int]], int]:
        """`parse` of the top level and `text` of it in one walk (what ingest does with every file).

        Gives what `text(parse(...), charset_for(b""), True)` gives, the value spans of the `wanted` tags
        (the last of a tag wins) and the last tag, without making an `Elem` per element: about a third
        of the two walks' time. Sequences are split by `parse`'s own item reader. Anything this walk
        refuses (a truncated or malformed file) raises; the caller then takes the two walks, which give
        the refusal or the lenient reading exactly as before (`ingest.metadata`), so this walk is only
        ever a faster way to the same answer.
        """
        buf, syn = self.buf, self.syn
        end = len(buf)
        explicit, le, u32 = syn.explicit, syn.le, syn.u32
        head = syn.hdr2 if explicit else syn.hdr_implicit
        vr_code, vr_of = _VR_CODES.get, _DICT_VR.get
        charset = charset_for(b"")
        texts = _texts_for(charset.terms, le)
        out: dict[int, str] = {}
        top: dict[int, tuple[int, int]] = {}
        last = -1
        writing = True  # until the pixel data: nothing from there on is metadata
        while pos < end:
            if pos + 8 > end:
                if not any(buf[pos:end]):  # trailing padding shorter than a header
                    break
                raise _truncated("element header", pos)
            if explicit:
                g, e, code, length = head.unpack_from(buf, pos)
            else:
                g, e, length = head.unpack_from(buf, pos)
            t = (g << 16) | e
            hstart = pos
            if t == ITEM_END or g == 0xFFFE:
                raise _truncated(f"unexpected delimiter ({g:04X},{e:04X})", pos)
            if explicit:
                info = vr_code(code)
                if info is None:
                    raise _truncated(f"invalid VR {code.decode('latin_1')!r} in ({g:04X},{e:04X})", pos)
                vr, long = info
                if long:
                    if pos + 12 > end:
                        raise _truncated("element header", pos)
                    length = u32.unpack_from(buf, pos + 8)[0]
                    pos += 12
                else:
                    pos += 8
            else:
                pos += 8
                vr = "UN" if g & 1 else (vr_of(t) or dict_vr(t))
            items: list[list[Elem]] | None = None
            if length == UNDEFINED:
                if t == PIXEL_DATA:
                    vstart, vend = pos, _skip_encapsulated(buf, pos, syn)
                    pos = vend
                else:  # a sequence; an explicit UN one is encoded implicit inside
                    inner = IMPLICIT_LE_SYNTAX if (explicit and vr == "UN") else syn
                    items, pos = _parse_items(buf, pos, end, inner, True, 0)
                    vr, vstart, vend = "SQ", hstart, pos
            else:
                vstart, vend = pos, pos + length
                if vend > end:
                    raise _truncated(f"value of ({g:04X},{e:04X}) needs {length} bytes", hstart)
                inner = syn
                if vr == "UN" and explicit and not g & 1:
                    vr, inner = dict_vr(t), IMPLICIT_LE_SYNTAX  # a public attribute sent as UN
                if vr == "SQ":
                    items, _ = _parse_items(buf, pos, vend, inner, False, 0)
                pos = vend
            last = t
            if t in wanted:
                top[t] = (vstart, vend)
            if not writing:
                continue
            if t in _PIXEL_TAGS:
                writing = False
                continue
            # From here on, `text` at the top level, element for element.
            if not explicit or vr == "UN":
                if t >> 16 & 1 and 0x10 <= t & 0xFFFF <= 0xFF:
                    vr = "LO"
                elif not explicit and t in _US_OR_SS:
                    vr = "SS" if self.signed else "US"
            if vr == "SQ":
                out[t] = self._sequence_text(t, items, charset)
                continue
            raw = buf[vstart:vend]
            if t == T_CHARSET:
                charset, texts = self._charset_of(raw, le)
            ck = (t, vr, raw) if vend - vstart < _CACHED_BELOW else None
            got = texts.get(ck) if ck is not None else None
            if got is None and (got := self._written(t, vr, raw, charset, texts, ck)) is None:
                continue
            out[t] = got[0]
            if t in _PIXEL_FORMAT_TAGS:
                self._note_pixels(t, got[1])
        return "{" + ",".join(out.values()) + "}", top, last

    def _sequence_text(self, t: int, items: list[list[Elem]] | None, charset: Charset) -> str:
        """A sequence element's key and text, its items written by `text`."""
        key = _KEYS.get(t) or _key(t)
        return key + '{"vr":"SQ","Value":[' + ",".join([self.text(i, charset, False) for i in items or []]) + "]}"

    @staticmethod
    def _charset_of(raw: bytes, le: bool) -> tuple[Charset, dict[tuple[int, str, bytes], tuple[str, Any]]]:
        """The character set a SpecificCharacterSet value names, and the table of values written in it."""
        charset = charset_for(raw.rstrip(b" \x00"))
        return charset, _texts_for(charset.terms, le)

    def _note_pixels(self, t: int, first: Any) -> None:
        """What `dataset` reads from the top level's objects: PixelRepresentation's and BitsAllocated's Value[0]."""
        if t == _T_PIXEL_REPRESENTATION:
            if first is not _NO_VALUE:
                self.signed = first == 1
        else:
            self.bits = 16 if first is _NO_VALUE else first

    def _written(
        self,
        t: int,
        vr: str,
        raw: bytes,
        charset: Charset,
        texts: dict[tuple[int, str, bytes], tuple[str, Any]],
        ck: tuple[int, str, bytes] | None,
    ) -> tuple[str, Any] | None:
        """An element's key and value text and its Value[0], written now and kept in `texts` under `ck`;
        None for a value that cannot be read (left out, as pydicom's suppress_invalid_tags does)."""
        try:
            value, first = self._value_text(raw, vr, charset)
        except (ValueError, struct.error, UnicodeError):
            return None
        got = ((_KEYS.get(t) or _key(t)) + value, first)
        if ck is not None:
            if len(texts) >= _VALUE_TEXTS_MAX:
                texts.clear()
            texts[ck] = got
        return got

    def _value_text(self, raw: bytes, vr: str, charset: Charset) -> tuple[str, Any]:
        """The JSON text of one value (as `_value`, serialised) and its Value[0] (`_NO_VALUE`: none)."""
        head = _HEADS.get(vr) or _head(vr)
        if not raw:
            return head + "}", _NO_VALUE
        if vr in _BINARY_VRS:
            return head + ',"InlineBinary":"' + base64.b64encode(raw).decode("ascii") + '"}', _NO_VALUE
        fmt = _NUMBER_FORMATS.get(vr)
        if fmt is not None:
            count = len(raw) // _NUMBER_SIZES[vr]
            if not count:
                return head + "}", _NO_VALUE
            nums = list(struct.unpack_from(f"{'<' if self.syn.le else '>'}{count}{fmt}", raw))
            if vr in ("FL", "FD"):
                nums = [n for n in nums if math.isfinite(n)]
                if not nums:
                    return head + "}", _NO_VALUE
            return head + ',"Value":[' + _numbers_text(nums) + "]}", nums[0]
        if vr == "AT":
            count = len(raw) // 4
            pairs = struct.unpack_from(f"{'<' if self.syn.le else '>'}{count * 2}H", raw)
            if not pairs:
                return head + "}", _NO_VALUE
            tags = ",".join([f'"{pairs[i]:04X}{pairs[i + 1]:04X}"' for i in range(0, len(pairs), 2)])
            return head + ',"Value":[' + tags + "]}", f"{pairs[0]:04X}{pairs[1]:04X}"
        values = _strings(raw, vr, charset)
        if vr == "PN":
            names: list[str] = []
            first: Any = _NO_VALUE
            for v in values:
                groups = v.split("=")
                if first is _NO_VALUE:
                    first = groups if any(groups) else None  # truthy like the name object, or None
                if not any(groups):
                    names.append("null")
                    continue
                name = '{"Alphabetic":' + _quote(groups[0])
                if len(groups) > 1:
                    name += ',"Ideographic":' + _quote(groups[1])
                if len(groups) > 2:
                    name += ',"Phonetic":' + _quote(groups[2])
                names.append(name + "}")
            if all(n == "null" for n in names):
                return head + "}", _NO_VALUE
            return head + ',"Value":[' + ",".join(names) + "]}", first
        if vr == "IS" or vr == "DS":
            nums_in = [v for v in values if v]
            numbers = _numbers_is(nums_in) if vr == "IS" else _numbers_ds(nums_in)
            if not numbers:
                return head + "}", _NO_VALUE
            return head + ',"Value":[' + _numbers_text(numbers) + "]}", numbers[0]
        if all(not v for v in values):
            return head + "}", _NO_VALUE
        return head + ',"Value":[' + ",".join([_quote(v) for v in values]) + "]}", values[0]

    def _value(self, raw: bytes, vr: str, charset: Charset) -> dict[str, Any]:
        if not raw:
            return {"vr": vr}
        if vr in _BINARY_VRS:
            return {"vr": vr, "InlineBinary": base64.b64encode(raw).decode("ascii")}
        fmt = _NUMBER_FORMATS.get(vr)
        if fmt is not None:
            size = struct.calcsize(fmt)
            count = len(raw) // size
            if not count:
                return {"vr": vr}
            prefix = "<" if self.syn.le else ">"
            nums = list(struct.unpack_from(f"{prefix}{count}{fmt}", raw))
            if vr in ("FL", "FD"):
                nums = [n for n in nums if math.isfinite(n)]
                if not nums:
                    return {"vr": vr}
            return {"vr": vr, "Value": nums}
        if vr == "AT":
            count = len(raw) // 4
            prefix = "<" if self.syn.le else ">"
            pairs = struct.unpack_from(f"{prefix}{count * 2}H", raw)
            tags = [f"{pairs[i]:04X}{pairs[i + 1]:04X}" for i in range(0, len(pairs), 2)]
            return {"vr": vr, "Value": tags} if tags else {"vr": vr}
        values = _strings(raw, vr, charset)
        if vr == "PN":
            names: list[Any] = []
            for v in values:
                groups = v.split("=")
                if not any(groups):
                    names.append(None)
                    continue
                name = {"Alphabetic": groups[0]}
                if len(groups) > 1:
                    name["Ideographic"] = groups[1]
                if len(groups) > 2:
                    name["Phonetic"] = groups[2]
                names.append(name)
            if all(n is None for n in names):
                return {"vr": vr}
            return {"vr": vr, "Value": names}
        if vr == "IS" or vr == "DS":
            nums_in = [v for v in values if v]
            nums = _numbers_is(nums_in) if vr == "IS" else _numbers_ds(nums_in)
            return {"vr": vr, "Value": nums} if nums else {"vr": vr}
        if all(not v for v in values):
            return {"vr": vr}
        return {"vr": vr, "Value": values}


def dataset_json(buf: Buffer, syn: Syntax, pos: int) -> dict[str, Any]:
    """The DICOM JSON of the dataset at `pos` (up to its pixel data)."""
    elems, _ = parse(buf, pos, len(buf), syn, in_item=False)
    return _Walker(buf, syn).dataset(elems, charset_for(b""), True)


def pixel_vr(meta_syntax: str, attrs: dict[str, Any]) -> str:
    """The VR the pixel data's BulkDataURI element names: OW for native pixels over 8 bits, else OB."""
    bits = attrs.get(f"{_T_BITS_ALLOCATED:08X}", {}).get("Value", [16])[0]
    return "OW" if meta_syntax in _NATIVE and (bits or 16) > 8 else "OB"


def file_json(data: Buffer, pixel_path: str | None, *, max_inflated: int = MAX_INFLATED_BYTES) -> bytes:
    """A file's DICOM JSON as UTF-8 bytes, with its pixel data as a relative BulkDataURI.

    `pixel_path` is the frames' path relative to the server's base (None: no pixel data element).
    """
    buf, meta, syn, pos, _ = open_dicom(data, max_inflated=max_inflated, inflate_to_disk=True)
    elems, _ = parse(buf, pos, len(buf), syn, in_item=False)
    return parsed_json(ParsedDicom(buf, meta, syn, elems), pixel_path)


def parsed_json(parsed: ParsedDicom, pixel_path: str | None) -> bytes:
    """`file_json` of a file already split into its elements (`formats.dicom.parse`)."""
    buf, meta, syn, elems = parsed
    walker = _Walker(buf, syn)
    text = walker.text(elems, charset_for(b""), True)  # written directly: no objects, no second pass
    return _with_pixels(text, walker, meta, pixel_path)


def _with_pixels(text: str, walker: _Walker, meta: dict[int, bytes], pixel_path: str | None) -> bytes:
    """The top level's text with the pixel data's BulkDataURI added (when it has pixel data), as UTF-8."""
    if pixel_path is not None:
        syntax = meta.get(0x00020010, b"").rstrip(b" \x00").decode("ascii", "replace")
        vr = "OW" if syntax in _NATIVE and (walker.bits or 16) > 8 else "OB"
        bulk = '"7FE00010":{"vr":"' + vr + '","BulkDataURI":' + _quote(pixel_path) + "}"
        text = text[:-1] + ("," if len(text) > 2 else "") + bulk + "}"
    return text.encode("utf-8")


class TopWalk(NamedTuple):
    """`ingest_walk`'s answer: the top level's spans of the wanted tags, its last tag, and a way to the JSON."""

    top: dict[int, tuple[int, int]]
    last: int
    text: str
    walker: _Walker

    def json(self, meta: dict[int, bytes], pixel_path: str | None) -> bytes:
        """The file's DICOM JSON (`file_json`'s bytes), once `pixel_path` is known from the record."""
        return _with_pixels(self.text, self.walker, meta, pixel_path)


def ingest_walk(buf: Buffer, syn: Syntax, pos: int, wanted: frozenset[int]) -> TopWalk:
    """One walk of an opened file for ingest: `_Walker.top_text` (raises on anything it does not take)."""
    walker = _Walker(buf, syn)
    text, top, last = walker.top_text(pos, wanted)
    return TopWalk(top, last, text, walker)


def with_base(stored: bytes, base: bytes) -> bytes:
    """Stored JSON with every relative BulkDataURI prefixed by `base` (".../dicom-web/").

    Only our own writer's key text matches: a value holding the same characters has its quotes escaped.
    """
    return stored.replace(BULK_KEY, BULK_KEY + base)


def bulk_split(stored: bytes) -> tuple[bytes, ...]:
    """Stored JSON cut where `with_base` would insert the base (after each of our BulkDataURI keys), so that
    many documents can be answered with a base in one copy (`join_with_base`) instead of a search of all."""
    return tuple(stored.split(BULK_KEY))


def join_with_base(documents: Iterable[tuple[bytes, ...]], base: bytes) -> bytes:
    """`with_base(b"[" + b",".join(texts) + b"]", base)` for texts given as their `bulk_split` pieces.

    The same bytes: BULK_KEY holds no "[", "," or "]", so no match can span two documents, and `split`
    cuts at the same non-overlapping, left-to-right matches that `replace` replaces.
    """
    key = BULK_KEY + base
    out: list[bytes] = []
    for pieces in documents:
        out.append(b",")
        out.append(pieces[0])
        for piece in pieces[1:]:
            out.append(key)
            out.append(piece)
    if not out:
        return b"[]"
    out[0] = b"["
    out.append(b"]")
    return b"".join(out)


# ---------------------------------------------------------------- the stored form (catalog `instance_json`)

_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"  # a Zstandard frame (RFC 8878); the zlib bodies of 0.1 start 0x78
_CODECS = threading.local()  # zstandard's (de)compressor objects are not for two threads at once


def pack_stored(text: bytes) -> bytes:
    """A file's DICOM JSON as the catalog keeps it: one Zstandard frame at level 1 (content size in it).

    For the ~5 KB documents of a CT or MR image this is about three times as fast as zlib at level 1 and
    a little smaller; it runs for every file at ingest.
    """
    packer = getattr(_CODECS, "packer", None)
    if packer is None:
        packer = _CODECS.packer = zstandard.ZstdCompressor(level=1)
    return bytes(packer.compress(text))


def unpack_stored(body: bytes) -> bytes:
    """The JSON text of a `pack_stored` body, or of a zlib body written before Zstandard was used."""
    if body[:4] != _ZSTD_MAGIC:
        return zlib.decompress(body)
    unpacker = getattr(_CODECS, "unpacker", None)
    if unpacker is None:
        unpacker = _CODECS.unpacker = zstandard.ZstdDecompressor()
    return bytes(unpacker.decompress(body))
