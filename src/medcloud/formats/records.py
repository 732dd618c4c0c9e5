"""Plain records of what was read from a file, shared by ingest, the store and the gateway."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date


@dataclass(frozen=True)
class DicomRecord:
    """What the catalog keeps about one DICOM instance (already de-identified)."""

    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    patient_pseudonym: str
    patient_sex: str | None
    patient_age: str | None
    study_date: date | None
    study_description: str
    modality: str
    body_part: str
    series_description: str
    series_number: int | None
    instance_number: int | None
    rows: int | None
    columns: int | None
    frames: int | None
    transfer_syntax: str


@dataclass(frozen=True)
class ImageRecord:
    """What the catalog keeps about one non-DICOM image (JPEG, PNG, TIFF, SVS)."""

    media_type: str
    filename: str
    width: int | None
    height: int | None
