"""The DICOM byte reader and writer: one vocabulary from pydicom, bounded walks, truncation found."""

from __future__ import annotations

import struct

import pytest
from pydicom.datadict import dictionary_VR

from medcloud.errors import InvalidInput, UnsupportedFormat
from medcloud.formats import dicom
from tests.formats.dicom_builders import deflate_bomb, nested_sequences, part10, sample


def test_vocabulary_comes_from_pydicom() -> None:
    assert {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"} == dicom.LONG_VRS
    assert dicom.DEFLATED == "1.2.840.10008.1.2.1.99"
    assert dicom.tag("PixelData") == 0x7FE00010
    for t in (0x00100010, 0x00280010, 0x60000010, 0x60220040, 0x50100030, 0x00280402, 0x10000011):
        assert dicom.dict_vr(t) == str(dictionary_VR(t))[:2], hex(t)
    assert dicom.dict_vr(0x00991234 & ~0x00010000) == "UN"  # a public tag the dictionary lacks


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "rtplan.dcm"])
def test_split_walks_every_element_to_the_end(name: str) -> None:
    data = sample(name)
    buf, _, _, top, _ = dicom.split_dicom(data)
    assert top[-1].end == len(buf)
    for cut in range(200, len(data) - 1, max(1, len(data) // 50)):
        try:
            _, _, _, cut_top, _ = dicom.split_dicom(data[:cut])
        except InvalidInput:
            continue
        # Only a cut exactly between two top-level elements parses; it then ends early.
        assert cut_top[-1].end == cut and len(cut_top) < len(top)


def test_not_dicom() -> None:
    with pytest.raises(UnsupportedFormat):
        dicom.open_dicom(b"hello" * 40)


@pytest.mark.parametrize("undefined", [True, False])
def test_defect10_5a_deep_nesting_is_refused_not_a_recursion_error(undefined: bool) -> None:
    """Issue 10 (5a): 1,000 nested sequences raised RecursionError; now a clear InvalidInput."""
    with pytest.raises(InvalidInput, match="nested deeper than"):
        dicom.split_dicom(nested_sequences(1000, undefined=undefined))
    dicom.split_dicom(nested_sequences(dicom.MAX_NESTING - 1, undefined=undefined))  # real depths pass


def test_defect10_3_deflate_bomb_is_refused_without_inflating_it() -> None:
    """Issue 10 (3): a deflated data set inflating past the limit is refused, with memory bounded."""
    import tracemalloc

    bomb = deflate_bomb(64 * 1024**2)
    assert len(bomb) < 1_000_000
    tracemalloc.start()
    try:
        with pytest.raises(InvalidInput, match="inflates to more than"):
            dicom.open_dicom(bomb, max_inflated=16 * 1024**2)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024**2, peak
    buf, _, _, _, converted = dicom.open_dicom(bomb, max_inflated=64 * 1024**2)  # within the limit: read
    assert converted and len(buf) == 64 * 1024**2


def test_corrupt_deflate_is_invalid_input() -> None:
    data = part10(b"\x01\x02garbage" * 20, transfer_syntax=dicom.DEFLATED)
    with pytest.raises(InvalidInput, match="corrupt"):
        dicom.open_dicom(data)


def test_defect10_4_dict_vr_lookups_keep_no_memory() -> None:
    """Issue 10 (4): distinct unknown tags (300k in one upload) grew a cache without limit (313 MB)."""
    import tracemalloc

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(60_000):
            dicom.dict_vr(0x00090000 | (i & 0xFFFF) | ((i >> 16) << 17))
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 1024**2, grown


def test_final_element_declared_by_the_writer_finds_a_cut_between_elements() -> None:
    """Issue 10 (11): a file cut exactly between two top-level elements parses cleanly on its own."""
    body = struct.pack("<HH2sH", 0x0008, 0x0060, b"CS", 2) + b"CT"
    last = struct.pack("<HH2sH", 0x0010, 0x0020, b"LO", 2) + b"P1"
    whole = dicom.part10(
        body + last,
        sop_class=b"1.2",
        sop_instance="2.25.9",
        transfer_syntax=dicom.EXPLICIT_LE,
        version=b"\x00\x01",
        last_tag=0x00100020,
    )
    dicom.split_dicom(whole)
    with pytest.raises(InvalidInput, match=r"truncated DICOM file: it ends with \(0008,0060\)"):
        dicom.split_dicom(whole[: -len(last)])


@pytest.mark.parametrize("declared", [b"ISO_IR\x00100", b"ISO 2022 IR 87\\ISO\x01IR 13", b"\xff\xfe", b"iso_ir 100"])
def test_a_character_set_term_outside_the_code_string_repertoire_is_the_default(declared: bytes) -> None:
    """A Specific Character Set with a NUL in a term reached codecs.lookup and was a 500 at the hub
    (bench/fuzz_ingest.py --seed 7 --replay pydicom:1661)."""
    from medcloud.formats.charset import charset_for

    cs = charset_for(declared)
    assert cs.decode(b"Yamada^Taro") == "Yamada^Taro"
    assert cs.decode(cs.encode("Yamada^Taro")) == "Yamada^Taro"


def test_vr_code_table_accepts_exactly_the_codes_the_check_accepts() -> None:
    """`parse` looks an explicit VR code up in a table; it must hold every code the rule accepts, no more."""
    every = {}
    for a in range(256):
        for b in range(256):
            text = bytes((a, b)).decode("latin_1")
            if text.isalpha() and text.isupper():
                every[bytes((a, b))] = (text, text in dicom.LONG_VRS)
    assert every == dicom._VR_CODES
    assert dicom._VR_CODES[b"OB"] == ("OB", True) and dicom._VR_CODES[b"PN"] == ("PN", False)


@pytest.mark.parametrize("code", [b"ob", b"1A", b"\x00\x00", b"A ", b"Pn"])
def test_an_element_with_an_invalid_vr_code_is_refused_by_name(code: bytes) -> None:
    # (0010,0010) in explicit little endian with a VR code that is not two capitals.
    body = struct.pack("<HH2sH", 0x0010, 0x0010, code, 4) + b"ABCD"
    with pytest.raises(InvalidInput, match=r"invalid VR .* in \(0010,0010\)"):
        dicom.parse(body, 0, len(body), dicom.EXPLICIT_LE_SYNTAX, in_item=False)


def test_parse_gives_each_element_its_spans() -> None:
    body = (
        struct.pack("<HH2sH", 0x0008, 0x0060, b"CS", 2) + b"CT"
        + struct.pack("<HH2s2xI", 0x0009, 0x1010, b"OB", 4) + b"\x01\x02\x03\x04"
    )  # fmt: skip
    elems, end = dicom.parse(body, 0, len(body), dicom.EXPLICIT_LE_SYNTAX, in_item=False)
    assert end == len(body)
    assert [(e.tag, e.vr, e.hstart, e.vstart, e.vend, e.end, e.explicit, e.items) for e in elems] == [
        (0x00080060, "CS", 0, 8, 10, 10, True, None),
        (0x00091010, "OB", 10, 22, 26, 26, True, None),
    ]
    implicit = struct.pack("<HHI", 0x0010, 0x0020, 4) + b"ID12"
    (el,), _ = dicom.parse(implicit, 0, len(implicit), dicom.IMPLICIT_LE_SYNTAX, in_item=False)
    assert (el.tag, el.vr, el.vstart, el.vend) == (0x00100020, "LO", 8, 12)


def test_the_json_writers_cache_of_short_values_stays_bounded() -> None:
    """Every short value written is kept for the next file (by character set and byte order); however many
    distinct values and character sets come, the tables hold at most their bound."""
    from medcloud.formats import dicomjson
    from tests.formats.dicom_builders import _el, part10

    charsets = [b"", b"ISO_IR 100", b"ISO_IR 192", b"ISO_IR 144", b"ISO_IR 101", b"ISO_IR 126"]
    bound = dicomjson._VALUE_TABLES_MAX * dicomjson._VALUE_TEXTS_MAX
    for i in range(3 * dicomjson._VALUE_TEXTS_MAX):
        charset = charsets[i % len(charsets)]
        dataset = _el(8, 5, b"CS", charset + b" " * (len(charset) % 2)) + _el(
            8, 0x1030, b"LO", f"study {i:06d}".encode()
        )
        text = dicomjson.file_json(part10(dataset, sop=f"2.25.{i + 10}"), None)
        assert f"study {i:06d}".encode() in text
        held = sum(len(table) for table in dicomjson._VALUE_TEXTS.values())
        assert len(dicomjson._VALUE_TEXTS) <= dicomjson._VALUE_TABLES_MAX and held <= bound
