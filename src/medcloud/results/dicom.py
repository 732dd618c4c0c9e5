"""Build the DICOM objects of a result with highdicom: boxes -> Comprehensive 3D SR (TID 1500), masks -> SEG.

Every object joins its source study (same Study Instance UID, patient and study modules copied from the
source by highdicom) in a new series whose UIDs come from the hub's UID root, references the source SOP
instances it was made from, and carries the source's de-identification markers: a result is derived
from already pseudonymised instances and must not look less de-identified than they do.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from medcloud.errors import InvalidInput
from medcloud.results.model import LOCAL_SCHEME, Box, FindingCode, ResultSpec, finding_code

__all__ = ["SEG_SERIES_NUMBER", "SR_SERIES_NUMBER", "build_seg", "build_sr", "new_uid"]

MANUFACTURER = "medcloud"
SR_SERIES_NUMBER = 9001
SEG_SERIES_NUMBER = 9002
SCORE = Code("score", LOCAL_SCHEME, "Detection score")
NO_UNITS = Code("1", "UCUM", "no units")
IMAGING_PROCEDURE = Code("363679005", "SCT", "Imaging procedure")
ABNORMAL_STRUCTURE = Code("49755003", "SCT", "Morphologically abnormal structure")
# What a result takes over from its source beyond highdicom's patient/study modules: the markers the
# hub's ingest checks, and the descriptors the catalog indexes a study by.
INHERITED = (
    "SpecificCharacterSet",
    "PatientIdentityRemoved",
    "DeidentificationMethod",
    "DeidentificationMethodCodeSequence",
    "LongitudinalTemporalInformationModified",
    "PatientAge",
    "PatientSex",
    "StudyDescription",
    "BodyPartExamined",
)


def new_uid(root: str | None = None) -> str:
    """A fresh UID under `root` (the hub's UID root), or a UUID-derived 2.25 UID when no root is set."""
    value = uuid.uuid4().int
    if not root:
        return f"2.25.{value}"
    uid = f"{root.rstrip('.')}.{value}"
    return uid[:64]


def _inherit(derived: Dataset, source: Dataset, spec: ResultSpec) -> None:
    for keyword in INHERITED:
        if keyword in source:
            derived[keyword] = source[keyword]
    if str(getattr(source, "PatientIdentityRemoved", "")).upper() != "YES":
        raise InvalidInput("the source instance does not declare PatientIdentityRemoved=YES")
    derived.SeriesDescription = (spec.series_description or f"{spec.algorithm} {spec.version}")[:64]


def _code(c: FindingCode) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(value=c.value, scheme_designator=c.scheme, meaning=c.meaning)


def _same_study(sources: Sequence[Dataset]) -> None:
    if not sources:
        raise InvalidInput("a result needs at least one source instance")
    if len({str(s.StudyInstanceUID) for s in sources}) != 1:
        raise InvalidInput("the source instances belong to more than one study")


def _frames(ds: Dataset) -> int:
    return int(getattr(ds, "NumberOfFrames", 1) or 1)


def build_sr(
    sources: Sequence[Dataset],
    boxes: Sequence[Box],
    spec: ResultSpec,
    *,
    uid_root: str | None = None,
    series_uid: str | None = None,
    sop_uid: str | None = None,
) -> Dataset:
    """A Comprehensive 3D SR Measurement Report: one planar ROI group per box (a closed POLYLINE SCOORD in
    the source's pixel space, the finding code, the score as a measurement, the algorithm)."""
    _same_study(sources)
    by_uid = {str(s.SOPInstanceUID): s for s in sources}
    algorithm = hd.sr.AlgorithmIdentification(name=spec.algorithm[:64], version=spec.version[:64])
    groups = []
    used: dict[str, Dataset] = {}
    for i, box in enumerate(boxes):
        if box.sop_uid is None and len(sources) > 1:
            raise InvalidInput(f"box {i}: name its source ('sop_uid'): the result has several sources")
        source = by_uid.get(box.sop_uid) if box.sop_uid else sources[0]
        if source is None:
            raise InvalidInput(f"box {i}: {box.sop_uid} is not one of the result's sources")
        box.check(int(source.Columns), int(source.Rows), _frames(source))
        used[str(source.SOPInstanceUID)] = source
        x0, y0, x1, y1 = box.x, box.y, box.x + box.w, box.y + box.h
        frames = [box.frame or 1] if _frames(source) > 1 else None
        region = hd.sr.ImageRegion(
            graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
            graphic_data=np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]], dtype=np.float32),
            source_image=hd.sr.SourceImageForRegion.from_source_image(source, referenced_frame_numbers=frames),
        )
        measurements = []
        if box.score is not None:
            measurements.append(hd.sr.Measurement(name=SCORE, value=float(box.score), unit=NO_UNITS))
        groups.append(
            hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(uid=new_uid(uid_root), identifier=f"box {i + 1}"),
                referenced_region=region,
                finding_type=_code(box.code or finding_code(box.label)),
                algorithm_id=algorithm,
                measurements=measurements or None,
            )
        )
    if not groups:
        raise InvalidInput("a boxes result needs at least one box")
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=new_uid(uid_root), name=spec.algorithm[:64], model_name=spec.version[:64]
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=IMAGING_PROCEDURE,
        imaging_measurements=groups,
    )
    evidence = list(used.values())
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=report,
        series_instance_uid=series_uid or new_uid(uid_root),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=sop_uid or new_uid(uid_root),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
    )
    _inherit(sr, evidence[0], spec)
    return sr


def build_seg(
    sources: Sequence[Dataset],
    masks: Sequence[np.ndarray],
    spec: ResultSpec,
    *,
    uid_root: str | None = None,
    series_uid: str | None = None,
    sop_uid: str | None = None,
) -> Dataset:
    """A SEG with one segment (`spec.label`): one frame per source instance, binary or fractional
    (probability, 8-bit). `masks[i]` is the (Rows, Columns) mask of `sources[i]`."""
    _same_study(sources)
    if len(masks) != len(sources):
        raise InvalidInput(f"{len(masks)} mask(s) for {len(sources)} source instance(s)")
    if len({str(s.SeriesInstanceUID) for s in sources}) != 1:
        raise InvalidInput("a mask result's sources must belong to one series")
    for source, mask in zip(sources, masks, strict=True):
        if _frames(source) > 1:
            raise InvalidInput("masks over multi-frame sources are not supported: send single-frame sources")
        if mask.shape != (int(source.Rows), int(source.Columns)):
            raise InvalidInput(
                f"mask is {mask.shape[1]}x{mask.shape[0]}, source {source.SOPInstanceUID} is "
                f"{source.Columns}x{source.Rows}"
            )
    label = spec.label or "finding"
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=label[:64],
        segmented_property_category=ABNORMAL_STRUCTURE,
        segmented_property_type=_code(spec.code or finding_code(label)),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name=spec.algorithm[:64], family=codes.cid7162.ArtificialIntelligence, version=spec.version[:64]
        ),
    )
    stack = np.stack([np.asarray(m, dtype=np.float32 if spec.fractional else np.uint8) for m in masks])
    seg = hd.seg.Segmentation(
        source_images=list(sources),
        pixel_array=stack,
        segmentation_type=hd.seg.SegmentationTypeValues.FRACTIONAL
        if spec.fractional
        else hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description],
        series_instance_uid=series_uid or new_uid(uid_root),
        series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=sop_uid or new_uid(uid_root),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=spec.algorithm[:64],
        software_versions=spec.version[:64],
        device_serial_number="0",
        omit_empty_frames=False,
    )
    _inherit(seg, sources[0], spec)
    return seg
