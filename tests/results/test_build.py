"""build_sr / build_seg on a synthetic CT series, read back with pydicom and highdicom."""

from __future__ import annotations

import base64
import io

import highdicom as hd
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.uid import Comprehensive3DSRStorage

from medcloud.errors import InvalidInput
from medcloud.results import Box, FindingCode, MaskInput, ResultSpec, build_seg, build_sr
from medcloud.results.dicom import new_uid
from medcloud.results.model import LOCAL_SCHEME, decode_mask
from tests.results.conftest import STUDY, ct_series, to_bytes

NODULE = FindingCode("27925004", "SCT", "Nodule")


def _reread(ds: pydicom.Dataset) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(to_bytes(ds)))


def _walk(item: pydicom.Dataset) -> list[pydicom.Dataset]:
    out = []
    for child in getattr(item, "ContentSequence", []):
        out += [child, *_walk(child)]
    return out


def test_sr_references_coordinates_codes_and_scores() -> None:
    ct = ct_series()
    boxes = [
        Box(10, 20, 30, 40, "nodule", 0.91, NODULE, sop_uid=ct[1].SOPInstanceUID),
        Box(0, 0, 128, 128, "mass", 0.5, sop_uid=ct[2].SOPInstanceUID),
    ]
    sr = _reread(build_sr(ct, boxes, ResultSpec("detector", "1.2"), uid_root="1.2.826.0.1.3680043.10.999"))
    assert sr.SOPClassUID == Comprehensive3DSRStorage
    assert sr.Modality == "SR"
    assert sr.StudyInstanceUID == STUDY and sr.PatientID == "PSEUDO-R1"
    assert sr.SeriesInstanceUID.startswith("1.2.826.0.1.3680043.10.999.")
    assert sr.SeriesInstanceUID != ct[0].SeriesInstanceUID
    assert sr.PatientIdentityRemoved == "YES" and sr.DeidentificationMethod == "medcloud gateway (test)"
    # Evidence: exactly the two boxed slices.
    evidence = {
        i.ReferencedSOPInstanceUID
        for s in sr.CurrentRequestedProcedureEvidenceSequence
        for r in s.ReferencedSeriesSequence
        for i in r.ReferencedSOPSequence
    }
    assert evidence == {ct[1].SOPInstanceUID, ct[2].SOPInstanceUID}
    groups = hd.sr.Comprehensive3DSR.from_dataset(sr).content.get_planar_roi_measurement_groups()
    assert len(groups) == 2
    g = groups[0]
    assert g.finding_type.value == "27925004" and g.finding_type.scheme_designator == "SCT"
    assert g.roi.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
    np.testing.assert_allclose(g.roi.value, [[10, 20], [40, 20], [40, 60], [10, 60], [10, 20]])
    ref = g.roi.ContentSequence[0].ReferencedSOPSequence[0]
    assert ref.ReferencedSOPInstanceUID == ct[1].SOPInstanceUID
    assert g.get_measurements()[0].value == pytest.approx(0.91)
    assert groups[1].finding_type.scheme_designator == LOCAL_SCHEME and groups[1].finding_type.meaning == "mass"
    names = [i.TextValue for i in _walk(sr) if i.ConceptNameCodeSequence[0].CodeValue == "111001"]
    assert names == ["detector", "detector"]  # DCM 111001 "Algorithm Name" (TID 4019)


@pytest.mark.parametrize(
    "box",
    [Box(-1, 0, 10, 10, "n"), Box(120, 0, 10, 10, "n"), Box(0, 0, 0, 5, "n"), Box(0, 0, 5, 5, "n", score=1.5)],
)
def test_sr_refuses_boxes_outside_the_image(box: Box) -> None:
    ct = ct_series(n=1)
    with pytest.raises(InvalidInput):
        build_sr(ct, [box], ResultSpec("d", "1"))


def test_sr_needs_a_source_per_box_when_several() -> None:
    with pytest.raises(InvalidInput, match="sop_uid"):
        build_sr(ct_series(), [Box(0, 0, 5, 5, "n")], ResultSpec("d", "1"))


def test_seg_binary_mask_pixels_and_references() -> None:
    ct = ct_series()
    masks = [np.zeros((128, 128), bool) for _ in ct]
    masks[1][20:40, 30:50] = True
    masks[2][0:5, 0:128] = True
    seg = _reread(build_seg(ct, masks, ResultSpec("segmenter", "0.3", label="lesion", code=NODULE)))
    assert seg.Modality == "SEG" and seg.SegmentationType == "BINARY"
    assert seg.StudyInstanceUID == STUDY and seg.FrameOfReferenceUID == ct[0].FrameOfReferenceUID
    assert seg.PatientIdentityRemoved == "YES"
    assert seg.SegmentSequence[0].SegmentLabel == "lesion"
    assert seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "27925004"
    parsed = hd.seg.Segmentation.from_dataset(seg)
    uids = [str(d.SOPInstanceUID) for d in ct]
    pixels = parsed.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=[1])
    assert pixels.shape == (4, 128, 128, 1)
    for k in range(4):
        np.testing.assert_array_equal(pixels[k, :, :, 0].astype(bool), masks[k])
    refs = {i.ReferencedSOPInstanceUID for s in seg.ReferencedSeriesSequence for i in s.ReferencedInstanceSequence}
    assert refs == set(uids)


def test_seg_fractional() -> None:
    ct = ct_series(n=2)
    prob = [np.linspace(0, 1, 128 * 128, dtype=np.float32).reshape(128, 128), np.zeros((128, 128), np.float32)]
    seg = _reread(build_seg(ct, prob, ResultSpec("s", "1", label="p", fractional=True)))
    assert seg.SegmentationType == "FRACTIONAL" and seg.SegmentationFractionalType == "PROBABILITY"
    pixels = hd.seg.Segmentation.from_dataset(seg).get_pixels_by_source_instance(
        source_sop_instance_uids=[str(d.SOPInstanceUID) for d in ct], segment_numbers=[1]
    )
    np.testing.assert_allclose(pixels[0, :, :, 0], prob[0], atol=1 / 255 + 1e-6)


def test_seg_refuses_wrong_size_and_foreign_series() -> None:
    ct = ct_series(n=2)
    with pytest.raises(InvalidInput, match="mask is"):
        build_seg(ct, [np.zeros((64, 64), bool)] * 2, ResultSpec("s", "1"))
    other = ct_series(series="2.25.5001.9", n=1)
    with pytest.raises(InvalidInput, match="one series"):
        build_seg([ct[0], *other], [np.zeros((128, 128), bool)] * 2, ResultSpec("s", "1"))


def test_refuses_a_source_that_is_not_deidentified() -> None:
    ct = ct_series(n=1)
    del ct[0].PatientIdentityRemoved
    with pytest.raises(InvalidInput, match="PatientIdentityRemoved"):
        build_sr(ct, [Box(0, 0, 5, 5, "n")], ResultSpec("d", "1"))


def test_decode_png_and_rle() -> None:
    mask = np.zeros((4, 6), np.uint8)
    mask[1:3, 2:5] = 255
    buf = io.BytesIO()
    Image.fromarray(mask).save(buf, format="PNG")
    got = decode_mask(MaskInput(png_base64=base64.b64encode(buf.getvalue()).decode()), rows=4, columns=6,
                      fractional=False)  # fmt: skip
    np.testing.assert_array_equal(got, mask > 0)
    # COCO uncompressed RLE is column-major: encode the same mask and decode it back.
    flat = (mask > 0).T.reshape(-1).astype(int)
    counts, cur, run = [], 0, 0
    for v in flat:
        if v != cur:
            counts.append(run)
            cur, run = v, 0
        run += 1
    counts.append(run)
    rle = decode_mask(MaskInput(rle={"size": [4, 6], "counts": counts}), rows=4, columns=6, fractional=False)
    np.testing.assert_array_equal(rle, mask > 0)
    with pytest.raises(InvalidInput, match="mask is 6x4"):
        decode_mask(MaskInput(rle={"size": [4, 6], "counts": counts}), rows=6, columns=6, fractional=False)
    with pytest.raises(InvalidInput):
        decode_mask(MaskInput(rle={"size": [4, 6], "counts": [1, 2]}), rows=4, columns=6, fractional=False)
    with pytest.raises(InvalidInput):
        decode_mask(MaskInput(png_base64="not base64!"), rows=4, columns=6, fractional=False)


def test_new_uid_is_valid_under_a_root() -> None:
    uid = new_uid("1.2.826.0.1.3680043.10.999")
    assert uid.startswith("1.2.826.0.1.3680043.10.999.") and len(uid) <= 64
    assert new_uid().startswith("2.25.")
