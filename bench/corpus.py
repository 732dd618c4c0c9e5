"""Benchmark corpus: pydicom's bundled CT/MR files copied with fresh UIDs and identifying values.

Shared by bench/deid.py and bench/ingest.py, and by the de-identification tests (the identifier-rich
file). Nothing is downloaded: the sources ship inside `pydicom` and `pydicom-data`.
"""

from __future__ import annotations

import contextlib
import random
from pathlib import Path

# Real CT/MR test files, ~40 KB on average, across the transfer syntaxes a gateway meets.
SOURCE_FILES = (
    "CT_small.dcm",
    "MR_small.dcm",
    "MR_small_implicit.dcm",
    "emri_small_RLE.dcm",
    "emri_small_jpeg_ls_lossless.dcm",
    "emri_small_jpeg_2k_lossless.dcm",
    "emri_small.dcm",
)

_FAMILY = ["Yamada", "Suzuki", "Tanaka", "Smith", "Garcia", "Muller", "Rossi", "Dubois", "Kim", "Nguyen"]
_GIVEN = ["Taro", "Hanako", "Ichiro", "John", "Maria", "Hans", "Giulia", "Claire", "Minjun", "Linh"]
_HOSPITALS = ["Sakura General Hospital", "St Mary Clinic", "Hokkaido University Hospital", "Riverside Medical"]

# Values planted in the identifier-rich file; none may survive de-identification.
RICH_VALUES: dict[str, str] = {
    "patient_family": "Yamadera",
    "patient_given": "Kotarou",
    "patient_kanji_family": "山寺",
    "patient_kanji_given": "小太郎",
    "patient_kana": "やまでら",
    "patient_id": "MRN8841203",
    "other_patient_id": "ALT55120",
    "birth_date": "19570412",
    "study_date": "20240305",
    "address": "1-2-3 Hongo Bunkyo Tokyo",
    "telephone": "03-5555-0199",
    "institution": "Tokyo Sakura Memorial Hospital",
    "institution_address": "4-5-6 Nishi-Shinjuku Tokyo",
    "referring": "Suzukawa",
    "performing": "Tanabe",
    "operator": "Satomura",
    "reading": "Kobayakawa",
    "accession": "ACC7731942",
    "station": "CTSAKURA01",
    "serial": "SN99817XQ",
    "private_top": "PRIVNOTE-Yamadera-0412",
    "private_nested": "NESTPRIV-8841203",
    "nested_name": "Higashiyama",
    "nested_date": "20240229",
}


def _testdata(name: str) -> Path:
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name)
    if path is None:
        raise FileNotFoundError(f"pydicom test file {name} is missing (install pydicom-data)")
    return Path(str(path))


def make_corpus(dst: Path, n: int = 2000, seed: int = 7) -> list[Path]:
    """Write `n` DICOM files under `dst`: 20 instances per study, each patient with its own identity."""
    import pydicom
    from pydicom.uid import generate_uid

    rng = random.Random(seed)
    dst.mkdir(parents=True, exist_ok=True)
    sources = [pydicom.dcmread(_testdata(name)) for name in SOURCE_FILES]
    paths: list[Path] = []
    study_uid = series_uid = frame_uid = ""
    for i in range(n):
        ds = sources[i % len(sources)]
        if i % 20 == 0:
            study_uid, series_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()
            fam, giv = rng.choice(_FAMILY), rng.choice(_GIVEN)
            birth = f"19{rng.randrange(30, 99)}0{rng.randrange(1, 9)}1{rng.randrange(0, 9)}"
            patient = (f"{fam}^{giv}", f"P{rng.randrange(10**7):07d}", birth)
            study_date = f"20{rng.randrange(10, 25)}0{rng.randrange(1, 9)}2{rng.randrange(0, 9)}"
            hospital = rng.choice(_HOSPITALS)
        sop_uid = generate_uid()
        ds.PatientName, ds.PatientID, ds.PatientBirthDate = patient
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = study_date
        ds.InstitutionName = hospital
        ds.ReferringPhysicianName = f"{rng.choice(_FAMILY)}^{rng.choice(_GIVEN)}"
        ds.AccessionNumber = f"A{rng.randrange(10**8):08d}"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.SOPInstanceUID = sop_uid
        ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        ds.InstanceNumber = i % 20 + 1
        path = dst / f"{i // 20:04d}" / f"{i:05d}.dcm"
        path.parent.mkdir(exist_ok=True)
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def make_identifier_rich_file(dst: Path) -> Path:
    """One CT file full of identifying values (see RICH_VALUES), written to `dst` (file or folder)."""
    import pydicom
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    v = RICH_VALUES
    ds = pydicom.dcmread(_testdata("CT_small.dcm"))
    for tag in [el.tag for el in ds if el.tag.is_private]:
        del ds[tag]
    ds.SpecificCharacterSet = ["", "ISO 2022 IR 87"]
    ds.PatientName = (
        f"{v['patient_family']}^{v['patient_given']}="
        f"{v['patient_kanji_family']}^{v['patient_kanji_given']}={v['patient_kana']}"
    )
    ds.PatientID = v["patient_id"]
    ds.OtherPatientIDs = v["other_patient_id"]
    ds.PatientBirthDate = v["birth_date"]
    ds.PatientAddress = v["address"]
    ds.PatientTelephoneNumbers = v["telephone"]
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = v["study_date"]
    ds.InstitutionName = v["institution"]
    ds.InstitutionAddress = v["institution_address"]
    ds.ReferringPhysicianName = f"{v['referring']}^Ichiro"
    ds.PerformingPhysicianName = f"{v['performing']}^Hana"
    ds.OperatorsName = f"{v['operator']}^Kenji"
    ds.NameOfPhysiciansReadingStudy = f"{v['reading']}^Emi"
    ds.AccessionNumber = v["accession"]
    ds.StationName = v["station"]
    ds.DeviceSerialNumber = v["serial"]
    ds.StudyDescription = f"CT chest for {v['patient_family']} {v['patient_given']} {v['patient_id']}"
    ds.SeriesDescription = f"follow-up of {v['patient_kanji_family']}{v['patient_kanji_given']}"
    ds.ImageComments = (
        f"Patient {v['patient_given']} {v['patient_family']} born {v['birth_date'][:4]}-"
        f"{v['birth_date'][4:6]}-{v['birth_date'][6:]}, referred by Dr {v['referring']}"
    )
    ds.private_block(0x0009, "ACME RESEARCH", create=True).add_new(0x01, "LO", v["private_top"])

    inner = Dataset()
    inner.PersonName = f"{v['nested_name']}^Jiro"
    inner.Date = v["nested_date"]
    item = Dataset()
    item.RequestedProcedureID = v["accession"]
    item.ScheduledProcedureStepStartDate = v["nested_date"]
    item.ScheduledPerformingPhysicianName = f"{v['nested_name']}^Saburo"
    item.private_block(0x0011, "ACME NESTED", create=True).add_new(0x01, "LO", v["private_nested"])
    item.ContentSequence = Sequence([inner])
    ds.RequestAttributesSequence = Sequence([item])
    # A sequence the profile keeps, so the engine must walk into it rather than drop it whole.
    region = Dataset()
    region.CodeValue, region.CodingSchemeDesignator, region.CodeMeaning = "T-D3000", "SRT", "Chest"
    region.private_block(0x0013, "ACME NESTED", create=True).add_new(0x02, "LO", v["private_nested"])
    region.ContentDate = v["nested_date"]
    region.VerifyingObserverName = f"{v['nested_name']}^Shiro"
    nested = Dataset()
    nested.PersonName = f"{v['nested_name']}^Goro"
    nested.ObservationDateTime = v["nested_date"] + "101500"
    region.ContentSequence = Sequence([nested])
    ds.AnatomicRegionSequence = Sequence([region])
    other = Dataset()
    other.PatientID = v["other_patient_id"]
    other.IssuerOfPatientID = v["institution"]
    ds.OtherPatientIDsSequence = Sequence([other])

    path = dst / "identifier_rich.dcm" if dst.is_dir() else dst
    ds.save_as(path, enforce_file_format=True)
    return path


def planted_survivors(data: bytes) -> list[str]:
    """Names of RICH_VALUES found in a de-identified file: in any element value at any depth, in
    the raw bytes, or (dates) in any common written form."""
    import io

    import pydicom

    found: set[str] = set()
    ds = pydicom.dcmread(io.BytesIO(data), force=True)
    texts: list[str] = []

    def walk(d: pydicom.Dataset) -> None:
        for el in d.iterall():
            if el.VR == "SQ":
                continue
            value = el.value
            texts.append(str(value) if not isinstance(value, bytes) else value.decode("latin_1"))

    walk(ds)
    joined = "\n".join(texts).lower()
    for key, value in RICH_VALUES.items():
        forms = {value}
        if value.isdigit() and len(value) == 8:
            forms |= {f"{value[:4]}-{value[4:6]}-{value[6:]}", f"{value[:4]}/{value[4:6]}/{value[6:]}"}
        encoded = set()
        for f in forms:
            for codec in ("utf-8", "iso2022_jp", "latin_1"):
                with contextlib.suppress(UnicodeEncodeError):
                    encoded.add(f.encode(codec))
        if any(f.lower() in joined for f in forms) or any(e in data for e in encoded if len(e) >= 4):
            found.add(key)
    return sorted(found)
