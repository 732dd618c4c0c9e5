"""The public face of de-identification: options, outcome, and `Deidentifier`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from medcloud.deid.keys import Pseudonymizer, SiteKey
from medcloud.errors import InvalidInput, UnsupportedFormat
from medcloud.formats.limits import MAX_INFLATED_BYTES
from medcloud.formats.sniff import MEDIA_TYPES, sniff

# Modalities whose images usually carry text burned into the pixels when the header is silent.
BURNED_IN_MODALITIES = frozenset({"US", "SC", "ES", "XC", "GM", "OT", "XA", "RF", "DOC"})
# Secondary Capture Image Storage and its multi-frame variants: screenshots by nature.
_SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"


@dataclass(frozen=True)
class DeidOptions:
    """PS3.15 Annex E options; defaults are the Basic Profile plus Clean Descriptors."""

    retain_longitudinal_modified_dates: bool = False
    retain_longitudinal_full_dates: bool = False
    retain_patient_characteristics: bool = False
    retain_device_identity: bool = False
    retain_institution_identity: bool = False
    retain_uids: bool = False
    clean_descriptors: bool = True
    retain_safe_private: bool = False
    # (private creator, element byte) pairs kept under Retain Safe Private, e.g. ("GEMS_PARM_01", 0x13).
    safe_private_allowlist: frozenset[tuple[str, int]] = field(default_factory=frozenset)
    allow_burned_in: bool = False
    burned_in_modalities: frozenset[str] = BURNED_IN_MODALITIES

    def __post_init__(self) -> None:
        if self.retain_longitudinal_full_dates and self.retain_longitudinal_modified_dates:
            raise InvalidInput("choose one of retain_longitudinal_full_dates / _modified_dates")
        for pair in self.safe_private_allowlist:
            if not (
                isinstance(pair, tuple)
                and len(pair) == 2
                and isinstance(pair[0], str)
                and isinstance(pair[1], int)
                and 0 <= pair[1] <= 0xFF
            ):
                raise InvalidInput(f"safe private allowlist entry {pair!r} must be (creator, 0..255)")


@dataclass(frozen=True)
class DeidOutcome:
    """One de-identified file. A quarantined one is de-identified too but must not be forwarded."""

    data: bytes
    kind: Literal["dicom", "image"]
    media_type: str
    quarantine_reason: str | None
    sop_instance_uid: str | None
    patient_pseudonym: str | None
    suggested_name: str


class Deidentifier:
    """De-identifies DICOM and image files with one site key and one option set; may be shared by threads."""

    def __init__(
        self, key: SiteKey, options: DeidOptions | None = None, *, max_inflated: int = MAX_INFLATED_BYTES
    ) -> None:
        """`max_inflated` caps what a deflated DICOM data set may inflate to (the file is refused beyond)."""
        from medcloud.deid import dicom, profile

        self.options = opts = options or DeidOptions()
        self._pseudo = Pseudonymizer(key)
        date_mode = (
            "shift"
            if opts.retain_longitudinal_modified_dates
            else "keep"
            if opts.retain_longitudinal_full_dates
            else "remove"
        )
        resolved = profile.resolve(
            retain_uids=opts.retain_uids,
            retain_device_identity=opts.retain_device_identity,
            retain_institution_identity=opts.retain_institution_identity,
            retain_patient_characteristics=opts.retain_patient_characteristics,
            retain_dates=date_mode != "remove",
            clean_descriptors=opts.clean_descriptors,
        )
        codes = [dicom.CODE_BASIC]
        for flag, code in (
            (opts.clean_descriptors, dicom.CODE_CLEAN_DESCRIPTORS),
            (opts.retain_longitudinal_full_dates, dicom.CODE_FULL_DATES),
            (opts.retain_longitudinal_modified_dates, dicom.CODE_MODIFIED_DATES),
            (opts.retain_patient_characteristics, dicom.CODE_PATIENT_CHARS),
            (opts.retain_device_identity, dicom.CODE_DEVICE),
            (opts.retain_uids, dicom.CODE_UIDS),
            (opts.retain_safe_private, dicom.CODE_SAFE_PRIVATE),
            (opts.retain_institution_identity, dicom.CODE_INSTITUTION),
        ):
            if flag:
                codes.append(code)
        self._dicom = dicom.DicomDeidentifier(
            self._pseudo,
            resolved,
            date_mode=date_mode,
            clean_descriptors=opts.clean_descriptors,
            retain_uids=opts.retain_uids,
            private_allow=opts.safe_private_allowlist if opts.retain_safe_private else frozenset(),
            method_codes=codes,
            max_inflated=max_inflated,
        )

    def deidentify_bytes(self, data: bytes, filename: str) -> DeidOutcome:
        """De-identify one file's bytes; `filename` only helps name the output and messages."""
        kind = sniff(data[:132], bare_dicom=True)
        if kind == "dicom":
            return self._deidentify_dicom(data, filename)
        if kind == "unknown":
            raise UnsupportedFormat(f"{filename}: neither DICOM nor JPEG/PNG/TIFF")
        from medcloud.deid import images

        cleaned, reason = images.strip_metadata(
            data,
            kind,
            filename=filename,
            retain_device_identity=self.options.retain_device_identity,
            allow_burned_in=self.options.allow_burned_in,
        )
        name = _image_name(self._pseudo.uid("file:" + filename + ":" + images.digest(data)), kind, filename)
        return DeidOutcome(cleaned, "image", MEDIA_TYPES[kind], reason, None, None, name)

    def deidentify_file(self, path: Path) -> DeidOutcome:
        try:
            data = Path(path).read_bytes()
        except IsADirectoryError:
            raise InvalidInput(f"{path} is a directory") from None
        except OSError as exc:
            raise InvalidInput(f"cannot read {path}: {exc.strerror}") from None
        return self.deidentify_bytes(data, Path(path).name)

    def _deidentify_dicom(self, data: bytes, filename: str) -> DeidOutcome:
        try:
            out, facts = self._dicom.deidentify(data)
        except (InvalidInput, UnsupportedFormat) as exc:
            raise type(exc)(f"{filename}: {exc.detail}") from None
        except (IndexError, ValueError, KeyError, UnicodeError) as exc:
            # Our span parser indexes within bounds it checked; anything else is a broken file.
            raise InvalidInput(f"{filename}: malformed DICOM ({exc.__class__.__name__}: {exc})") from None
        reason = self._burned_in_reason(facts)
        sop = facts["sop_instance_uid"]
        return DeidOutcome(
            data=out,
            kind="dicom",
            media_type="application/dicom",
            quarantine_reason=reason,
            sop_instance_uid=sop,
            patient_pseudonym=facts["patient_pseudonym"],
            suggested_name=f"{sop}.dcm" if sop else "instance.dcm",
        )

    def _burned_in_reason(self, facts: dict[str, str | None]) -> str | None:
        if self.options.allow_burned_in:
            return None
        flag = facts["burned_in"]
        if flag == "YES":
            return "BurnedInAnnotation=YES: pixels may show identifying text"
        if flag == "NO":
            return None
        modality = facts["modality"] or ""
        sop_class = facts["sop_class_uid"] or ""
        if modality in self.options.burned_in_modalities:
            return f"BurnedInAnnotation absent for modality {modality}, which often burns text in"
        if sop_class.startswith(_SECONDARY_CAPTURE_PREFIX):
            return "BurnedInAnnotation absent on a secondary capture image"
        return None


def _image_name(uid: str, kind: str, filename: str) -> str:
    # Keep a recognised extension (.svs tells slide readers what they hold); never the original stem.
    suffix = Path(filename).suffix.lower()
    if suffix not in {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".svs"}:
        suffix = {"jpeg": ".jpg", "png": ".png", "tiff": ".tif"}[kind]
    return f"{uid}{suffix}"
