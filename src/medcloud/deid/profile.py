"""PS3.15 Annex E Table E.1-1 as data, resolved per option set into one `tag -> Action` map.

The Basic Profile column comes from Kitware's `dicom-anonymizer` (BSD-3), which ships the table per
standard edition. We parse its module with `ast` instead of importing it: importing the package pulls
its whole engine (~0.4 s) and we only want the data. The option columns are not in that module; they
are kept here as short keyword lists (see `_OPTION_*`), named after the table's own column headings.
"""

from __future__ import annotations

import ast
import enum
import importlib.util
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from medcloud.errors import ConfigError

EDITION = "2026c"
PROFILE_NAME = f"PS3.15 {EDITION} Table E.1-1"

# The module's list names map to the table's action codes.
_LIST_CODES = {
    "D_TAGS": "D",
    "Z_TAGS": "Z",
    "X_TAGS": "X",
    "U_TAGS": "U",
    "Z_D_TAGS": "Z/D",
    "X_Z_TAGS": "X/Z",
    "X_D_TAGS": "X/D",
    "X_Z_D_TAGS": "X/Z/D",
    "X_Z_U_STAR_TAGS": "X/Z/U*",
}


class Action(enum.IntEnum):
    """What happens to one element; the table's combined codes are resolved to one of these."""

    KEEP = 0
    REMOVE = 1  # X
    EMPTY = 2  # Z
    DUMMY = 3  # D: a non-empty dummy of the same VR (sequences: cleaned recursively)
    UID = 4  # U: keyed remap to 2.25.<int>
    CLEAN = 5  # C: free text cleaned of the header's identifiers, dates shifted
    RECURSE_UID = 6  # U*: sequence kept, its content goes through the profile (UIDs remapped)


def resolve_code(code: str) -> Action:
    """Collapse a table code to one action.

    Combined codes (X/Z, X/D, Z/D, X/Z/D) depend on the IOD's attribute type, which a generic engine
    does not know. We keep the element present (Z or D) so that Type 1/2 attributes stay valid:
    an empty or dummy value identifies nobody either way.
    """
    if code == "X/Z/U*":
        return Action.RECURSE_UID
    parts = code.split("/")
    if "D" in parts and "Z" not in parts:
        return Action.DUMMY
    if "Z" in parts:
        return Action.EMPTY
    return {"X": Action.REMOVE, "D": Action.DUMMY, "U": Action.UID, "K": Action.KEEP, "C": Action.CLEAN}[parts[0]]


@dataclass(frozen=True)
class ProfileTable:
    """The Basic Profile column: exact tags and masked repeating-group rows (curves, overlays)."""

    edition: str
    exact: dict[int, str]
    masked: tuple[tuple[int, int, int, int, str], ...]  # (group, elem, group mask, elem mask, code)

    def code_for(self, tag: int) -> str | None:
        code = self.exact.get(tag)
        if code is not None:
            return code
        group, elem = tag >> 16, tag & 0xFFFF
        for g, e, gm, em, c in self.masked:
            if group & gm == g and elem & em == e:
                return c
        return None


def _table_path() -> Path:
    spec = importlib.util.find_spec("dicomanonymizer")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("dicom-anonymizer is not installed; it provides the PS3.15 table")
    base = Path(next(iter(spec.submodule_search_locations)))
    path = base / "dicom_anonymization_databases" / f"dicomfields_{EDITION}.py"
    if not path.is_file():
        raise ConfigError(f"PS3.15 table for edition {EDITION} not found at {path}")
    return path


@cache
def load_table() -> ProfileTable:
    """Parse the shipped table once per process."""
    tree = ast.parse(_table_path().read_text(encoding="utf-8"))
    exact: dict[int, str] = {}
    masked: list[tuple[int, int, int, int, str]] = []
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
            continue
        target = node.targets[0]
        if not isinstance(target, ast.Name) or target.id not in _LIST_CODES:
            continue
        code = _LIST_CODES[target.id]
        for row in ast.literal_eval(node.value):
            if len(row) == 2:
                exact[(row[0] << 16) | row[1]] = code
            elif len(row) == 4:
                masked.append((row[0], row[1], row[2], row[3], code))
            else:  # pragma: no cover - the table's format changed under us
                raise ConfigError(f"unexpected row {row!r} in PS3.15 table")
    if len(exact) + len(masked) < 500:
        raise ConfigError(f"PS3.15 table at {_table_path()} looks incomplete ({len(exact)} rows)")
    return ProfileTable(EDITION, exact, tuple(masked))


# Option columns of Table E.1-1, by keyword. K = keep, C = clean.
_OPTION_PATIENT_CHARACTERISTICS = {
    "PatientAge": "K",
    "PatientSex": "K",
    "PatientSize": "K",
    "PatientWeight": "K",
    "PatientSexNeutered": "K",
    "EthnicGroup": "K",
    "SmokingStatus": "K",
    "PregnancyStatus": "K",
    "PatientState": "C",
    "MedicalAlerts": "C",
    "Allergies": "C",
    "SpecialNeeds": "C",
    "AdditionalPatientHistory": "C",
    "PatientSpeciesDescription": "K",
    "PatientBreedDescription": "K",
}
_OPTION_DEVICE_IDENTITY = {
    "CassetteID": "K",
    "DetectorID": "K",
    "DeviceDescription": "K",
    "DeviceLabel": "K",
    "DeviceSerialNumber": "K",
    "DeviceUID": "K",
    "GantryID": "K",
    "GeneratorID": "K",
    "LongDeviceDescription": "K",
    "ManufacturerDeviceIdentifier": "K",
    "PerformedStationAETitle": "K",
    "PerformedStationName": "K",
    "PerformedStationNameCodeSequence": "K",
    "PlateID": "K",
    "ScheduledStationAETitle": "K",
    "ScheduledStationName": "K",
    "ScheduledStationNameCodeSequence": "K",
    "SourceSerialNumber": "K",
    "StationName": "K",
    "TreatmentMachineName": "K",
    "XRayDetectorID": "K",
    "XRayDetectorLabel": "K",
    "DateOfLastDetectorCalibration": "K",
    "TimeOfLastDetectorCalibration": "K",
}
_OPTION_INSTITUTION_IDENTITY = {
    "InstitutionName": "K",
    "InstitutionAddress": "K",
    "InstitutionCodeSequence": "K",
    "InstitutionalDepartmentName": "K",
    "InstitutionalDepartmentTypeCodeSequence": "K",
}
# The Clean Descriptors column marks free text that may describe the procedure rather than the
# patient: it is cleaned (C) instead of removed. Rows are picked by keyword so new editions' rows
# join without edits; the explicit names cover descriptors whose keyword says nothing.
_DESCRIPTOR_WORDS = ("Description", "Comment", "Diagnos", "Reason", "History", "Notes", "Narrative")
_DESCRIPTOR_EXTRA = {"ProtocolName", "ContrastBolusAgent", "RequestedContrastAgent", "ImpressionText"}
_DESCRIPTOR_NOT = {"DeviceDescription", "LongDeviceDescription", "Occupation"}
_TEXT_VRS = {"LO", "SH", "ST", "LT", "UT", "UC"}

# Retain Longitudinal Temporal Information (Full or Modified Dates) applies to every temporal VR.
_TEMPORAL_VRS = {"DA", "DT", "TM"}


@dataclass(frozen=True)
class ResolvedProfile:
    """One option set's answer for every table row."""

    actions: dict[int, Action]
    masked: tuple[tuple[int, int, int, int, Action], ...]
    # Temporal rows: actions here are replaced by date shifting / keeping per option at run time.
    temporal: frozenset[int]

    def action_for(self, tag: int) -> Action | None:
        act = self.actions.get(tag)
        if act is not None:
            return act
        if self.masked:
            group, elem = tag >> 16, tag & 0xFFFF
            for g, e, gm, em, a in self.masked:
                if group & gm == g and elem & em == e:
                    return a
        return None


def _tag(keyword: str) -> int | None:
    from pydicom.datadict import tag_for_keyword

    t = tag_for_keyword(keyword)
    return int(t) if t is not None else None


def _vr(tag: int) -> str:
    from pydicom.datadict import dictionary_VR

    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return "UN"


def _keyword(tag: int) -> str:
    from pydicom.datadict import keyword_for_tag

    return str(keyword_for_tag(tag) or "")


@cache
def resolve(
    *,
    retain_uids: bool = False,
    retain_device_identity: bool = False,
    retain_institution_identity: bool = False,
    retain_patient_characteristics: bool = False,
    retain_dates: bool = False,
    clean_descriptors: bool = True,
) -> ResolvedProfile:
    """Combine the Basic Profile with the chosen option columns (cached per option set)."""
    table = load_table()
    codes: dict[int, str] = dict(table.exact)

    def apply(column: dict[str, str]) -> None:
        for kw, code in column.items():
            t = _tag(kw)
            if t is not None:
                codes[t] = code

    if clean_descriptors:
        for t, code in table.exact.items():
            kw = _keyword(t)
            if kw in _DESCRIPTOR_NOT or _vr(t) not in _TEXT_VRS:
                continue
            is_descriptor = kw in _DESCRIPTOR_EXTRA or any(w in kw for w in _DESCRIPTOR_WORDS)
            if is_descriptor and ("X" in code.split("/") or code == "D"):
                codes[t] = "C"
    if retain_patient_characteristics:
        apply(_OPTION_PATIENT_CHARACTERISTICS)
    if retain_device_identity:
        apply(_OPTION_DEVICE_IDENTITY)
    if retain_institution_identity:
        apply(_OPTION_INSTITUTION_IDENTITY)

    actions: dict[int, Action] = {}
    temporal: set[int] = set()
    for t, code in codes.items():
        act = resolve_code(code)
        if act is Action.UID and retain_uids:
            act = Action.KEEP
        actions[t] = act
        if _vr(t) in _TEMPORAL_VRS and act is not Action.KEEP:
            temporal.add(t)
            if retain_dates:
                # Dates are shifted (or kept, for Full Dates) by the engine rather than removed.
                actions[t] = Action.CLEAN
    masked = tuple((g, e, gm, em, resolve_code(c)) for g, e, gm, em, c in table.masked)
    return ResolvedProfile(actions, masked, frozenset(temporal))
