"""Report de-identification at the site: same key, same links and date shift as the images."""

from __future__ import annotations

import io
from datetime import date, timedelta
from pathlib import Path

import pydicom
import pytest
from deid_helpers import sample
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from medcloud.deid import Deidentifier, DeidOptions, SiteKey
from medcloud.deid.keys import Pseudonymizer
from medcloud.deid.reports import (
    AccessionIndex,
    Columns,
    Report,
    ReportDeidentifier,
    Skipped,
    parse_csv,
    parse_report_date,
    read_csv,
    read_reports,
    read_sr,
)
from medcloud.errors import InvalidInput

STUDY_UID = "1.2.392.200036.9116.2.6.1.48.1214834115.1711929600.123456"
PID = "0012345678"
NAME = "山田 太郎"

ROWS = [
    # (study uid, accession, patient id, name, date, text)
    (
        STUDY_UID, "A240401001", PID, NAME, "令和6年4月1日",
        "山田太郎様（ID 0012345678）胸部CT。令和6年4月1日撮影。右上葉に8mmの結節を認める。気胸なし。"
        "前回2024年3月1日と比較し増大。主治医 佐藤花子先生 連絡先 03-1234-5678、yamada@example.jp",
    ),
    (
        "", "A240402002", "0099999999", "鈴木 一郎", "2024/04/02",
        "鈴木一郎さん、平成30年5月10日の前回検査と比べ胸水は消失。東京都新宿区西新宿2丁目8番1号在住。",
    ),
]  # fmt: skip

IDENTIFYING = [
    "山田", "太郎", "佐藤", "花子", "0012345678", "03-1234-5678", "yamada@example.jp", "鈴木", "一郎",
    "新宿", "令和6年", "2024年3月1日", "平成30年", "A240401001", "A240402002", "0099999999",
]  # fmt: skip


def _ris_export(path: Path, encoding: str = "cp932", delimiter: str = ",") -> Path:
    lines = [delimiter.join(["検査UID", "受付番号", "患者ID", "患者氏名", "検査日", "所見"])]
    for row in ROWS:
        lines.append(delimiter.join(f'"{c}"' for c in row))
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode(encoding))
    return path


def _image(study_uid: str, patient_id: str, accession: str, study_date: str) -> bytes:
    ds = pydicom.dcmread(sample("CT_small.dcm"))
    ds.StudyInstanceUID = study_uid
    ds.PatientID = patient_id
    ds.PatientName = "YAMADA^TARO"
    ds.AccessionNumber = accession
    ds.StudyDate = study_date
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _deid_image(key: SiteKey, data: bytes) -> pydicom.Dataset:
    engine = Deidentifier(key, DeidOptions(retain_longitudinal_modified_dates=True))
    return pydicom.dcmread(io.BytesIO(engine.deidentify_bytes(data, "ct.dcm").data))


def test_shift_jis_export_links_to_the_images_and_leaves_nothing_identifying(key: SiteKey, tmp_path: Path) -> None:
    export = _ris_export(tmp_path / "ris.csv")
    with pytest.raises(UnicodeDecodeError):
        export.read_bytes().decode("utf-8")  # the test really exercises Shift_JIS
    images = tmp_path / "images"
    images.mkdir()
    (images / "a.dcm").write_bytes(_image(STUDY_UID, PID, "A240401001", "20240401"))
    second_study = generate_uid()
    (images / "b.dcm").write_bytes(_image(second_study, "0099999999", "A240402002", "20240402"))

    deid = ReportDeidentifier(key, accessions=AccessionIndex.from_images(images))
    done, skipped = deid.deidentify_all(read_csv(export))
    assert skipped == []
    assert len(done) == 2
    for report in done:
        wire = str(report.to_json())
        for needle in IDENTIFYING:
            assert needle not in wire, (needle, wire)

    # The link: the same key gives the report the de-identified image's StudyInstanceUID and patient.
    image = _deid_image(key, (images / "a.dcm").read_bytes())
    assert done[0].study_uid == image.StudyInstanceUID
    assert done[0].patient == image.PatientID
    # The report reached by accession number links to its own study too.
    image_b = _deid_image(key, (images / "b.dcm").read_bytes())
    assert done[1].study_uid == image_b.StudyInstanceUID

    # The date shift is the image's: StudyDate 2024-04-01 moved exactly as the report date was.
    shifted_study_date = date(int(image.StudyDate[:4]), int(image.StudyDate[4:6]), int(image.StudyDate[6:]))
    assert done[0].date == shifted_study_date.isoformat()
    shift = (shifted_study_date - date(2024, 4, 1)).days
    assert shift < 0
    # Dates inside the text move by the same amount (the era date and the Western one).
    assert f"{shifted_study_date.year}年{shifted_study_date.month}月{shifted_study_date.day}日" in done[0].text
    earlier = date(2024, 3, 1) + timedelta(days=shift)
    assert f"{earlier.year}年{earlier.month}月{earlier.day}日" in done[0].text
    # The clinical content is kept.
    assert "結節を認める" in done[0].text and "気胸なし" in done[0].text
    assert "胸水は消失" in done[1].text
    assert {"name", "phone", "email", "date"} <= done[0].removed


def test_utf8_tsv_with_bom_and_english_headers(key: SiteKey, tmp_path: Path) -> None:
    path = tmp_path / "ris.tsv"
    text = (
        "StudyInstanceUID\tPatientID\tReport\tStudy Date\n"
        f"{STUDY_UID}\t{PID}\tNo pneumothorax. Dr John Smith.\t20240401\n"
    )
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    done, skipped = ReportDeidentifier(key).deidentify_all(read_reports(path))
    assert skipped == [] and len(done) == 1
    assert "Smith" not in done[0].text and "No pneumothorax" in done[0].text
    assert done[0].study_uid == Pseudonymizer(key).uid(STUDY_UID)


def test_configured_headers_and_several_text_columns(key: SiteKey) -> None:
    text = f"uid,kanja,shoken,shindan\n{STUDY_UID},{PID},右肺に結節。,肺癌疑い。\n"
    cols = Columns.with_overrides({"study_uid": ["uid"], "patient_id": ["kanja"], "text": ["shoken", "shindan"]})
    (report,) = list(parse_csv(text, cols))
    assert isinstance(report, Report)
    assert report.text == "右肺に結節。\n肺癌疑い。"


def test_missing_columns_are_named(key: SiteKey) -> None:
    with pytest.raises(InvalidInput, match="patient id"):
        list(parse_csv("study_uid,report\n1.2.3,text\n"))
    with pytest.raises(InvalidInput, match="unknown report column"):
        Columns.with_overrides({"colour": ["x"]})


def test_rows_that_cannot_be_linked_are_skipped_not_sent(key: SiteKey) -> None:
    text = "accession,patient_id,report\nA1,P1,no link without an index\n,P2,no study at all\nA3,,no patient\n"
    done, skipped = ReportDeidentifier(key).deidentify_all(parse_csv(text))
    assert done == []
    reasons = " | ".join(s.reason for s in skipped)
    assert "accession index" in reasons and "neither a study UID nor an accession" in reasons
    assert "no patient id" in reasons
    assert all(isinstance(s, Skipped) for s in skipped)


def test_accession_of_another_patient_or_ambiguous_is_refused(key: SiteKey) -> None:
    index = AccessionIndex()
    index.add("A1", "1.2.3", "P1")
    index.add("A2", "1.2.4", "P2")
    index.add("A2", "1.2.5", "P2")
    deid = ReportDeidentifier(key, accessions=index)
    with pytest.raises(InvalidInput, match="another patient"):
        deid.deidentify(Report(patient_id="P9", text="結節なし", accession="A1"))
    with pytest.raises(InvalidInput, match="more than one study"):
        deid.deidentify(Report(patient_id="P2", text="結節なし", accession="A2"))
    assert deid.deidentify(Report(patient_id="P1", text="結節なし", accession="A1")).study_uid == Pseudonymizer(
        key
    ).uid("1.2.3")


def test_a_text_of_nothing_but_identifiers_is_not_sent(key: SiteKey) -> None:
    with pytest.raises(InvalidInput, match="mostly identifiers"):
        ReportDeidentifier(key).deidentify(Report(patient_id=PID, text="山田太郎 03-1234-5678", study_uid=STUDY_UID))


def test_date_modes(key: SiteKey) -> None:
    report = Report(patient_id=PID, text="2024年4月1日 結節なし", study_uid=STUDY_UID, date="2024-04-01")
    assert ReportDeidentifier(key, dates="remove").deidentify(report).date is None
    removed = ReportDeidentifier(key, dates="remove").deidentify(report).text
    assert "2024" not in removed
    assert ReportDeidentifier(key, dates="keep").deidentify(report).date == "2024-04-01"
    with pytest.raises(InvalidInput, match="report date"):
        ReportDeidentifier(key).deidentify(Report(patient_id=PID, text="結節なし", study_uid=STUDY_UID, date="soon"))


@pytest.mark.parametrize(
    "value", ["20240401", "2024-04-01", "2024/4/1", "2024年4月1日", "令和6年4月1日", "R6.4.1", "２０２４－０４－０１"]
)
def test_report_date_forms(value: str) -> None:
    assert parse_report_date(value, -1) == date(2024, 3, 31)


def _sr(path: Path) -> Path:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = STUDY_UID
    ds.PatientID = PID
    ds.PatientName = "YAMADA^TARO=山田^太郎"
    ds.ReferringPhysicianName = "SATO^HANAKO"
    ds.AccessionNumber = "A240401001"
    ds.ContentDate = "20240401"
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.ValueType = "CONTAINER"

    def text_item(value: str) -> Dataset:
        item = Dataset()
        item.ValueType = "TEXT"
        item.TextValue = value
        return item

    nested = Dataset()
    nested.ValueType = "CONTAINER"
    nested.ContentSequence = Sequence([text_item("Impression: suspicious for metastasis; Dr Sato to follow up.")])
    code = Dataset()
    code.ValueType = "CODE"
    ds.ContentSequence = Sequence([text_item("Yamada Taro: 右上葉に結節を認める。"), code, nested])
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(path, enforce_file_format=True)
    return path


def test_dicom_sr_text_items_nested_ones_too(key: SiteKey, tmp_path: Path) -> None:
    report = read_sr(_sr(tmp_path / "report.dcm"))
    assert report.text.splitlines() == [
        "Yamada Taro: 右上葉に結節を認める。",
        "Impression: suspicious for metastasis; Dr Sato to follow up.",
    ]
    assert report.study_uid == STUDY_UID and report.accession == "A240401001"
    (again,) = list(read_reports(tmp_path / "report.dcm"))
    assert again == report
    out = ReportDeidentifier(key).deidentify(report)
    for needle in ("Yamada", "Taro", "Sato", "A240401001", PID):
        assert needle not in out.text, (needle, out.text)
    assert "結節を認める" in out.text and "metastasis" in out.text
    assert out.study_uid == Pseudonymizer(key).uid(STUDY_UID)


def test_pydicom_bundled_sr_reads(key: SiteKey) -> None:
    report = read_sr(Path(sample("test-SR.dcm")))
    assert report.text  # the file holds TEXT items
    assert ReportDeidentifier(key).deidentify(report).study_uid.startswith("2.25.")


def test_export_in_neither_encoding_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(b"study_uid,patient_id,report\n1.2.3,P1,\x82\xff\xfe\n")
    with pytest.raises(InvalidInput, match="neither UTF-8 nor Shift_JIS"):
        list(read_csv(path))


def test_control_characters_are_blanked_and_overlong_text_is_not_sent(key: SiteKey) -> None:
    deid = ReportDeidentifier(key)
    out = deid.deidentify(Report(patient_id=PID, text="結節\x00なし\x0c。\tOK\n", study_uid=STUDY_UID))
    assert out.text == "結節 なし 。\tOK\n"
    with pytest.raises(InvalidInput, match="longer than"):
        deid.deidentify(Report(patient_id=PID, text="結節なし。" * 30_000, study_uid=STUDY_UID))


def test_sr_without_patient_id_gets_the_images_pseudonym_and_shift(key: SiteKey, tmp_path: Path) -> None:
    path = _sr(tmp_path / "report.dcm")
    ds = pydicom.dcmread(path)
    del ds.PatientID
    ds.PatientBirthDate = "19600101"
    ds.save_as(path)
    image = pydicom.dcmread(sample("CT_small.dcm"))
    del image.PatientID
    image.PatientName = ds.PatientName
    image.PatientBirthDate = "19600101"
    image.StudyInstanceUID = STUDY_UID
    image.StudyDate = "20240401"
    image.SpecificCharacterSet = "ISO_IR 192"
    out = _deid_image(key, _to_bytes(image))
    report = ReportDeidentifier(key).deidentify(read_sr(path))
    assert report.patient == out.PatientID
    assert report.date == date(int(out.StudyDate[:4]), int(out.StudyDate[4:6]), int(out.StudyDate[6:])).isoformat()


def _to_bytes(ds: pydicom.Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_doctor_name_columns_scrub_the_text(key: SiteKey) -> None:
    text = f"study_uid,patient_id,依頼医,report\n{STUDY_UID},{PID},Mark Stone,Nodule; reported to Mark Stone.\n"
    (report,) = list(parse_csv(text))
    assert isinstance(report, Report)
    out = ReportDeidentifier(key).deidentify(report)
    # The cleaner alone keeps "Mark Stone" (both are words); the column says it is a name.
    assert "Stone" not in out.text and "Mark" not in out.text and "Nodule" in out.text


def test_accession_map_csv(key: SiteKey, tmp_path: Path) -> None:
    path = tmp_path / "map.csv"
    path.write_bytes(f"受付番号,検査UID,患者ID\r\nA1,{STUDY_UID},{PID}\r\n".encode("cp932"))
    index = AccessionIndex.from_csv(path)
    assert index.lookup("A1") == (STUDY_UID, PID)
    out = ReportDeidentifier(key, accessions=index).deidentify(Report(patient_id=PID, text="結節なし", accession="A1"))
    assert out.study_uid == Pseudonymizer(key).uid(STUDY_UID)
