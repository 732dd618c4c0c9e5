"""The hub's DICOM reader: bytes in memory and a mapped file on disk agree with pydicom and refuse cuts."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from medcloud.errors import InvalidInput
from medcloud.formats.records import DicomRecord
from medcloud.ingest.dicom import read_dicom
from tests.hub.conftest import deidentified_dicom

SOURCES = [
    "CT_small.dcm",
    "MR_small.dcm",
    "emri_small.dcm",
    "JPEG2000.dcm",
    "SC_rgb_rle_2frame.dcm",
    "rtplan.dcm",
    "image_dfl.dcm",
]


def _record_by_pydicom(path: Path) -> DicomRecord:
    """The record as pydicom reads the file: the oracle both forms of the reader must agree with."""
    ds = pydicom.dcmread(path)

    def text(keyword: str) -> str:
        value = ds.get(keyword)
        return "" if value is None else str(value).strip()

    def number(keyword: str) -> int | None:
        value = ds.get(keyword)
        return None if value in (None, "") else int(value)

    study_date = text("StudyDate")
    return DicomRecord(
        study_uid=text("StudyInstanceUID"),
        series_uid=text("SeriesInstanceUID"),
        sop_uid=text("SOPInstanceUID"),
        sop_class_uid=text("SOPClassUID"),
        patient_pseudonym=text("PatientID") or "UNKNOWN",
        patient_sex=text("PatientSex") or None,
        patient_age=text("PatientAge") or None,
        study_date=dt.date(int(study_date[:4]), int(study_date[4:6]), int(study_date[6:8])) if study_date else None,
        study_description=text("StudyDescription"),
        modality=text("Modality").upper(),
        body_part=text("BodyPartExamined"),
        series_description=text("SeriesDescription"),
        series_number=number("SeriesNumber"),
        instance_number=number("InstanceNumber"),
        rows=number("Rows"),
        columns=number("Columns"),
        frames=number("NumberOfFrames"),
        transfer_syntax=str(ds.file_meta.TransferSyntaxUID),
    )


@pytest.mark.parametrize("name", SOURCES)
def test_both_readers_agree(tmp_path: Path, name: str) -> None:
    data = Path(get_testdata_file(name)).read_bytes()
    on_disk = tmp_path / name
    on_disk.write_bytes(data)
    try:
        from_disk = read_dicom(on_disk, require_deidentified=False)
    except InvalidInput as exc:  # some pydicom samples have a stale MediaStorageSOPInstanceUID
        with pytest.raises(InvalidInput):
            read_dicom(data, require_deidentified=False)
        assert "MediaStorage" in exc.detail
        assert pydicom.dcmread(on_disk).file_meta.MediaStorageSOPInstanceUID != pydicom.dcmread(on_disk).SOPInstanceUID
        return
    assert read_dicom(data, require_deidentified=False) == from_disk == _record_by_pydicom(on_disk)


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
