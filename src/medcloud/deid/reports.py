"""Report text de-identified at the site with the images' key: RIS exports (CSV/TSV) and DICOM SR.

A report leaves the site as `{"study_uid", "patient", "text", "date"}`: the study UID remapped exactly
as the images' StudyInstanceUID (so the hub links the two), the patient pseudonym the images carry,
the text through the one free-text cleaner with its dates moved by the patient's keyed day shift, and
the report date moved by the same amount. Nothing else in the row or the SR leaves.

Images lose their AccessionNumber to de-identification, so a report known only by its accession
number is linked through an `AccessionIndex` kept at the site (built from the original images or a
RIS mapping file); a report that cannot be linked is skipped with its reason, never sent unlinked.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from medcloud.deid import freetext
from medcloud.deid.freetext.patterns import find_dates
from medcloud.deid.keys import Pseudonymizer, SiteKey
from medcloud.deid.text import Scrubber, name_parts
from medcloud.errors import InvalidInput, UnsupportedFormat

__all__ = [
    "AccessionIndex",
    "Columns",
    "DeidReport",
    "Report",
    "ReportDeidentifier",
    "Skipped",
    "read_csv",
    "read_reports",
    "read_sr",
]

# A RIS export larger than this is split before it is sent: no single report comes near it.
MAX_FILE_BYTES = 512 * 1024 * 1024
# The hub takes report text up to this many characters.
MAX_TEXT_CHARS = 100_000
# C0 controls but tab and line breaks: RIS exports carry stray ones, and the hub refuses them.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


@dataclass(frozen=True)
class Report:
    """One report as the site holds it (identifying); `source` says where it came from, for messages."""

    patient_id: str
    text: str
    study_uid: str | None = None
    accession: str | None = None
    date: str | None = None
    # Values known to identify this patient (names, other IDs): removed wherever the text quotes them.
    known: tuple[str, ...] = ()
    source: str = ""


@dataclass(frozen=True)
class DeidReport:
    """One de-identified report, in the shape the hub's `POST /api/v1/reports` takes."""

    study_uid: str
    patient: str
    text: str
    date: str | None
    removed: frozenset[str] = field(default_factory=frozenset)
    source: str = ""

    def to_json(self) -> dict[str, Any]:
        """The wire form: nothing but the four de-identified fields."""
        return {"study_uid": self.study_uid, "patient": self.patient, "text": self.text, "date": self.date}


@dataclass(frozen=True)
class Skipped:
    """A report that was not de-identified (and must not be sent), and why."""

    source: str
    reason: str


def _norm_header(name: str) -> str:
    return re.sub(r"[\s_\-./]", "", unicodedata.normalize("NFKC", name).strip().lower())


@dataclass(frozen=True)
class Columns:
    """Header names per field; matching ignores case, width, spaces, '_', '-', '.' and '/'.

    Every column matching `text` is report text (joined in file order: 所見 then 診断); the first
    column matching each other field is used. `patient_name` is read only to scrub the text."""

    study_uid: tuple[str, ...] = ("study_uid", "StudyInstanceUID", "study instance uid", "スタディUID", "検査UID")
    accession: tuple[str, ...] = (
        "accession", "accession_number", "AccessionNumber", "acc", "受付番号", "オーダー番号", "オーダ番号", "検査番号",
    )  # fmt: skip
    patient_id: tuple[str, ...] = ("patient_id", "PatientID", "pid", "mrn", "患者ID", "患者番号", "カルテ番号")
    text: tuple[str, ...] = (
        "report", "report_text", "text", "findings", "impression", "conclusion",
        "所見", "読影所見", "レポート", "本文", "診断", "結論",
    )  # fmt: skip
    date: tuple[str, ...] = ("date", "study_date", "StudyDate", "report_date", "検査日", "報告日", "読影日")
    patient_name: tuple[str, ...] = (
        "patient_name",
        "PatientName",
        "name",
        "患者氏名",
        "患者名",
        "氏名",
        "カナ氏名",
        "患者カナ",
        "フリガナ",
    )
    # Doctors' names: every matching column is read, only to scrub the text (reports sign and cite them).
    staff_name: tuple[str, ...] = (
        "referring_physician", "ReferringPhysicianName", "physician", "radiologist", "reading_physician",
        "依頼医", "依頼医師", "読影医", "読影医師", "報告医", "主治医", "担当医",
    )  # fmt: skip

    @classmethod
    def with_overrides(cls, overrides: dict[str, list[str]]) -> Columns:
        """Defaults with some fields' header names replaced, e.g. {"text": ["所見", "診断"]}."""
        unknown = set(overrides) - set(cls.__dataclass_fields__)
        if unknown:
            raise InvalidInput(f"unknown report column field(s): {', '.join(sorted(unknown))}")
        return cls(**{k: tuple(v) for k, v in overrides.items()})


def decode_export(data: bytes, name: str = "export") -> str:
    """RIS export bytes as text: UTF-8 (BOM or not), UTF-16 with BOM, else Shift_JIS (cp932)."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            raise InvalidInput(f"{name}: broken UTF-16") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    try:
        # cp932 is Windows' Shift_JIS: a superset (NEC and IBM extensions, ①, ㈱) RIS exports use.
        return data.decode("cp932")
    except UnicodeDecodeError:
        raise InvalidInput(f"{name}: neither UTF-8 nor Shift_JIS (cp932) text") from None


def read_csv(path: Path, columns: Columns | None = None) -> Iterator[Report | Skipped]:
    """Reports from a RIS export (CSV or TSV; UTF-8 or Shift_JIS), one per row; unusable rows are Skipped."""
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise InvalidInput(f"{path}: larger than {MAX_FILE_BYTES} bytes; split the export")
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror or exc}") from None
    yield from parse_csv(
        decode_export(data, str(path)), columns, name=path.name, tsv=path.suffix.lower() in (".tsv", ".tab")
    )


def parse_csv(
    text: str, columns: Columns | None = None, *, name: str = "export", tsv: bool = False
) -> Iterator[Report | Skipped]:
    """Reports from CSV/TSV text (the delimiter is the header line's tab or comma)."""
    cols = columns or Columns()
    first = text.split("\n", 1)[0]
    delimiter = "\t" if tsv or first.count("\t") > first.count(",") else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise InvalidInput(f"{name}: empty export") from None
    except csv.Error as exc:
        raise InvalidInput(f"{name}: unreadable header ({exc})") from None
    normed = [_norm_header(h) for h in header]

    def first_of(candidates: Sequence[str]) -> int | None:
        wanted = [_norm_header(c) for c in candidates]
        for w in wanted:
            if w in normed:
                return normed.index(w)
        return None

    wanted_text = {_norm_header(c) for c in cols.text}
    text_idx = [i for i, h in enumerate(normed) if h in wanted_text]
    wanted_staff = {_norm_header(c) for c in cols.staff_name}
    staff_idx = [i for i, h in enumerate(normed) if h in wanted_staff]
    pid_idx = first_of(cols.patient_id)
    uid_idx = first_of(cols.study_uid)
    acc_idx = first_of(cols.accession)
    date_idx = first_of(cols.date)
    name_idx = first_of(cols.patient_name)
    missing = [
        what for what, ok in (
            ("report text", bool(text_idx)), ("patient id", pid_idx is not None),
            ("study UID or accession number", uid_idx is not None or acc_idx is not None),
        ) if not ok
    ]  # fmt: skip
    if missing:
        raise InvalidInput(
            f"{name}: no column for {', '.join(missing)} (header: {', '.join(header)}); "
            "name them with --column FIELD=HEADER"
        )
    line = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise InvalidInput(f"{name}: malformed CSV after line {line} ({exc})") from None
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue

        def cell(i: int | None, row: list[str] = row) -> str:
            return row[i].strip() if i is not None and i < len(row) else ""

        source = f"{name}:{line}"
        body = "\n".join(c for c in (cell(i) for i in text_idx) if c)
        pid = cell(pid_idx)
        if not pid:
            yield Skipped(source, "no patient id")
            continue
        if not body:
            yield Skipped(source, "no report text")
            continue
        known = [n for v in (cell(name_idx), *(cell(i) for i in staff_idx)) if v for n in _name_needles(v)]
        yield Report(
            patient_id=pid,
            text=body,
            study_uid=cell(uid_idx) or None,
            accession=cell(acc_idx) or None,
            date=cell(date_idx) or None,
            known=tuple(known),
            source=source,
        )


def _name_needles(value: str) -> list[str]:
    """A name as a RIS or DICOM writes it ("山田 太郎", "YAMADA^TARO=山田^太郎") and its parts."""
    out = name_parts(value)
    for group in value.split("="):
        parts = [p for p in re.split(r"[\s\u3000^,]+", group) if p]
        out.extend(parts)
        out.append("".join(parts))
    return [n for n in out if len(n) >= 2]


def read_sr(path: Path) -> Report:
    """The report in a DICOM SR file: its TEXT content items (nested ones too), in document order."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path, force=False)
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        raise InvalidInput(f"{path}: not a readable DICOM file ({exc})") from None
    return sr_report(ds, source=path.name)


def sr_report(ds: Any, *, source: str = "SR") -> Report:
    """The report in a pydicom SR Dataset (see `read_sr`)."""
    if "ContentSequence" not in ds:
        raise UnsupportedFormat(f"{source}: no ContentSequence (not a structured report)")
    texts: list[str] = []

    def walk(items: Iterable[Any], depth: int) -> None:
        if depth > 64:
            raise InvalidInput(f"{source}: SR content nested deeper than 64 levels")
        for item in items:
            if str(item.get("ValueType", "")).upper() == "TEXT":
                value = str(item.get("TextValue", "") or "").strip()
                if value:
                    texts.append(value)
            if "ContentSequence" in item:
                walk(item.ContentSequence, depth + 1)

    walk(ds.ContentSequence, 0)
    known: list[str] = []
    for elem in ds.iterall():
        if elem.VR == "PN" and elem.value:
            for v in elem.value if elem.VM > 1 else [elem.value]:
                known.extend(_name_needles(str(v)))
        elif (
            elem.keyword
            in (
                "OtherPatientIDs",
                "IssuerOfPatientID",
                "InstitutionName",
                "InstitutionAddress",
                "StudyID",
                "PatientTelephoneNumbers",
                "PatientAddress",
            )
            and elem.value
        ):
            known.extend(str(v) for v in (elem.value if elem.VM > 1 else [elem.value]))
    day = str(ds.get("ContentDate", "") or ds.get("StudyDate", "") or "") or None
    pid = str(ds.get("PatientID", "") or "").strip()
    if not pid and ds.get("PatientName"):
        # The image engine's identity for a file without an ID, so the pseudonym and shift still match.
        pid = f"name:{str(ds.PatientName).strip()}|{str(ds.get('PatientBirthDate', '') or '').strip()}"
    return Report(
        patient_id=pid,
        text="\n".join(texts),
        study_uid=str(ds.get("StudyInstanceUID", "") or "").strip() or None,
        accession=str(ds.get("AccessionNumber", "") or "").strip() or None,
        date=day,
        known=tuple(known),
        source=source,
    )


def read_reports(path: Path, columns: Columns | None = None) -> Iterator[Report | Skipped]:
    """Reports from one file: DICOM SR (by its preamble) or a CSV/TSV export."""
    try:
        with path.open("rb") as fh:
            head = fh.read(132)
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror or exc}") from None
    if head[128:132] == b"DICM" or path.suffix.lower() == ".dcm":
        yield read_sr(path)
    else:
        yield from read_csv(path, columns)


class AccessionIndex:
    """Accession number -> (StudyInstanceUID, PatientID) as the site's original images hold them.

    An accession number seen with two different studies is ambiguous and links nothing."""

    def __init__(self) -> None:
        self._map: dict[str, tuple[str, str]] = {}
        self._ambiguous: set[str] = set()

    def __len__(self) -> int:
        return len(self._map)

    def add(self, accession: str, study_uid: str, patient_id: str) -> None:
        """Record one image's (accession, study, patient)."""
        accession, study_uid = accession.strip(), study_uid.strip()
        if not accession or not study_uid or accession in self._ambiguous:
            return
        prior = self._map.get(accession)
        if prior is not None and prior[0] != study_uid:
            del self._map[accession]
            self._ambiguous.add(accession)
            return
        self._map[accession] = (study_uid, patient_id.strip())

    def items(self) -> list[tuple[str, tuple[str, str]]]:
        """Every unambiguous (accession, (study UID, patient ID))."""
        return list(self._map.items())

    def lookup(self, accession: str) -> tuple[str, str]:
        """The study UID and patient ID for an accession number, or InvalidInput saying why not."""
        accession = accession.strip()
        if accession in self._ambiguous:
            raise InvalidInput(f"accession number {accession} names more than one study")
        got = self._map.get(accession)
        if got is None:
            raise InvalidInput(f"accession number {accession} is not among the images seen")
        return got

    @classmethod
    def from_images(cls, folder: Path) -> AccessionIndex:
        """Read AccessionNumber, StudyInstanceUID and PatientID of every DICOM file under `folder`."""
        import pydicom
        from pydicom.errors import InvalidDicomError

        index = cls()
        tags = ["AccessionNumber", "StudyInstanceUID", "PatientID"]
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=tags)
            except (InvalidDicomError, OSError, ValueError, EOFError, AttributeError):
                continue  # not DICOM: nothing to learn from it
            index.add(
                str(ds.get("AccessionNumber", "") or ""),
                str(ds.get("StudyInstanceUID", "") or ""),
                str(ds.get("PatientID", "") or ""),
            )
        return index

    @classmethod
    def from_csv(cls, path: Path) -> AccessionIndex:
        """A RIS mapping export with accession number, study UID and patient id columns."""
        index = cls()
        for item in read_csv(
            path,
            Columns(text=("accession", "accession_number", "AccessionNumber", "受付番号", "オーダー番号", "検査番号")),
        ):
            if isinstance(item, Report) and item.study_uid and item.accession:
                index.add(item.accession, item.study_uid, item.patient_id)
        return index


def parse_report_date(value: str, shift_days: int) -> date | None:
    """A report date (20240401, 2024-04-01, 2024/4/1, 2024年4月1日, 令和6年4月1日, R6.4.1) moved by `shift_days`."""
    v = unicodedata.normalize("NFKC", value).strip()
    if re.fullmatch(r"\d{8}(\d{6}(\.\d+)?)?", v):
        v = f"{v[:4]}-{v[4:6]}-{v[6:8]}"
    for s, _e, kind, repl in find_dates(v, "shift", shift_days):
        if kind != "date" or repl is None or s > 0:
            continue
        m = re.fullmatch(r"(\d{4})(?:-|年)(\d{1,2})(?:-|月)(\d{1,2})日?", repl)
        if m:
            return date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    return None


class ReportDeidentifier:
    """De-identifies reports under one site key, exactly as `Deidentifier` treats the same patient's images.

    `dates`: "shift" (default; the images' Retain Longitudinal Modified Dates), "remove" or "keep"."""

    def __init__(
        self, key: SiteKey, *, accessions: AccessionIndex | None = None, dates: freetext.DateMode = "shift"
    ) -> None:
        self._pseudo = Pseudonymizer(key)
        self._accessions = accessions
        self._dates: freetext.DateMode = dates

    def deidentify(self, report: Report) -> DeidReport:
        """One report de-identified, or InvalidInput saying why it cannot be (it is then not sent)."""
        where = f"{report.source}: " if report.source else ""
        pid = report.patient_id.strip()
        if not pid:
            raise InvalidInput(f"{where}no patient id")
        study = (report.study_uid or "").strip()
        if not study:
            if not report.accession:
                raise InvalidInput(f"{where}neither a study UID nor an accession number")
            if self._accessions is None:
                raise InvalidInput(
                    f"{where}only an accession number, and no accession index (give --images DIR or --accession-map)"
                )
            try:
                study, image_pid = self._accessions.lookup(report.accession)
            except InvalidInput as exc:
                raise InvalidInput(f"{where}{exc.detail}") from None
            if image_pid and image_pid != pid:
                raise InvalidInput(f"{where}accession {report.accession} belongs to another patient's images")
        if not re.fullmatch(r"[0-9]+(\.[0-9]+)*", study) or len(study) > 64:
            raise InvalidInput(f"{where}study UID is not a DICOM UID")
        text = _CONTROL.sub(" ", report.text)
        if len(text) > MAX_TEXT_CHARS:
            raise InvalidInput(f"{where}text longer than {MAX_TEXT_CHARS} characters; not sent")
        shift = self._pseudo.day_shift(pid)
        needles = {pid, study, *(report.known)}
        if report.accession:
            needles.add(report.accession)
        got = freetext.clean(text, known=Scrubber(needles), dates=self._dates, shift_days=shift)
        if got.text is None:
            raise InvalidInput(f"{where}text is mostly identifiers ({', '.join(sorted(got.kinds))}); not sent")
        day: str | None = None
        if report.date and self._dates != "remove":
            moved = parse_report_date(report.date, shift if self._dates == "shift" else 0)
            if moved is None:
                raise InvalidInput(f"{where}cannot read report date {report.date!r}")
            day = moved.isoformat()
        return DeidReport(
            study_uid=self._pseudo.uid(study),
            patient=self._pseudo.patient(pid),
            text=got.text,
            date=day,
            removed=got.kinds,
            source=report.source,
        )

    def deidentify_all(self, items: Iterable[Report | Skipped]) -> tuple[list[DeidReport], list[Skipped]]:
        """Every report de-identified, and those that could not be, with their reasons."""
        done: list[DeidReport] = []
        skipped: list[Skipped] = []
        for item in items:
            if isinstance(item, Skipped):
                skipped.append(item)
                continue
            try:
                done.append(self.deidentify(item))
            except InvalidInput as exc:
                skipped.append(Skipped(item.source, exc.detail))
        return done, skipped
