"""DICOM Part 10 bytes: split a file into element spans, and write elements and file meta back.

Why not pydicom's Dataset: reading then writing a file through it costs more than the whole
de-identification budget (~750 files per CPU-second measured here) because every element becomes a
Python object twice. Here a file is split into element spans (tag, VR, offsets) once; callers copy
kept elements as byte slices and re-encode only what they change. The vocabulary (VRs, tags, transfer
syntaxes) comes from pydicom's dictionaries, never restated here.

Everything read here comes from an untrusted client, so every walk is bounded: sequence nesting
(`MAX_NESTING`), inflation of deflated data sets (`max_inflated`), and the caches keyed by content.
The buffer may be `bytes` or a read-only `mmap` of a file (big uploads are never read into memory).

Its length: the reader, the writer and the file meta share one set of offsets and bounds;
splitting them would put the bounds in two places.
"""

from __future__ import annotations

import mmap
import struct
import zlib
from typing import NamedTuple

from pydicom import uid as _uid
from pydicom._dicom_dict import DicomDictionary, RepeatersDictionary
from pydicom.datadict import tag_for_keyword
from pydicom.tag import ItemDelimiterTag, ItemTag, SequenceDelimiterTag
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32

from medcloud.errors import InvalidInput, UnsupportedFormat
from medcloud.formats.limits import MAX_INFLATED_BYTES, MAX_NESTING

__all__ = [
    "DEFLATED",
    "EXPLICIT_BE",
    "EXPLICIT_LE",
    "IMPLEMENTATION_CLASS_UID",
    "IMPLEMENTATION_VERSION",
    "IMPLICIT_LE",
    "LONG_VRS",
    "MAX_INFLATED_BYTES",
    "MAX_NESTING",
    "Buffer",
    "Elem",
    "ParsedDicom",
    "Syntax",
    "check_final_element",
    "dict_vr",
    "element_header",
    "encode_element",
    "open_dicom",
    "parse",
    "part10",
    "scan_top_level",
    "split_dicom",
    "tag",
]

Buffer = bytes | mmap.mmap

EXPLICIT_LE = str(_uid.ExplicitVRLittleEndian)
IMPLICIT_LE = str(_uid.ImplicitVRLittleEndian)
EXPLICIT_BE = str(_uid.ExplicitVRBigEndian)
DEFLATED = str(_uid.DeflatedExplicitVRLittleEndian)
IMPLEMENTATION_CLASS_UID = "2.25.145931887018543102367434069734120093513"
IMPLEMENTATION_VERSION = "MEDCLOUD_0_1"

# VRs whose explicit encoding has a 4-byte length after two reserved bytes (PS3.5 7.1.2).
LONG_VRS: frozenset[str] = frozenset(vr.value for vr in EXPLICIT_VR_LENGTH_32)
_LONG_VRS_BYTES = frozenset(vr.encode("ascii") for vr in LONG_VRS)

# Each level of nesting takes at least an item header (8 bytes) and a sequence header (8 or 12).
_DEEP_ENOUGH = MAX_NESTING * 16

UNDEFINED = 0xFFFFFFFF
ITEM = int(ItemTag)
ITEM_END = int(ItemDelimiterTag)
SEQ_END = int(SequenceDelimiterTag)


def tag(keyword: str) -> int:
    """The tag of a dictionary keyword, as an int (KeyError for an unknown keyword)."""
    found = tag_for_keyword(keyword)
    if found is None:
        raise KeyError(keyword)
    return int(found)


PIXEL_DATA = tag("PixelData")
TRAILING_PADDING = tag("DataSetTrailingPadding")
T_CHARSET = tag("SpecificCharacterSet")
T_SOP_CLASS = tag("SOPClassUID")
T_SOP_INSTANCE = tag("SOPInstanceUID")
T_MODALITY = tag("Modality")
T_PATIENT_NAME = tag("PatientName")
T_PATIENT_ID = tag("PatientID")
T_BIRTH_DATE = tag("PatientBirthDate")
T_IDENTITY_REMOVED = tag("PatientIdentityRemoved")
T_DEID_METHOD = tag("DeidentificationMethod")
T_DEID_CODES = tag("DeidentificationMethodCodeSequence")
T_BURNED_IN = tag("BurnedInAnnotation")
T_LONGITUDINAL = tag("LongitudinalTemporalInformationModified")
T_STUDY_UID = tag("StudyInstanceUID")
T_SERIES_UID = tag("SeriesInstanceUID")
M_SOP_CLASS = tag("MediaStorageSOPClassUID")
M_SOP_INSTANCE = tag("MediaStorageSOPInstanceUID")
M_TRANSFER_SYNTAX = tag("TransferSyntaxUID")
M_PRIVATE_CREATOR = tag("PrivateInformationCreatorUID")
M_PRIVATE_INFO = tag("PrivateInformation")

# One VR per dictionary tag (ambiguous ones such as "US or SS" read as their first choice), built once
# so that lookups keyed by upload content add nothing to memory.
_DICT_VR: dict[int, str] = {int(t): entry[0][:2] for t, entry in DicomDictionary.items()}


def _repeater_buckets() -> dict[int, list[tuple[int, int, str]]]:
    """Repeating-group entries ("60xx0010") as (mask, value, VR), bucketed by the group's high byte."""
    buckets: dict[int, list[tuple[int, int, str]]] = {}
    for pattern, entry in RepeatersDictionary.items():
        mask = int("".join("0" if c == "x" else "F" for c in pattern), 16)
        value = int(pattern.replace("x", "0"), 16)
        highs = range(256) if pattern[:2] == "xx" else [value >> 24]
        for high in highs:
            buckets.setdefault(high, []).append((mask, value, entry[0][:2]))
    return buckets


_REPEATERS = _repeater_buckets()


def dict_vr(tag: int) -> str:
    """The dictionary VR of a public tag, "UN" when the dictionary does not know it."""
    vr = _DICT_VR.get(tag)
    if vr is not None:
        return vr
    for mask, value, rvr in _REPEATERS.get(tag >> 24, ()):
        if tag & mask == value:
            return rvr
    return "UN"


class Syntax:
    """One dataset encoding: explicit or implicit VR, little or big endian, with its packers."""

    __slots__ = ("explicit", "hdr2", "hdr4", "hdr_implicit", "le", "tag_fmt", "u16", "u32")

    def __init__(self, explicit: bool, le: bool) -> None:
        self.explicit = explicit
        self.le = le
        p = "<" if le else ">"
        self.tag_fmt = struct.Struct(p + "HH")
        self.u16 = struct.Struct(p + "H")
        self.u32 = struct.Struct(p + "I")
        self.hdr2 = struct.Struct(p + "HH2sH")
        self.hdr4 = struct.Struct(p + "HH2s2xI")
        self.hdr_implicit = struct.Struct(p + "HHI")


EXPLICIT_LE_SYNTAX = Syntax(True, True)
IMPLICIT_LE_SYNTAX = Syntax(False, True)
EXPLICIT_BE_SYNTAX = Syntax(True, False)


class Elem(NamedTuple):
    """One element's span in the buffer. `items` holds parsed sequence items (None if not a sequence).

    A named tuple: `parse` makes about a hundred of these per file at ingest, and a tuple is made by one
    C call (`_new_elem`) where a class's `__init__` costs a Python frame and eight attribute stores.
    """

    tag: int
    vr: str
    hstart: int
    vstart: int
    vend: int
    end: int
    explicit: bool
    items: list[list[Elem]] | None


_new_elem = tuple.__new__  # Elem(...) without the generated __new__'s Python frame: _new_elem(Elem, (fields))


def _explicit_vr(code: bytes) -> tuple[str, bool] | None:
    """An explicit VR's text and whether it has a 32-bit length; None for a code that is not a VR."""
    vr = code.decode("latin_1")
    if not (vr.isalpha() and vr.isupper()):
        return None
    return vr, vr in LONG_VRS


# Every VR code `_explicit_vr` accepts (two letters, neither lower case), read once: the parser looks
# each element's code up here.
_LETTERS = [c for c in range(256) if chr(c).isalpha()]
_VR_CODES: dict[bytes, tuple[str, bool]] = {
    code: info for a in _LETTERS for b in _LETTERS if (info := _explicit_vr(code := bytes((a, b)))) is not None
}


class ParsedDicom(NamedTuple):
    """A file split once into its top-level elements, for every reader that needs them all."""

    buf: Buffer
    meta: dict[int, bytes]
    syn: Syntax
    elems: list[Elem]


def _truncated(what: str, pos: int) -> InvalidInput:
    return InvalidInput(f"truncated or malformed DICOM: {what} at byte {pos}")


def _too_deep(pos: int) -> InvalidInput:
    return InvalidInput(f"malformed DICOM: sequences nested deeper than {MAX_NESTING} levels at byte {pos}")


def _skip_encapsulated(buf: Buffer, pos: int, syn: Syntax) -> int:
    """End offset of undefined-length encapsulated pixel data (fragments until sequence delimiter)."""
    n = len(buf)
    while True:
        if pos + 8 > n:
            raise _truncated("encapsulated pixel data", pos)
        g, e = syn.tag_fmt.unpack_from(buf, pos)
        length = syn.u32.unpack_from(buf, pos + 4)[0]
        tag = (g << 16) | e
        pos += 8
        if tag == SEQ_END:
            return pos
        if tag != ITEM or length == UNDEFINED or pos + length > n:
            raise _truncated("pixel data fragment", pos - 8)
        pos += length


def parse(buf: Buffer, pos: int, end: int, syn: Syntax, in_item: bool, depth: int = 0) -> tuple[list[Elem], int]:
    """Split a dataset (or one undefined-length item) into element spans, at most `MAX_NESTING` deep.

    `dicomjson._Walker.top_text` repeats this loop's top level for ingest's one walk (where a call per
    element would cost a tenth of the walk): change both; tests/ingest/test_read_with_json.py holds them equal.
    """
    elems: list[Elem] = []
    append = elems.append
    explicit = syn.explicit
    u32 = syn.u32
    # One unpack reads an element's tag with its VR code and 16-bit length (explicit), or its 32-bit
    # length (implicit); a 32-bit explicit length is read after.
    head = syn.hdr2 if explicit else syn.hdr_implicit
    vr_code = _VR_CODES.get
    vr_of = _DICT_VR.get
    new = _new_elem
    while pos < end:
        if pos + 8 > end:
            # Trailing padding shorter than a header is tolerated at the top level only.
            if not in_item and not any(buf[pos:end]):
                return elems, end
            raise _truncated("element header", pos)
        if explicit:
            g, e, code, length = head.unpack_from(buf, pos)
        else:
            g, e, length = head.unpack_from(buf, pos)
        tag = (g << 16) | e
        hstart = pos
        if tag == ITEM_END:
            return elems, pos + 8
        if g == 0xFFFE:
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
            vr = "UN" if g & 1 else (vr_of(tag) or dict_vr(tag))
        if length == UNDEFINED:
            if tag == PIXEL_DATA:
                stop = _skip_encapsulated(buf, pos, syn)
                append(new(Elem, (tag, vr, hstart, pos, stop, stop, explicit, None)))
                pos = stop
                continue
            # Undefined length means a sequence; an explicit UN one is encoded implicit inside.
            inner = IMPLICIT_LE_SYNTAX if (explicit and vr == "UN") else syn
            items, pos = _parse_items(buf, pos, end, inner, True, depth)
            append(new(Elem, (tag, "SQ", hstart, hstart, pos, pos, explicit, items)))
            continue
        vend = pos + length
        if vend > end:
            raise _truncated(f"value of ({g:04X},{e:04X}) needs {length} bytes", hstart)
        inner = syn
        if vr == "UN" and explicit and not g & 1:
            # A public attribute sent as UN (by a node that did not know it) still gets the action
            # its real VR calls for; its value is implicit little endian, like the UN encoding.
            vr = dict_vr(tag)
            inner = IMPLICIT_LE_SYNTAX
        if vr == "SQ":
            items, _ = _parse_items(buf, pos, vend, inner, False, depth)
            append(new(Elem, (tag, vr, hstart, pos, vend, vend, explicit, items)))
        else:
            append(new(Elem, (tag, vr, hstart, pos, vend, vend, explicit, None)))
        pos = vend
    if in_item:
        raise _truncated("item without delimiter", pos)
    return elems, pos


def _parse_items(
    buf: Buffer, pos: int, end: int, syn: Syntax, undefined: bool, depth: int
) -> tuple[list[list[Elem]], int]:
    if depth >= MAX_NESTING:
        raise _too_deep(pos)
    items: list[list[Elem]] = []
    tag_fmt, u32 = syn.tag_fmt, syn.u32
    while pos < end or undefined:
        if pos + 8 > end:
            raise _truncated("sequence item", pos)
        g, e = tag_fmt.unpack_from(buf, pos)
        tag = (g << 16) | e
        length = u32.unpack_from(buf, pos + 4)[0]
        pos += 8
        if tag == SEQ_END:
            return items, pos
        if tag != ITEM:
            raise _truncated(f"expected item tag, found ({g:04X},{e:04X})", pos - 8)
        if length == UNDEFINED:
            elems, pos = parse(buf, pos, end, syn, True, depth + 1)
        else:
            if pos + length > end:
                raise _truncated("sequence item length", pos - 8)
            elems, _ = parse(buf, pos, pos + length, syn, False, depth + 1)
            pos += length
        items.append(elems)
    return items, pos


def _strip(raw: bytes) -> bytes:
    return raw.rstrip(b" \x00")


def _too_big(max_inflated: int) -> InvalidInput:
    return InvalidInput(f"deflated DICOM dataset inflates to more than {max_inflated} bytes; refused")


def _inflate(data: Buffer, pos: int, max_inflated: int) -> bytes:
    """Inflate a deflated data set into memory, refusing one that would grow past `max_inflated` bytes.

    The size is measured first in 1 MiB steps that are thrown away, so a bomb is refused without
    ever holding more than a step of it; only a data set within the limit is inflated for keeps.
    """
    with memoryview(data) as view:
        pending: bytes | memoryview = view[pos:]
        counter = zlib.decompressobj(-15)
        total = 0
        try:
            while pending:
                total += len(counter.decompress(pending, 1 << 20))
                if total > max_inflated:
                    raise _too_big(max_inflated)
                pending = counter.unconsumed_tail
            total += len(counter.flush())
            if total > max_inflated:
                raise _too_big(max_inflated)
            return zlib.decompressobj(-15).decompress(view[pos:])
        except zlib.error as exc:
            raise InvalidInput(f"deflated DICOM dataset is corrupt: {exc}") from None
        finally:
            pending = b""  # let go of the view before the caller unmaps the file


def _inflate_to_disk(data: Buffer, pos: int, max_inflated: int) -> mmap.mmap:
    """Inflate a deflated data set into an unnamed temporary file, mapped read-only; one pass, memory
    bounded by a 1 MiB step whatever the size, refused past `max_inflated` bytes."""
    import tempfile

    with memoryview(data) as view, tempfile.TemporaryFile() as spill:
        pending: bytes | memoryview = view[pos:]
        inflater = zlib.decompressobj(-15)
        total = 0
        try:
            while True:
                chunk = inflater.decompress(pending, 1 << 20) if pending else inflater.flush()
                total += len(chunk)
                if total > max_inflated:
                    raise _too_big(max_inflated)
                spill.write(chunk)
                if not pending:
                    break
                pending = inflater.unconsumed_tail
        except zlib.error as exc:
            raise InvalidInput(f"deflated DICOM dataset is corrupt: {exc}") from None
        finally:
            pending = b""
        if not total:
            raise InvalidInput("DICOM file has no dataset after its file meta information")
        spill.flush()
        # The mapping outlives the file object; it is unmapped when the last reference to it goes.
        return mmap.mmap(spill.fileno(), 0, access=mmap.ACCESS_READ)


def open_dicom(
    data: Buffer, *, max_inflated: int = MAX_INFLATED_BYTES, inflate_to_disk: bool = False
) -> tuple[Buffer, dict[int, bytes], Syntax, int, bool]:
    """Read the file meta and settle the dataset's encoding.

    Returns (buffer, file-meta values, dataset syntax, offset of the dataset in the buffer, converted?);
    a deflated dataset is inflated (to at most `max_inflated` bytes) into the returned buffer: bytes,
    or with `inflate_to_disk` a mapped temporary file, so that memory stays small whatever its size.
    """
    meta: dict[int, bytes] = {}
    pos = 0
    if len(data) >= 132 and data[128:132] == b"DICM":
        pos = 132
    elif len(data) >= 8 and data[:2] in (b"\x08\x00", b"\x02\x00") and data[3:4] == b"\x00":
        pos = 0  # a bare dataset without preamble, as some old archives store them
    else:
        raise UnsupportedFormat("not a DICOM file (no DICM preamble)")
    n = len(data)
    while pos + 8 <= n and data[pos : pos + 2] == b"\x02\x00":
        e = struct.unpack_from("<H", data, pos + 2)[0]
        vr = data[pos + 4 : pos + 6]
        if vr in _LONG_VRS_BYTES:
            if pos + 12 > n:
                raise _truncated("file meta information", pos)
            length = struct.unpack_from("<I", data, pos + 8)[0]
            pos += 12
        else:
            length = struct.unpack_from("<H", data, pos + 6)[0]
            pos += 8
        if pos + length > n:
            raise _truncated("file meta information", pos)
        meta[0x00020000 | e] = data[pos : pos + length]
        pos += length
    ts = _strip(meta.get(M_TRANSFER_SYNTAX, b"")).decode("ascii", errors="replace") or IMPLICIT_LE
    converted = False
    buf = data
    if ts == DEFLATED:
        buf = _inflate_to_disk(data, pos, max_inflated) if inflate_to_disk else _inflate(data, pos, max_inflated)
        pos, converted = 0, True
        syn = EXPLICIT_LE_SYNTAX
    elif ts == IMPLICIT_LE:
        syn = IMPLICIT_LE_SYNTAX
    elif ts == EXPLICIT_BE:
        syn = EXPLICIT_BE_SYNTAX
    else:
        syn = EXPLICIT_LE_SYNTAX
    # Some writers declare one VR encoding and use the other; the first element tells.
    if pos + 6 <= len(buf) and syn.le:
        first_vr = buf[pos + 4 : pos + 6]
        looks_explicit = first_vr.isalpha() and first_vr.isupper()
        if looks_explicit != syn.explicit:
            syn = EXPLICIT_LE_SYNTAX if looks_explicit else IMPLICIT_LE_SYNTAX
    if pos >= len(buf):
        raise InvalidInput("DICOM file has no dataset after its file meta information")
    return buf, meta, syn, pos, converted


def split_dicom(
    data: Buffer, *, max_inflated: int = MAX_INFLATED_BYTES
) -> tuple[Buffer, dict[int, bytes], Syntax, list[Elem], bool]:
    """Split a DICOM file into (buffer, file-meta values, dataset syntax, top-level elements, converted?).

    Every element at every depth is walked, so a file cut anywhere raises InvalidInput.
    """
    buf, meta, syn, pos, converted = open_dicom(data, max_inflated=max_inflated)
    elems, _ = parse(buf, pos, len(buf), syn, in_item=False)
    if not elems:
        raise InvalidInput("DICOM file has an empty dataset")
    check_final_element(meta, elems[-1].tag)
    return buf, meta, syn, elems, converted


def scan_top_level(
    buf: Buffer, pos: int, syn: Syntax, wanted: frozenset[int], stop_after: int = 0xFFFFFFFF
) -> tuple[dict[int, tuple[int, int]], int]:
    """Walk a dataset's top-level elements: ({tag: (value start, value end)} for `wanted`, last tag).

    With `stop_after`, the walk ends at the first element whose tag is greater (a look-up of a few
    early values, not a check of the whole file: what follows is neither read nor checked).

    Every element's length is checked against the bytes present and the last one must end at the end
    of the buffer, so a file cut anywhere inside an element fails. Values are stepped over, and so are
    defined-length sequences too short to nest past `MAX_NESTING` (the de-identifier at the site walks
    every item; walking the few short ones of every file here would cost ~15% of this reader). From
    the first undefined-length element on (a sequence or encapsulated pixel data), the rest is walked
    in full by `parse`, which needs every delimiter.
    """
    n = len(buf)
    found: dict[int, tuple[int, int]] = {}
    explicit = syn.explicit
    hdr2, hdr_implicit, u32 = syn.hdr2, syn.hdr_implicit, syn.u32
    vr_of = _DICT_VR.get  # no repeating group holds a sequence but (50xx,2600), a retired curve one
    last = -1
    while pos < n:
        if pos + 8 > n:
            if not any(buf[pos:n]):  # trailing padding shorter than a header
                break
            raise _truncated("element header", pos)
        if explicit:
            g, e, vr, length = hdr2.unpack_from(buf, pos)
            if vr in _LONG_VRS_BYTES:
                if pos + 12 > n:
                    raise _truncated("element header", pos)
                length = u32.unpack_from(buf, pos + 8)[0]
                vstart = pos + 12
                sequence = vr == b"SQ"
            elif vr.isalpha() and vr.isupper():
                vstart = pos + 8
                sequence = False
            else:
                raise _truncated(f"invalid VR {vr!r} in ({g:04X},{e:04X})", pos)
        else:
            g, e, length = hdr_implicit.unpack_from(buf, pos)
            vstart = pos + 8
            sequence = vr_of((g << 16) | e) == "SQ"  # private tags are not in the dictionary: UN
        if (g << 16) | e > stop_after:
            break
        if length == UNDEFINED or g == 0xFFFE:
            rest, _ = parse(buf, pos, n, syn, in_item=False)
            for el in rest:
                if el.tag in wanted:
                    found[el.tag] = (el.vstart, el.vend)
            if rest:
                last = rest[-1].tag
            break
        vend = vstart + length
        if vend > n:
            raise _truncated(f"value of ({g:04X},{e:04X}) needs {length} bytes", pos)
        last = (g << 16) | e
        if sequence and length >= _DEEP_ENOUGH:
            # A sequence long enough to nest past MAX_NESTING is walked item by item, so that no later
            # reader (pydicom rendering metadata, the de-identifier) meets a tree too deep for it.
            _parse_items(buf, vstart, vend, syn, False, 0)
        if last in wanted:
            found[last] = (vstart, vend)
        pos = vend
    return found, last


# What a medcloud writer puts in (0002,0102) Private Information: the tag of the data set's last
# element. A file cut exactly between two top-level elements parses cleanly; this is how it shows.
_FINAL_PREFIX = b"final element "


def final_element_info(last_tag: int) -> bytes:
    """The Private Information value that declares `last_tag` as the data set's final element."""
    return _FINAL_PREFIX + f"{last_tag:08X}".encode("ascii")


def check_final_element(meta: dict[int, bytes], last_tag: int) -> None:
    """Refuse a file a medcloud writer declared to end with a later element than the one it ends with."""
    info = meta.get(M_PRIVATE_INFO)
    if info is None or not info.startswith(_FINAL_PREFIX):
        return
    if _strip(meta.get(M_PRIVATE_CREATOR, b"")).decode("ascii", errors="replace") != IMPLEMENTATION_CLASS_UID:
        return
    try:
        declared = int(info[len(_FINAL_PREFIX) : len(_FINAL_PREFIX) + 8], 16)
    except ValueError:
        raise InvalidInput("malformed DICOM: unreadable final-element declaration in the file meta") from None
    if last_tag < declared:
        raise InvalidInput(
            f"truncated DICOM file: it ends with ({last_tag >> 16:04X},{last_tag & 0xFFFF:04X}) but was "
            f"written to end with ({declared >> 16:04X},{declared & 0xFFFF:04X})"
        )


# ---- writing --------------------------------------------------------------------------------------


def element_header(syn: Syntax, tag: int, vr: str, length: int) -> bytes:
    """An element's header (tag, VR where explicit, length) in `syn`'s encoding."""
    g, e = tag >> 16, tag & 0xFFFF
    if not syn.explicit:
        return syn.hdr_implicit.pack(g, e, length)
    if vr in LONG_VRS:
        return syn.hdr4.pack(g, e, vr.encode("ascii"), length)
    if length > 0xFFFF:
        raise InvalidInput(f"value of ({g:04X},{e:04X}) too long for VR {vr}")
    return syn.hdr2.pack(g, e, vr.encode("ascii"), length)


def encode_element(syn: Syntax, tag: int, vr: str, value: bytes) -> bytes:
    """One whole element, its value padded to even length as its VR asks."""
    if len(value) & 1:
        value += b"\x00" if vr in ("UI", "OB", "UN") else b" "
    return element_header(syn, tag, vr, len(value)) + value


def part10(
    dataset: bytes, *, sop_class: bytes, sop_instance: str, transfer_syntax: str, version: bytes, last_tag: int
) -> bytes:
    """A Part 10 file: preamble, file meta (declaring the final element) and `dataset` as encoded."""
    le = EXPLICIT_LE_SYNTAX
    meta = b"".join(
        [
            encode_element(le, 0x00020001, "OB", version),
            encode_element(le, M_SOP_CLASS, "UI", sop_class),
            encode_element(le, M_SOP_INSTANCE, "UI", sop_instance.encode("ascii")),
            encode_element(le, M_TRANSFER_SYNTAX, "UI", transfer_syntax.encode("ascii")),
            encode_element(le, 0x00020012, "UI", IMPLEMENTATION_CLASS_UID.encode("ascii")),
            encode_element(le, 0x00020013, "SH", IMPLEMENTATION_VERSION.encode("ascii")),
            encode_element(le, M_PRIVATE_CREATOR, "UI", IMPLEMENTATION_CLASS_UID.encode("ascii")),
            encode_element(le, M_PRIVATE_INFO, "OB", final_element_info(last_tag)),
        ]
    )
    group_len = encode_element(le, 0x00020000, "UL", struct.pack("<I", len(meta)))
    return b"\x00" * 128 + b"DICM" + group_len + meta + dataset
