"""Apply the resolved profile to a DICOM file in one pass over its bytes.

The file is split into element spans by `medcloud.formats.dicom` (no pydicom Dataset: it would cost
more than the whole budget); elements that are kept are copied as byte slices, pixel data included,
and only the elements that change are re-encoded. Sequences are walked at every depth (the reader
bounds the depth) and re-emitted with defined lengths.

Its length: one pass over the elements applies every action of the profile; the actions share the
per-file context (pseudonyms, date shift, scrubber) and are clearer side by side than spread out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

from medcloud.deid import freetext
from medcloud.deid.keys import Pseudonymizer, shift_da, shift_dt
from medcloud.deid.profile import PROFILE_NAME, Action, ResolvedProfile
from medcloud.deid.text import Scrubber, date_forms, name_parts
from medcloud.formats.charset import Charset, charset_for
from medcloud.formats.dicom import (
    EXPLICIT_LE,
    EXPLICIT_LE_SYNTAX,
    IMPLICIT_LE,
    IMPLICIT_LE_SYNTAX,
    M_SOP_CLASS,
    M_SOP_INSTANCE,
    M_TRANSFER_SYNTAX,
    MAX_INFLATED_BYTES,
    T_BIRTH_DATE,
    T_BURNED_IN,
    T_CHARSET,
    T_DEID_CODES,
    T_DEID_METHOD,
    T_IDENTITY_REMOVED,
    T_LONGITUDINAL,
    T_MODALITY,
    T_PATIENT_ID,
    T_PATIENT_NAME,
    T_SOP_CLASS,
    T_SOP_INSTANCE,
    TRAILING_PADDING,
    Elem,
    Syntax,
    dict_vr,
    element_header,
    encode_element,
    part10,
    split_dicom,
)

# Value representations of free text that is kept but scrubbed of the file's identifying values.
_TEXT_VRS = frozenset({"LO", "SH", "ST", "LT", "UT", "UC", "PN"})
# Text outside the table is cleaned of every kind of identifier only where it is long-form free text;
# short LO/SH values there are codes, device and product names (only the file's own values are removed).
_FREE_TEXT_VRS = frozenset({"ST", "LT", "UT"})

# CID 7050 De-identification Method codes.
CODE_BASIC = ("113100", "Basic Application Confidentiality Profile")
CODE_CLEAN_DESCRIPTORS = ("113105", "Clean Descriptors Option")
CODE_FULL_DATES = ("113106", "Retain Longitudinal Temporal Information Full Dates Option")
CODE_MODIFIED_DATES = ("113107", "Retain Longitudinal Temporal Information Modified Dates Option")
CODE_PATIENT_CHARS = ("113108", "Retain Patient Characteristics Option")
CODE_DEVICE = ("113109", "Retain Device Identity Option")
CODE_UIDS = ("113110", "Retain UIDs Option")
CODE_SAFE_PRIVATE = ("113111", "Retain Safe Private Option")
CODE_INSTITUTION = ("113112", "Retain Institution Identity Option")


@cache
def _identifying_tags() -> dict[int, str]:
    """Header attributes whose values must not survive anywhere in the output; value kind per tag."""
    from pydicom.datadict import tag_for_keyword

    kinds = {
        "name": [
            "PatientName",
            "OtherPatientNames",
            "PatientBirthName",
            "PatientMotherBirthName",
            "ReferringPhysicianName",
            "PerformingPhysicianName",
            "OperatorsName",
            "PhysiciansOfRecord",
            "NameOfPhysiciansReadingStudy",
            "RequestingPhysician",
            "ConsultingPhysicianName",
            "ScheduledPerformingPhysicianName",
            "ResponsiblePerson",
            "PersonName",
            "PhysiciansReadingStudyIdentificationSequence",
            "ReviewerName",
            "VerifyingObserverName",
            "PatientAlternativeCalendar",
            "ContentCreatorName",
            "NamesOfIntendedRecipientsOfResults",
            "HumanPerformerName",
            "EvaluatorName",
            "PerformingPhysicianName",
        ],
        "id": [
            "PatientID",
            "OtherPatientIDs",
            "AccessionNumber",
            "StudyID",
            "MedicalRecordLocator",
            "IssuerOfPatientID",
            "PatientTelephoneNumbers",
            "MilitaryRank",
            "BranchOfService",
            "InsurancePlanIdentification",
            "AdmissionID",
            "RequestedProcedureID",
            "ScheduledProcedureStepID",
            "PerformedProcedureStepID",
            "FillerOrderNumberImagingServiceRequest",
            "PlacerOrderNumberImagingServiceRequest",
            "DeviceSerialNumber",
            "StationName",
            "DetectorID",
            "PatientInsurancePlanCodeSequence",
            "PersonTelephoneNumbers",
            "ReferringPhysicianTelephoneNumbers",
        ],
        "text": [
            "PatientAddress",
            "InstitutionName",
            "InstitutionAddress",
            "InstitutionalDepartmentName",
            "ReferringPhysicianAddress",
            "PersonAddress",
            "CountryOfResidence",
            "RegionOfResidence",
            "PatientReligiousPreference",
            "Occupation",
        ],
        "date": [
            "PatientBirthDate",
            "StudyDate",
            "SeriesDate",
            "AcquisitionDate",
            "ContentDate",
            "InstanceCreationDate",
            "PerformedProcedureStepStartDate",
            "AdmittingDate",
        ],
    }
    out: dict[int, str] = {}
    for kind, words in kinds.items():
        for kw in words:
            t = tag_for_keyword(kw)
            if t is not None:
                out[int(t)] = kind
    return out


@cache
def _well_known_uids() -> frozenset[str]:
    from pydicom._uid_dict import UID_dictionary

    return frozenset(UID_dictionary)


@cache
def _class_uid_tags() -> frozenset[int]:
    """UI attributes that name a class, syntax or coding scheme, never an instance."""
    from pydicom._dicom_dict import DicomDictionary

    return frozenset(
        t
        for t, entry in DicomDictionary.items()
        if entry[0] == "UI"
        and (
            entry[4].endswith(("ClassUID", "SyntaxUID", "SchemeUID", "ClassUIDInFile", "SyntaxUIDInFile"))
            or entry[4]
            in {
                "ContextUID",
                "MappingResourceUID",
                "CodingSchemeUID",
                "SOPClassesInStudy",
                "RelatedGeneralSOPClassUID",
                "OriginalSpecializedSOPClassUID",
            }
        )
    )


@dataclass
class FileContext:
    """What one file contributes to its own de-identification (read in a first pass)."""

    charset: Charset
    patient_key: str
    needles: set[str] = field(default_factory=set)
    needle_dates: set[str] = field(default_factory=set)
    scrubber: Scrubber | None = None


def _value(buf: bytes, el: Elem) -> bytes:
    return buf[el.vstart : el.vend]


def _strip(raw: bytes) -> bytes:
    return raw.rstrip(b" \x00")


class DicomDeidentifier:
    """Turns one DICOM file's bytes into de-identified bytes under one resolved profile."""

    def __init__(
        self,
        pseudo: Pseudonymizer,
        profile: ResolvedProfile,
        *,
        date_mode: str,
        clean_descriptors: bool,
        retain_uids: bool,
        private_allow: frozenset[tuple[str, int]],
        method_codes: list[tuple[str, str]],
        max_inflated: int = MAX_INFLATED_BYTES,
    ) -> None:
        self.pseudo = pseudo
        self.profile = profile
        self.date_mode = date_mode  # "remove" | "shift" | "keep"
        self.clean_descriptors = clean_descriptors
        self.retain_uids = retain_uids
        self.private_allow = private_allow
        self.allowed_creators = frozenset(c for c, _ in private_allow)
        self.method_codes = method_codes
        self.max_inflated = max_inflated
        # LO is limited to 64 characters per value, so the edition and each option are one value each.
        self.method_text = "\\".join([PROFILE_NAME] + [name for _, name in method_codes])
        self._identifying = _identifying_tags()
        self._known_uids = _well_known_uids()
        self._class_tags = _class_uid_tags()

    # ---- reading ----------------------------------------------------------------------------
    def split(self, data: bytes) -> tuple[bytes, dict[int, bytes], Syntax, list[Elem], bool]:
        """The file's spans; a deflated data set is inflated to at most `max_inflated` bytes."""
        buf, meta, syn, top, converted = split_dicom(data, max_inflated=self.max_inflated)
        assert isinstance(buf, bytes)  # bytes in, bytes out: only a file mapped by the caller is an mmap
        return buf, meta, syn, top, converted

    def _context(self, buf: bytes, top: list[Elem]) -> tuple[FileContext, dict[int, bytes]]:
        head: dict[int, bytes] = {}
        for el in top:
            if el.tag in (
                T_CHARSET,
                T_SOP_CLASS,
                T_SOP_INSTANCE,
                T_MODALITY,
                T_PATIENT_NAME,
                T_PATIENT_ID,
                T_BIRTH_DATE,
                T_BURNED_IN,
            ):
                head[el.tag] = _strip(_value(buf, el))
            elif el.tag > T_BURNED_IN:
                break
        cs = charset_for(head.get(T_CHARSET, b""))
        pid = cs.decode(head.get(T_PATIENT_ID, b"")).strip()
        if not pid:
            # No ID: the name and birth date are the next best stable identity.
            pid = (
                "name:"
                + cs.decode(head.get(T_PATIENT_NAME, b"")).strip()
                + "|"
                + head.get(T_BIRTH_DATE, b"").decode("latin_1")
            )
        ctx = FileContext(cs, pid)
        self._collect(buf, top, ctx)
        ctx.scrubber = Scrubber(ctx.needles)
        return ctx, head

    def _collect(self, buf: bytes, elems: list[Elem], ctx: FileContext) -> None:
        ident = self._identifying
        for el in elems:
            if el.items is not None:
                for item in el.items:
                    self._collect(buf, item, ctx)
                continue
            kind = ident.get(el.tag)
            if kind is None or el.vstart == el.vend:
                continue
            act = self.profile.action_for(el.tag)
            if act is Action.KEEP:
                continue  # the caller chose to retain it (an option), so it is not scrubbed elsewhere
            raw = _strip(_value(buf, el))
            if not raw:
                continue
            text = ctx.charset.decode(raw)
            for v in text.split("\\"):
                v = v.strip()
                if not v:
                    continue
                if kind == "name":
                    ctx.needles.update(name_parts(v))
                elif kind == "date":
                    ctx.needle_dates.add(v)
                    ctx.needles.update(date_forms(v))
                else:
                    ctx.needles.add(v)
                    if kind == "text":
                        # Addresses and institutions are often quoted in part.
                        ctx.needles.update(p.strip() for p in v.replace("^", ",").split(",") if len(p.strip()) >= 4)

    # ---- writing ----------------------------------------------------------------------------
    def _raw(self, buf: bytes, el: Elem, syn: Syntax) -> bytes:
        if el.explicit == syn.explicit:
            return buf[el.hstart : el.end]
        return (
            element_header(syn, el.tag, el.vr if el.vr != "UN" else dict_vr(el.tag), el.vend - el.vstart)
            + buf[el.vstart : el.vend]
        )

    def _text(self, ctx: FileContext, value: str) -> bytes:
        return ctx.charset.encode(value)

    def _uid_value(self, raw: bytes, tag: int) -> bytes:
        parts = _strip(raw).decode("ascii", errors="replace").split("\\")
        out = []
        for p in parts:
            p = p.strip()
            out.append(p if (not p or p in self._known_uids) else self.pseudo.uid(p))
        return "\\".join(out).encode("ascii")

    def _dummy(self, vr: str, tag: int, length: int, ctx: FileContext) -> bytes:
        if tag == T_PATIENT_ID:
            return self.pseudo.patient(ctx.patient_key).encode("ascii")
        if vr == "DA":
            return b"19000101"
        if vr == "TM":
            return b"000000"
        if vr == "DT":
            return b"19000101000000"
        if vr in ("IS", "DS"):
            return b"0"
        if vr == "AS":
            return b"000Y"
        if vr in ("LO", "SH", "LT", "ST", "UT", "UC", "PN", "CS", "AE", "UR"):
            return b"ANONYMIZED"
        size = {"US": 2, "SS": 2, "UL": 4, "SL": 4, "FL": 4, "FD": 8, "AT": 4, "SV": 8, "UV": 8}.get(vr, 0)
        return b"\x00" * max(length, size)

    def _shift_dates(self, raw: bytes, vr: str, ctx: FileContext) -> bytes:
        days = self.pseudo.day_shift(ctx.patient_key)
        out = []
        fn = shift_da if vr == "DA" else shift_dt
        for v in _strip(raw).decode("latin_1").split("\\"):
            got = fn(v, days) if v.strip() else ""
            out.append(got or "")
        return "\\".join(out).encode("ascii")

    def _clean_text(self, buf: bytes, el: Elem, ctx: FileContext, syn: Syntax, free: bool = False) -> bytes:
        """Text kept by the profile: the file's own identifiers removed; `free` text is cleaned of every
        kind of identifier (deid.freetext) and emptied when it cannot be cleaned with confidence."""
        if free and el.vend > el.vstart:
            text = ctx.charset.decode(_value(buf, el))
            days = self.pseudo.day_shift(ctx.patient_key) if self.date_mode == "shift" else 0
            mode: freetext.DateMode = (
                "shift" if self.date_mode == "shift" else "keep" if self.date_mode == "keep" else "remove"
            )
            got = freetext.clean(text, known=ctx.scrubber, dates=mode, shift_days=days)
            if got.text is None:
                return element_header(syn, el.tag, el.vr, 0)
            if got.kinds:
                return encode_element(syn, el.tag, el.vr, self._text(ctx, got.text.rstrip()))
            return self._raw(buf, el, syn)
        if ctx.scrubber:
            raw = _value(buf, el)
            cleaned = ctx.scrubber.clean(ctx.charset.decode(raw))
            if cleaned is not None:
                return encode_element(syn, el.tag, el.vr, self._text(ctx, cleaned.rstrip()))
        return self._raw(buf, el, syn)

    def _temporal(self, buf: bytes, el: Elem, act: Action, ctx: FileContext, syn: Syntax) -> bytes | None:
        """Dates under the date option; None means "fall through to the table action"."""
        vr = el.vr
        if vr not in ("DA", "DT", "TM") or self.date_mode == "remove":
            return None
        if self.date_mode == "keep" or vr == "TM":
            # Whole-day shifts leave times of day unchanged.
            return self._raw(buf, el, syn)
        return encode_element(syn, el.tag, vr, self._shift_dates(_value(buf, el), vr, ctx))

    def _sequence(self, buf: bytes, el: Elem, ctx: FileContext, syn: Syntax, depth: int) -> bytes:
        parts = []
        assert el.items is not None
        for item in el.items:
            body = b"".join(self._dataset(buf, item, ctx, syn, depth + 1))
            parts.append(syn.tag_fmt.pack(0xFFFE, 0xE000) + syn.u32.pack(len(body)) + body)
        body = b"".join(parts)
        return element_header(syn, el.tag, "SQ", len(body)) + body

    def _dataset(
        self,
        buf: bytes,
        elems: list[Elem],
        ctx: FileContext,
        syn: Syntax,
        depth: int,
        inserts: list[tuple[int, bytes]] | None = None,
    ) -> list[bytes]:
        """Emit one dataset level; `inserts` (sorted by tag) are merged in and replace equal tags."""
        out: list[bytes] = []
        pending = inserts or []
        profile = self.profile
        actions = profile.actions
        allow = self.private_allow
        creators: dict[int, str] = {}
        for el in elems:
            tag = el.tag
            if pending and pending[0][0] <= tag:
                replaced = False
                while pending and pending[0][0] <= tag:
                    replaced = replaced or pending[0][0] == tag
                    out.append(pending.pop(0)[1])
                if replaced:
                    continue
            group = tag >> 16
            if group & 1:
                if not allow:
                    continue
                elem_no = tag & 0xFFFF
                if 0x0010 <= elem_no <= 0x00FF:
                    creator = ctx.charset.decode(_strip(_value(buf, el))).strip()
                    creators[(group << 8) | elem_no] = creator
                    if creator in self.allowed_creators:
                        out.append(self._raw(buf, el, syn))
                    continue
                creator = creators.get((group << 8) | (elem_no >> 8), "")
                if (creator, elem_no & 0xFF) in allow:
                    out.append(self._raw(buf, el, syn))
                continue
            if tag & 0xFFFF == 0 or group == 2 or tag == TRAILING_PADDING:
                # Group lengths are retired and would be wrong after editing; trailing padding can
                # hold leftovers of whatever the writer's buffer held before.
                continue
            act = actions.get(tag)
            if act is None and profile.masked and (group & 0xFF00) in (0x5000, 0x6000):
                act = profile.action_for(tag)
            vr = el.vr
            if act is None:
                # Not in the table: kept, but UIDs are remapped, text scrubbed and sequences walked.
                if el.items is not None:
                    out.append(self._sequence(buf, el, ctx, syn, depth))
                elif vr == "UI":
                    if self.retain_uids or tag in self._class_tags:
                        out.append(self._raw(buf, el, syn))
                    else:
                        out.append(encode_element(syn, tag, vr, self._uid_value(_value(buf, el), tag)))
                elif vr in _TEXT_VRS:
                    out.append(self._clean_text(buf, el, ctx, syn, free=vr in _FREE_TEXT_VRS))
                elif vr in ("DA", "DT") and self.date_mode != "keep":
                    if self.date_mode == "shift":
                        out.append(encode_element(syn, tag, vr, self._shift_dates(_value(buf, el), vr, ctx)))
                    elif _strip(_value(buf, el)).decode("latin_1")[:8] in ctx.needle_dates:
                        out.append(element_header(syn, tag, vr, 0))
                    else:
                        out.append(self._raw(buf, el, syn))
                else:
                    out.append(self._raw(buf, el, syn))
                continue
            if act is Action.KEEP:
                if el.items is not None:
                    out.append(self._sequence(buf, el, ctx, syn, depth))
                else:
                    out.append(self._raw(buf, el, syn))
            elif act is Action.REMOVE:
                continue
            elif act is Action.EMPTY:
                out.append(element_header(syn, tag, "SQ" if el.items is not None else vr, 0))
            elif act is Action.DUMMY:
                if el.items is not None:
                    out.append(self._sequence(buf, el, ctx, syn, depth))
                elif vr == "UI":
                    out.append(encode_element(syn, tag, vr, self._uid_value(_value(buf, el), tag)))
                else:
                    out.append(encode_element(syn, tag, vr, self._dummy(vr, tag, el.vend - el.vstart, ctx)))
            elif act is Action.UID:
                if vr == "UI":
                    out.append(encode_element(syn, tag, vr, self._uid_value(_value(buf, el), tag)))
                elif el.items is not None:
                    out.append(self._sequence(buf, el, ctx, syn, depth))
                else:
                    out.append(element_header(syn, tag, vr, 0))
            elif act is Action.CLEAN:
                if el.items is not None:
                    out.append(self._sequence(buf, el, ctx, syn, depth))
                    continue
                got = self._temporal(buf, el, act, ctx, syn)
                if got is not None:
                    out.append(got)
                elif vr in _TEXT_VRS:
                    out.append(self._clean_text(buf, el, ctx, syn, free=True))
                elif vr in ("DA", "DT", "TM"):
                    out.append(element_header(syn, tag, vr, 0))
                else:
                    out.append(self._raw(buf, el, syn))
            else:  # RECURSE_UID
                if el.items is not None:
                    out.append(self._sequence(buf, el, ctx, syn, depth))
                elif vr == "UI":
                    out.append(encode_element(syn, tag, vr, self._uid_value(_value(buf, el), tag)))
                else:
                    out.append(element_header(syn, tag, vr, 0))
        out.extend(c for _, c in pending)
        return out

    def _method_sequence(self, syn: Syntax) -> bytes:
        items = []
        for value, meaning in self.method_codes:
            body = (
                encode_element(syn, 0x00080100, "SH", value.encode("ascii"))
                + encode_element(syn, 0x00080102, "SH", b"DCM")
                + encode_element(syn, 0x00080104, "LO", meaning.encode("ascii"))
            )
            items.append(syn.tag_fmt.pack(0xFFFE, 0xE000) + syn.u32.pack(len(body)) + body)
        body = b"".join(items)
        return element_header(syn, T_DEID_CODES, "SQ", len(body)) + body

    def deidentify(self, data: bytes) -> tuple[bytes, dict[str, str | None]]:
        """De-identified file bytes plus facts the caller reports (new UIDs, pseudonym, burned-in)."""
        buf, meta, syn, top, converted = self.split(data)
        ctx, head = self._context(buf, top)
        pseudonym = self.pseudo.patient(ctx.patient_key)
        longitudinal = {"shift": b"MODIFIED", "keep": b"UNMODIFIED", "remove": b"REMOVED"}[self.date_mode]
        # These replace whatever the source held under the same tags.
        additions = [
            (T_PATIENT_NAME, encode_element(syn, T_PATIENT_NAME, "PN", pseudonym.encode("ascii"))),
            (T_PATIENT_ID, encode_element(syn, T_PATIENT_ID, "LO", pseudonym.encode("ascii"))),
            (T_IDENTITY_REMOVED, encode_element(syn, T_IDENTITY_REMOVED, "CS", b"YES")),
            (T_DEID_METHOD, encode_element(syn, T_DEID_METHOD, "LO", self.method_text.encode("ascii"))),
            (T_DEID_CODES, self._method_sequence(syn)),
            (T_LONGITUDINAL, encode_element(syn, T_LONGITUDINAL, "CS", longitudinal)),
        ]
        chunks = self._dataset(buf, top, ctx, syn, 0, additions)
        # Every chunk is one whole element, so the last one's header names the data set's final element.
        g, e = syn.tag_fmt.unpack_from(chunks[-1], 0)
        dataset = b"".join(chunks)

        sop_uid_raw = head.get(T_SOP_INSTANCE) or meta.get(M_SOP_INSTANCE, b"")
        sop_uid = _strip(sop_uid_raw).decode("ascii", errors="replace")
        new_sop = sop_uid if (self.retain_uids or not sop_uid) else self.pseudo.uid(sop_uid)
        declared = _strip(meta.get(M_TRANSFER_SYNTAX, b"")).decode("ascii")
        ts = EXPLICIT_LE if converted else (declared or (EXPLICIT_LE if syn.explicit else IMPLICIT_LE))
        mismatched = (syn is IMPLICIT_LE_SYNTAX and ts != IMPLICIT_LE) or (
            syn is EXPLICIT_LE_SYNTAX and ts == IMPLICIT_LE
        )
        if converted or mismatched:
            ts = EXPLICIT_LE if syn.explicit else IMPLICIT_LE
        sop_class = _strip(meta.get(M_SOP_CLASS, b"") or head.get(T_SOP_CLASS, b""))
        out = part10(
            dataset,
            sop_class=sop_class,
            sop_instance=new_sop,
            transfer_syntax=ts,
            version=meta.get(0x00020001, b"\x00\x01"),
            last_tag=(g << 16) | e,
        )
        facts: dict[str, str | None] = {
            "sop_instance_uid": new_sop or None,
            "patient_pseudonym": pseudonym,
            "modality": head.get(T_MODALITY, b"").decode("latin_1").strip() or None,
            "burned_in": head[T_BURNED_IN].decode("latin_1").strip().upper() if T_BURNED_IN in head else None,
            "sop_class_uid": sop_class.decode("ascii", errors="replace") or None,
        }
        return out, facts
