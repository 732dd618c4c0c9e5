"""Rendering real sample files pydicom ships (colour JPEG in YBR, native YBR 4:2:2, palette colour, 16-bit
RGB RLE, grayscale RLE): the PNG equals pydicom's own decoding of the file taken through the same rules."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.pixels.processing import apply_color_lut

from tests.hub.conftest import Hub, deidentified_dicom

SAMPLES = ["SC_rgb_jpeg_dcmtk.dcm", "SC_ybr_full_422_uncompressed.dcm", "examples_palette.dcm",
           "SC_rgb_rle_16bit.dcm", "MR_small_RLE.dcm"]  # fmt: skip


def _expected(ds: pydicom.Dataset) -> np.ndarray:
    arr = ds.pixel_array if int(ds.get("NumberOfFrames", 1) or 1) == 1 else ds.pixel_array[0]
    if ds.PhotometricInterpretation == "PALETTE COLOR":
        return np.asarray(apply_color_lut(arr, ds) >> 8, dtype=np.uint8)
    if arr.ndim == 3:
        return np.asarray(arr >> (int(ds.BitsStored) - 8), dtype=np.uint8)
    return arr


def test_sample_files_render_as_pydicom_decodes_them(hub: Hub) -> None:
    for n, name in enumerate(SAMPLES):
        study, series = f"2.25.9100{n}", f"2.25.9100{n}.1"
        data = deidentified_dicom(study_uid=study, series_uid=series, source=name)
        assert hub.client.post("/api/v1/ingest", content=data, headers=hub.auth("site_a")).status_code == 201, name
        ds = pydicom.dcmread(io.BytesIO(data))
        url = f"/dicom-web/studies/{study}/series/{series}/instances/{ds.SOPInstanceUID}/rendered?accept=image/png"
        expected = _expected(ds)
        if expected.ndim == 2:  # grayscale: through an exact window over the stored range
            lo, hi = int(expected.min()), int(expected.max())
            url += f"&window={(lo + hi + 1) / 2},{hi - lo + 1},linear-exact"
            expected = np.rint((expected - lo + 0.5) / (hi - lo + 1) * 255).astype(np.uint8)
        r = hub.client.get(url, headers=hub.auth("researcher"))
        assert r.status_code == 200, (name, r.text)
        got = np.asarray(Image.open(io.BytesIO(r.content)))
        assert got.shape == expected.shape, name
        assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1, name


@pytest.mark.parametrize("name", ["SC_rgb_jpeg_dcmtk.dcm", "MR_small_RLE.dcm"])
def test_sample_frames_decode_as_pydicom_does(hub: Hub, name: str) -> None:
    data = deidentified_dicom(study_uid="2.25.9200", series_uid="2.25.9200.1", source=name)
    assert hub.client.post("/api/v1/ingest", content=data, headers=hub.auth("site_a")).status_code == 201
    ds = pydicom.dcmread(io.BytesIO(data))
    url = f"/dicom-web/studies/2.25.9200/series/2.25.9200.1/instances/{ds.SOPInstanceUID}/frames/1"
    r = hub.client.get(
        url, headers={**hub.auth("researcher"), "Accept": 'multipart/related; type="application/octet-stream"'}
    )
    assert r.status_code == 200, r.text
    arr = ds.pixel_array
    assert arr.astype(arr.dtype.newbyteorder("<")).tobytes() in r.content


def test_native_syntaxes_retrieved_as_explicit_little_endian(hub: Hub) -> None:
    for n, name in enumerate(["MR_small_implicit.dcm", "MR_small_bigendian.dcm", "emri_small_jpeg_2k_lossless.dcm"]):
        study, series = f"2.25.9300{n}", f"2.25.9300{n}.1"
        data = deidentified_dicom(study_uid=study, series_uid=series, source=name, modality="MR")
        assert hub.client.post("/api/v1/ingest", content=data, headers=hub.auth("site_a")).status_code == 201, name
        original = pydicom.dcmread(io.BytesIO(data))
        accept = 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.1'
        r = hub.client.get(f"/dicom-web/studies/{study}", headers={**hub.auth("researcher"), "Accept": accept})
        assert r.status_code == 200, (name, r.text)
        ds = pydicom.dcmread(io.BytesIO(r.content[r.content.index(b"\r\n\r\n") + 4 :]))
        assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1", name
        assert ds.SOPInstanceUID == original.SOPInstanceUID
        assert np.array_equal(ds.pixel_array, original.pixel_array), name  # all three are lossless
