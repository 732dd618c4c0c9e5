"""The hub's two DICOM readers (byte-level in memory, pydicom for big files on disk) agree and refuse cuts."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from medcloud.errors import InvalidInput
from medcloud.ingest.dicom import _read_in_memory, _read_with_pydicom, read_dicom
from tests.hub.conftest import deidentified_dicom

SOURCES = ["CT_small.dcm", "MR_small.dcm", "emri_small.dcm", "JPEG2000.dcm", "SC_rgb_rle_2frame.dcm", "rtplan.dcm"]


@pytest.mark.parametrize("name", SOURCES)
def test_both_readers_agree(tmp_path: Path, name: str) -> None:
    data = Path(get_testdata_file(name)).read_bytes()
    on_disk = tmp_path / name
    on_disk.write_bytes(data)
    try:
        expected = _read_with_pydicom(on_disk, False)
    except InvalidInput as exc:  # some pydicom samples have a stale MediaStorageSOPInstanceUID
        with pytest.raises(InvalidInput):
            _read_in_memory(data, False)
        assert "MediaStorage" in exc.detail
        return
    assert _read_in_memory(data, False) == expected


@pytest.mark.parametrize("cut", [200, 1000, 3000, 20000, -2])
def test_cut_files_are_refused_by_both(tmp_path: Path, cut: int) -> None:
    data = deidentified_dicom()[:cut]
    path = tmp_path / "cut.dcm"
    path.write_bytes(data)
    with pytest.raises(InvalidInput, match=r"truncated|malformed|lacks|not a valid"):
        read_dicom(data)
    with pytest.raises(InvalidInput, match=r"truncated|malformed|lacks|not a valid"):
        read_dicom(path)


def test_every_cut_of_an_image_is_refused() -> None:
    data = deidentified_dicom()
    read_dicom(data)  # the whole file is fine
    for cut in range(140, len(data) - 1, 37):
        with pytest.raises(InvalidInput):
            read_dicom(data[:cut])


@pytest.mark.parametrize("name", ["rtplan.dcm", "JPEG2000.dcm", "SC_rgb_rle_2frame.dcm"])
def test_every_cut_inside_sequences_and_fragments_is_refused(name: str) -> None:
    """Nested sequences (stepped over by their length) and encapsulated pixel data (walked to the delimiter)."""
    data = Path(get_testdata_file(name)).read_bytes()
    try:
        read_dicom(data, require_deidentified=False)
    except InvalidInput as exc:  # a stale MediaStorageSOPInstanceUID in the sample: cuts must still fail
        assert "MediaStorage" in exc.detail
    step = max(1, len(data) // 400)
    for cut in range(140, len(data) - 1, step):
        with pytest.raises(InvalidInput):
            read_dicom(data[:cut], require_deidentified=False)
