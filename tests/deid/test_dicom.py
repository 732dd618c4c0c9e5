from __future__ import annotations

import copy
import datetime as dt
import io
from pathlib import Path

import pydicom
import pytest
from deid_helpers import read, sample, to_bytes
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from medcloud.deid import Deidentifier, DeidOptions, SiteKey
from medcloud.deid.keys import MAX_SHIFT_DAYS
from medcloud.errors import InvalidInput, UnsupportedFormat


def _all_actions_file(ct: Dataset) -> Dataset:
    ct.AccessionNumber = "ACC123"  # Z
    ct.PatientAddress = "1 Main Street"  # X
    ct.AcquisitionFieldOfViewLabel = "FOV of Smith"  # D
    ct.FrameOfReferenceUID = "1.2.3.4.5.6"  # U
    ct.Manufacturer = "GE MEDICAL SYSTEMS"  # not listed: K
    ct.StudyDescription = "Head CT"  # X, C under Clean Descriptors
    ct.ReferencedStudySequence = Sequence([Dataset()])  # X/Z
    ct[0x00081110].value[0].ReferencedSOPInstanceUID = "1.2.3.99"
    ct.SeriesDate = "20200102"  # X/D
    ct.InstitutionName = "Mercy Hospital"  # X/Z/D
    ct.ContentDate = "20200102"  # Z/D
    ref = Dataset()
    ref.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ref.ReferencedSOPInstanceUID = "1.2.3.77"
    ct.ReferencedImageSequence = Sequence([ref])  # X/Z/U*
    ct.add_new(0x50000010, "US", 1)  # curve group: X via (50xx,xxxx)
    ct.add_new(0x60004000, "LT", "overlay note by Smith")  # (60xx,4000) X
    ct.add_new(0x60000010, "US", 128)  # overlay rows: not listed, kept
    return ct


def test_every_action_class(deid: Deidentifier, ct: Dataset) -> None:
    src = _all_actions_file(ct)
    out = read(deid.deidentify_bytes(to_bytes(src), "ct.dcm").data)
    assert "PatientAddress" not in out
    assert out.AccessionNumber == ""
    assert out.AcquisitionFieldOfViewLabel == "ANONYMIZED"
    assert out.FrameOfReferenceUID.startswith("2.25.") and out.FrameOfReferenceUID != "1.2.3.4.5.6"
    assert out.Manufacturer == "GE MEDICAL SYSTEMS"
    assert out.StudyDescription == "Head CT"
    assert "ReferencedStudySequence" in out and len(out.ReferencedStudySequence) == 0
    assert out.SeriesDate == "19000101"
    assert out.InstitutionName == ""
    assert out.ContentDate == ""
    item = out.ReferencedImageSequence[0]
    assert item.ReferencedSOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert item.ReferencedSOPInstanceUID.startswith("2.25.")
    assert 0x50000010 not in out and 0x60004000 not in out
    assert out[0x60000010].value == 128
    assert out.PatientIdentityRemoved == "YES"
    assert list(out.DeidentificationMethod) == [
        "PS3.15 2026c Table E.1-1",
        "Basic Application Confidentiality Profile",
        "Clean Descriptors Option",
    ]
    codes = [c.CodeValue for c in out.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113105"]
    assert out.LongitudinalTemporalInformationModified == "REMOVED"


def test_descriptors_removed_without_clean_descriptors(key: SiteKey, ct: Dataset) -> None:
    ct.StudyDescription = "Head CT"
    out = read(Deidentifier(key, DeidOptions(clean_descriptors=False)).deidentify_bytes(to_bytes(ct), "x").data)
    assert "StudyDescription" not in out
    assert [c.CodeValue for c in out.DeidentificationMethodCodeSequence] == ["113100"]


def test_pixel_data_and_kept_values_are_byte_identical(deid: Deidentifier) -> None:
    for name in ("CT_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "emri_small_RLE.dcm"):
        src = pydicom.dcmread(sample(name))
        out = read(deid.deidentify_bytes(sample(name).read_bytes(), name).data)
        assert out.file_meta.TransferSyntaxUID == src.file_meta.TransferSyntaxUID
        assert out.PixelData == src.PixelData
        assert (out.Rows, out.Columns, out.BitsStored) == (src.Rows, src.Columns, src.BitsStored)


def test_deflated_dataset_is_inflated_to_explicit_little_endian(deid: Deidentifier) -> None:
    out = read(deid.deidentify_bytes(sample("image_dfl.dcm").read_bytes(), "dfl").data)
    assert out.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert out.PixelData == pydicom.dcmread(sample("image_dfl.dcm")).PixelData


def test_identifier_rich_file_leaves_no_survivor(deid: Deidentifier, rich_file: Path) -> None:
    import corpus

    data = rich_file.read_bytes()
    assert len(corpus.planted_survivors(data)) == len(corpus.RICH_VALUES)  # the check sees them all
    out = deid.deidentify_bytes(data, rich_file.name)
    assert corpus.planted_survivors(out.data) == []
    ds = read(out.data)
    region = ds.AnatomicRegionSequence[0]
    assert region.CodeMeaning == "Chest"  # the kept sequence was walked, not dropped
    assert region.ContentDate == ""
    assert region.VerifyingObserverName == "ANONYMIZED"
    assert region.ContentSequence[0].PersonName == "ANONYMIZED"
    assert not [el for el in ds.iterall() if el.tag.is_private]
    assert "RequestAttributesSequence" not in ds and "OtherPatientIDsSequence" not in ds
    # Free text is cleaned, not dropped: the clinical words stay.
    assert ds.StudyDescription.startswith("CT chest for ")
    assert "referred by Dr" in ds.ImageComments


def test_private_tags_removed_and_allowlist_kept(key: SiteKey, ct: Dataset) -> None:
    block = ct.private_block(0x0029, "SAFE VENDOR", create=True)
    block.add_new(0x10, "DS", "1.5")
    block.add_new(0x11, "LO", "secret")
    item = Dataset()
    item.private_block(0x0031, "SAFE VENDOR", create=True).add_new(0x10, "DS", "2.5")
    ct.AnatomicRegionSequence = Sequence([item])
    data = to_bytes(ct)
    plain = read(Deidentifier(key).deidentify_bytes(data, "x").data)
    assert not [el for el in plain.iterall() if el.tag.is_private]
    opts = DeidOptions(retain_safe_private=True, safe_private_allowlist=frozenset({("SAFE VENDOR", 0x10)}))
    kept = read(Deidentifier(key, opts).deidentify_bytes(data, "x").data)
    assert kept.private_block(0x0029, "SAFE VENDOR")[0x10].value == "1.5"
    assert 0x00291011 not in kept
    assert kept.AnatomicRegionSequence[0].private_block(0x0031, "SAFE VENDOR")[0x10].value == "2.5"
    assert b"secret" not in Deidentifier(key, opts).deidentify_bytes(data, "x").data
    assert "113111" in [c.CodeValue for c in kept.DeidentificationMethodCodeSequence]


def test_same_key_same_output_other_key_other_pseudonyms(key: SiteKey) -> None:
    data = sample("CT_small.dcm").read_bytes()
    a = Deidentifier(key).deidentify_bytes(data, "a")
    b = Deidentifier(SiteKey(bytes(range(32)))).deidentify_bytes(data, "a")
    c = Deidentifier(SiteKey(b"\x01" * 32)).deidentify_bytes(data, "a")
    assert a.data == b.data
    assert a.sop_instance_uid == b.sop_instance_uid and a.patient_pseudonym == b.patient_pseudonym
    assert c.sop_instance_uid != a.sop_instance_uid and c.patient_pseudonym != a.patient_pseudonym
    ds = read(a.data)
    assert ds.PatientID == ds.PatientName == a.patient_pseudonym
    assert len(ds.SOPInstanceUID) <= 64 and ds.SOPInstanceUID.startswith("2.25.")


def _series(ct: Dataset, n: int) -> list[Dataset]:
    files = []
    for i in range(n):
        ds = copy.deepcopy(ct)
        ds.SOPInstanceUID = f"1.2.826.0.1.3680043.2.1125.{i + 1}"
        ds.StudyInstanceUID = "1.2.826.0.1.3680043.2.1125.100"
        ds.SeriesInstanceUID = "1.2.826.0.1.3680043.2.1125.200"
        ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.2.1125.300"
        if i:
            ref = Dataset()
            ref.ReferencedSOPClassUID = ds.SOPClassUID
            ref.ReferencedSOPInstanceUID = files[0].SOPInstanceUID
            ds.ReferencedImageSequence = Sequence([ref])
        files.append(ds)
    return files


def test_uid_references_stay_consistent_across_a_series(deid: Deidentifier, ct: Dataset) -> None:
    outs = [deid.deidentify_bytes(to_bytes(ds), f"{i}.dcm") for i, ds in enumerate(_series(ct, 3))]
    dss = [read(o.data) for o in outs]
    assert len({d.StudyInstanceUID for d in dss}) == 1
    assert len({d.SeriesInstanceUID for d in dss}) == 1
    assert len({d.FrameOfReferenceUID for d in dss}) == 1
    assert len({d.SOPInstanceUID for d in dss}) == 3
    for d, o in zip(dss, outs, strict=True):
        assert d.file_meta.MediaStorageSOPInstanceUID == d.SOPInstanceUID == o.sop_instance_uid
        assert o.suggested_name == f"{d.SOPInstanceUID}.dcm"
    for d in dss[1:]:
        assert d.ReferencedImageSequence[0].ReferencedSOPInstanceUID == dss[0].SOPInstanceUID
    assert not any(d.StudyInstanceUID.startswith("1.2.826.0.1.3680043.2.1125") for d in dss)


def test_retain_uids_keeps_them(key: SiteKey, ct: Dataset) -> None:
    out = read(Deidentifier(key, DeidOptions(retain_uids=True)).deidentify_bytes(to_bytes(ct), "x").data)
    assert out.SOPInstanceUID == ct.SOPInstanceUID == out.file_meta.MediaStorageSOPInstanceUID
    assert out.StudyInstanceUID == ct.StudyInstanceUID


def _day(value: str) -> dt.date:
    return dt.datetime.strptime(value, "%Y%m%d").date()


def test_date_shift_is_one_offset_per_patient(key: SiteKey, ct: Dataset) -> None:
    opts = DeidOptions(retain_longitudinal_modified_dates=True)
    deid = Deidentifier(key, opts)
    first, second = _series(ct, 2)
    first.StudyDate, first.PatientBirthDate = "20200301", "19600115"
    second.StudyDate = "20210301"  # a later visit of the same patient
    second.PatientBirthDate = "19600115"
    a, b = (read(deid.deidentify_bytes(to_bytes(d), "x").data) for d in (first, second))
    shift = (_day(a.StudyDate) - _day("20200301")).days
    assert -MAX_SHIFT_DAYS <= shift <= -1
    assert (_day(a.PatientBirthDate) - _day("19600115")).days == shift
    assert (_day(b.StudyDate) - _day("20210301")).days == shift
    assert (_day(b.StudyDate) - _day(a.StudyDate)).days == 365  # intervals survive
    assert a.StudyTime == ct.StudyTime  # whole-day shift keeps the time of day
    assert a.LongitudinalTemporalInformationModified == "MODIFIED"
    assert "113107" in [c.CodeValue for c in a.DeidentificationMethodCodeSequence]
    other = copy.deepcopy(first)
    other.PatientID = "SOMEONE-ELSE"
    c = read(deid.deidentify_bytes(to_bytes(other), "x").data)
    assert c.PatientID != a.PatientID
    # A different patient gets its own offset (almost surely different for these two IDs).
    assert (_day(c.StudyDate) - _day("20200301")).days != shift


def test_without_date_option_dates_follow_the_table(deid: Deidentifier, ct: Dataset) -> None:
    ct.StudyDate, ct.SeriesDate, ct.PatientBirthDate = "20200301", "20200301", "19600115"
    out = read(deid.deidentify_bytes(to_bytes(ct), "x").data)
    assert out.StudyDate == ""  # Z
    assert out.SeriesDate == "19000101"  # X/D resolved to a dummy
    assert out.PatientBirthDate == ""  # Z
    assert out.StudyTime == ""  # Z


def test_retain_characteristics_and_device_identity(key: SiteKey, ct: Dataset) -> None:
    ct.PatientAge, ct.PatientSex, ct.StationName, ct.DeviceSerialNumber = "045Y", "F", "CT01", "SN1"
    data = to_bytes(ct)
    plain = read(Deidentifier(key).deidentify_bytes(data, "x").data)
    assert "PatientAge" not in plain and plain.PatientSex == "" and plain.StationName == ""
    opts = DeidOptions(retain_patient_characteristics=True, retain_device_identity=True)
    kept = read(Deidentifier(key, opts).deidentify_bytes(data, "x").data)
    assert (kept.PatientAge, kept.PatientSex, kept.StationName, kept.DeviceSerialNumber) == ("045Y", "F", "CT01", "SN1")


def test_burned_in_annotation_quarantines(key: SiteKey, ct: Dataset) -> None:
    deid = Deidentifier(key)
    ct.BurnedInAnnotation = "YES"
    assert "BurnedInAnnotation=YES" in (deid.deidentify_bytes(to_bytes(ct), "x").quarantine_reason or "")
    ct.BurnedInAnnotation = "NO"
    assert deid.deidentify_bytes(to_bytes(ct), "x").quarantine_reason is None
    us = sample("US1_UNCR.dcm").read_bytes()
    assert pydicom.dcmread(io.BytesIO(us)).get("BurnedInAnnotation") is None
    out = deid.deidentify_bytes(us, "us.dcm")
    assert "modality US" in (out.quarantine_reason or "")
    assert read(out.data).PatientIdentityRemoved == "YES"  # de-identified all the same
    allowed = Deidentifier(key, DeidOptions(allow_burned_in=True)).deidentify_bytes(us, "us.dcm")
    assert allowed.quarantine_reason is None


def test_malformed_and_truncated_dicom_raise_invalid_input(deid: Deidentifier) -> None:
    data = sample("CT_small.dcm").read_bytes()
    with pytest.raises(InvalidInput, match="truncated"):
        deid.deidentify_bytes(data[: len(data) // 2], "half.dcm")
    with pytest.raises(InvalidInput, match=r"cut\.dcm"):
        deid.deidentify_bytes(data[:700], "cut.dcm")
    with pytest.raises(InvalidInput):
        deid.deidentify_bytes(sample("MR_truncated.dcm").read_bytes(), "mr.dcm")
    with pytest.raises(InvalidInput, match="no dataset"):
        deid.deidentify_bytes(data[:132] + data[132:400].split(b"\x08\x00\x05\x00")[0], "meta-only.dcm")
    with pytest.raises(UnsupportedFormat):
        deid.deidentify_bytes(b"hello, this is a text file\n" * 10, "notes.txt")


def test_japanese_names_are_pseudonymised_and_scrubbed(deid: Deidentifier, ct: Dataset) -> None:
    ct.SpecificCharacterSet = ["", "ISO 2022 IR 87"]
    ct.PatientName = "Yamada^Tarou=山田^太郎=やまだ^たろう"
    ct.StudyDescription = "胸部CT 山田太郎"
    out = read(deid.deidentify_bytes(to_bytes(ct), "jp.dcm").data)
    assert out.StudyDescription == "胸部CT ***"
    assert "山田" not in str(out.PatientName)


def test_public_attribute_sent_as_un_gets_its_real_action(deid: Deidentifier, ct: Dataset) -> None:
    ct.StudyDescription = "Head CT of Yamada "
    ct.PatientAddress = "1 Main Street "
    ct.PatientName = "Yamada^Taro"
    data = to_bytes(ct)
    # pydicom writes the real VR; rewrite both headers as UN, as a node without the dictionary would.
    for tag, vr, n in ((b"\x08\x00\x30\x10", b"LO", 18), (b"\x10\x00\x40\x10", b"LO", 14)):
        old = tag + vr + n.to_bytes(2, "little")
        assert data.count(old) == 1
        data = data.replace(old, tag + b"UN\x00\x00" + n.to_bytes(4, "little"))
    out = deid.deidentify_bytes(data, "un.dcm").data
    assert b"Yamada" not in out and b"Main Street" not in out
    assert read(out).StudyDescription == "Head CT of ***"


def test_trailing_padding_and_group_lengths_are_dropped(deid: Deidentifier, ct: Dataset) -> None:
    ct.add_new(0xFFFCFFFC, "OB", b"old buffer: Yamada Taro MRN 12345\x00")
    ct.add_new(0x00080000, "UL", 1234)
    out = deid.deidentify_bytes(to_bytes(ct), "pad.dcm").data
    assert b"Yamada" not in out
    ds = read(out)
    assert 0xFFFCFFFC not in ds and 0x00080000 not in ds


def test_bare_dataset_without_preamble(deid: Deidentifier, ct: Dataset) -> None:
    buf = io.BytesIO()
    bare = Dataset()
    bare.update({el.tag: el for el in ct if el.tag.group != 2})
    fp = pydicom.filebase.DicomFileLike(buf)
    fp.is_implicit_VR, fp.is_little_endian = True, True  # how old archives stored bare datasets
    pydicom.filewriter.write_dataset(fp, bare)
    data = buf.getvalue()
    assert data[:2] == b"\x08\x00" and b"DICM" not in data[:200]
    out = deid.deidentify_bytes(data, "bare")
    ds = read(out.data)
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2"
    assert ds.SOPInstanceUID == out.sop_instance_uid == ds.file_meta.MediaStorageSOPInstanceUID
    assert ds.PixelData == ct.PixelData


def test_implicit_private_sequence_of_undefined_length_is_removed(deid: Deidentifier) -> None:
    src = pydicom.dcmread(sample("MR_small_implicit.dcm"))
    item = Dataset()
    item.PatientName = "Hidden^Person"
    src.private_block(0x0019, "VENDOR SEQ", create=True).add_new(0x10, "SQ", Sequence([item]))
    src[0x00191010].value.is_undefined_length = True
    data = to_bytes(src)
    assert b"Hidden^Person" in data
    out = deid.deidentify_bytes(data, "mr.dcm").data
    assert b"Hidden" not in out
    assert read(out).PixelData == src.PixelData


def test_make_corpus_writes_fresh_identities(tmp_path: Path) -> None:
    import corpus

    paths = corpus.make_corpus(tmp_path, 22)
    dss = [pydicom.dcmread(p) for p in paths]
    assert len({d.SOPInstanceUID for d in dss}) == 22
    assert len({d.StudyInstanceUID for d in dss}) == 2  # 20 instances per study
    assert all(d.file_meta.MediaStorageSOPInstanceUID == d.SOPInstanceUID for d in dss)
    assert {d.Modality for d in dss} == {"CT", "MR"}
