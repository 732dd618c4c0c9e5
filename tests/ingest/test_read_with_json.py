"""One parse per ingested file: `read_with_json` gives `read_dicom`'s record and refusals and
`stored_json`'s DICOM JSON, whether the strict walk succeeds or the reader falls back to its lenient one."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pydicom.data
import pytest
from pydicom.data import get_testdata_file

from medcloud.errors import InvalidInput, UnsupportedFormat
from medcloud.formats.charset import charset_for
from medcloud.formats.dicom import open_dicom, parse
from medcloud.formats.dicomjson import _Walker, ingest_walk, unpack_stored
from medcloud.ingest.dicom import WANTED, read_dicom
from medcloud.ingest.metadata import read_with_json, stored_json
from tests.hub.conftest import deidentified_dicom

LIMIT = 64 * 1024**2


def _outcome(fn: Any, *args: Any, **kw: Any) -> tuple[Any, Any]:
    try:
        return fn(*args, **kw), None
    except Exception as exc:  # compared, type and words
        return None, (type(exc), str(exc))


def _same(source: bytes | Path, require_deidentified: bool) -> bool:
    """Assert both paths agree on `source`; True if a record (not a refusal) came out."""
    rec, err = _outcome(read_dicom, source, require_deidentified=require_deidentified, max_inflated=LIMIT)
    got, err2 = _outcome(read_with_json, source, require_deidentified=require_deidentified, max_inflated=LIMIT)
    assert err == err2
    if rec is None:
        return False
    record, body = got
    assert record == rec
    expected = stored_json(source, rec, max_inflated=LIMIT)
    assert (body is None) == (expected is None)
    if body is not None and expected is not None:
        assert unpack_stored(body) == unpack_stored(expected)
    return True


def test_every_pydicom_test_file_in_memory_and_on_disk(tmp_path: Path) -> None:
    stored = 0
    # The files shipped with pydicom (get_testdata_files would try to download the others).
    for name in sorted((Path(pydicom.data.__file__).parent / "test_files").glob("*.dcm")):
        data = Path(name).read_bytes()
        path = tmp_path / "f.dcm"
        path.write_bytes(data)
        for source in (data, path):
            for strict in (True, False):
                stored += _same(source, strict)
    assert stored > 100  # most of them are read (and some refused: not de-identified, stale media UID)


@pytest.mark.parametrize("name", ["rtplan.dcm", "JPEG2000.dcm", "SC_rgb_rle_2frame.dcm", "image_dfl.dcm"])
def test_cut_files_get_the_same_refusal(name: str) -> None:
    data = Path(get_testdata_file(name)).read_bytes()
    for cut in range(1, len(data) - 1, max(1, len(data) // 150)):
        assert not _same(data[:cut], False)  # refused, and refused alike


def _with_broken_short_sequence() -> bytes:
    """A de-identified file with one more top-level element: a short defined-length sequence whose only
    item holds four bytes that are not an element. The reader steps over short sequences; the strict
    walk of the DICOM JSON does not."""
    data = deidentified_dicom()
    _, _, _, pos, _ = open_dicom(data)
    item = b"\xfe\xff\x00\xe0" + struct.pack("<I", 4) + b"JUNK"
    element = b"\x08\x00\x40\x11SQ\x00\x00" + struct.pack("<I", len(item)) + item  # (0008,1140)
    return data[:pos] + element + data[pos:]


def test_a_file_only_the_lenient_walk_reads_is_stored_without_json(tmp_path: Path) -> None:
    data = _with_broken_short_sequence()
    record = read_dicom(data)
    got, body = read_with_json(data, require_deidentified=True, max_inflated=LIMIT)
    assert got == record and body is None
    assert stored_json(data, record, max_inflated=LIMIT) is None
    path = tmp_path / "f.dcm"
    path.write_bytes(data)
    assert read_with_json(path, require_deidentified=True, max_inflated=LIMIT) == (record, None)


def test_refusals_are_the_readers(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="not de-identified"):
        read_with_json(Path(get_testdata_file("CT_small.dcm")), require_deidentified=True, max_inflated=LIMIT)
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    with pytest.raises(InvalidInput, match="empty DICOM file"):
        read_with_json(empty, require_deidentified=True, max_inflated=LIMIT)
    with pytest.raises(InvalidInput, match="cannot read"):
        read_with_json(tmp_path / "missing.dcm", require_deidentified=True, max_inflated=LIMIT)


def test_the_one_walk_gives_the_two_walks_answer_on_every_pydicom_file() -> None:
    """Ingest walks a file once (`ingest_walk`) for the record's spans and the JSON; on every file it takes,
    that is the top level `parse` splits and the text `_Walker.text` writes of it, and it never takes a file
    the strict `parse` refuses (those go the two-walk way, which refuses or reads them leniently)."""
    walked = fell_back = 0
    for name in sorted((Path(pydicom.data.__file__).parent / "test_files").glob("*.dcm")):
        try:
            buf, _, syn, pos, _ = open_dicom(name.read_bytes(), inflate_to_disk=True)
        except (InvalidInput, UnsupportedFormat):
            continue
        try:
            elems: list[Any] | None = parse(buf, pos, len(buf), syn, in_item=False)[0]
        except InvalidInput:
            elems = None
        try:
            walk = ingest_walk(buf, syn, pos, WANTED)
        except Exception:
            fell_back += 1
            continue
        assert elems is not None, f"{name.name}: taken by the one walk but refused by parse"
        assert walk.top == {el.tag: (el.vstart, el.vend) for el in elems if el.tag in WANTED}, name.name
        assert walk.last == (elems[-1].tag if elems else -1), name.name
        two = _Walker(buf, syn)
        assert walk.text == two.text(elems, charset_for(b""), True), name.name
        assert (walk.walker.bits, walk.walker.signed) == (two.bits, two.signed), name.name
        walked += 1
    assert walked > 70 and fell_back < 5, (walked, fell_back)


# rtplan.dcm is refused as it is (its media SOP Instance UID differs): mutations of it test refusals alike.
@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small_implicit.dcm", "rtplan.dcm", "SC_rgb_rle_2frame.dcm"])
def test_mutated_files_get_the_same_answer_both_ways(name: str) -> None:
    """Seeded byte mutations in the data set (overwritten, inserted, cut): the one-walk reading and the
    two-walk reading give the same record and JSON, or the same refusal."""
    import random

    data = Path(get_testdata_file(name)).read_bytes()
    _, _, _, pos, _ = open_dicom(data)
    rng = random.Random(f"mutate:{name}")
    read = 0
    for _ in range(150):
        b = bytearray(data)
        at = rng.randrange(pos, min(len(b), pos + 4096))
        kind = rng.randrange(3)
        if kind == 0:
            b[at : at + 4] = rng.randbytes(4)
        elif kind == 1:
            b[at:at] = rng.randbytes(rng.choice((1, 2, 4, 8)))
        else:
            del b[at : at + rng.choice((1, 2, 4, 8))]
        read += _same(bytes(b), False)
    # Some mutations leave a readable file, and those are compared in full.
    assert read > 10 or name == "rtplan.dcm", read
