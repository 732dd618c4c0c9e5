"""Compressed instances: frames and instances decoded to Explicit VR Little Endian on request (pixel-equal
when lossless, close when lossy), served as stored otherwise or in their own media type (image/jpeg);
rendered from compressed pixels; 406 for a syntax that cannot be decoded. Files are synthetic."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.encaps import generate_frames

from medcloud.dicomweb.media import parse_media_type
from medcloud.dicomweb.multipart import split_parts
from tests.dicomweb import render_builders as rb
from tests.hub.conftest import Hub, _make_hub

STUDY = "2.25.8001"
JPEG_SERIES, LOSSLESS_SERIES, JLS_SERIES, NATIVE_SERIES, MPEG_SERIES = (f"2.25.8001.{i}" for i in range(1, 6))
OCTET = 'multipart/related; type="application/octet-stream"'
ANY = "multipart/related; type=application/octet-stream; transfer-syntax=*"
AS_LE = 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.1'

GRADIENT = np.stack([np.add.outer(np.arange(64), np.arange(64)).astype(np.uint8) * 2 + k * 3 for k in range(2)])
CT = (np.add.outer(np.arange(48) * 37, np.arange(64) * 11) % 3000 - 1024).astype(np.int16)  # signed, 12 bits used
JLS = (np.add.outer(np.arange(32), np.arange(40)) * 50).astype(np.uint16)
MPEG2 = "1.2.840.10008.1.2.4.100"


@dataclass
class World:
    hub: Hub
    files: dict[str, bytes] = field(default_factory=dict)  # series -> stored bytes

    def base(self, series: str) -> str:
        ds = pydicom.dcmread(io.BytesIO(self.files[series]), stop_before_pixels=True)
        return f"/dicom-web/studies/{STUDY}/series/{series}/instances/{ds.SOPInstanceUID}"

    def get(self, path: str, accept: str | None = None, who: str = "researcher") -> Any:
        return self.hub.client.get(path, headers={**self.hub.auth(who), **({"Accept": accept} if accept else {})})


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    for h in _make_hub(Path(tmp_path_factory.mktemp("transcode")), None):
        w = World(h)
        w.files[JPEG_SERIES] = rb.compressed(STUDY, JPEG_SERIES, [rb.jpeg_frame(f) for f in GRADIENT],
                                             rb.JPEG_BASELINE, GRADIENT[0])  # fmt: skip
        lossless = imagecodecs.jpeg8_encode(CT.view(np.uint16), lossless=True, predictor=1)
        w.files[LOSSLESS_SERIES] = rb.compressed(STUDY, LOSSLESS_SERIES, [lossless], rb.JPEG_LOSSLESS_SV1, CT,
                                                 BitsStored=12, HighBit=11)  # fmt: skip
        jls = imagecodecs.jpegls_encode(JLS)
        w.files[JLS_SERIES] = rb.compressed(STUDY, JLS_SERIES, [jls], "1.2.840.10008.1.2.4.80", JLS)
        w.files[NATIVE_SERIES] = rb.image(STUDY, NATIVE_SERIES, GRADIENT[0])
        w.files[MPEG_SERIES] = rb.compressed(STUDY, MPEG_SERIES, [b"\x00\x00\x01\xb3not really mpeg"], MPEG2,
                                             GRADIENT[0])  # fmt: skip
        for data in w.files.values():
            r = h.client.post("/api/v1/ingest", content=data, headers=h.auth("site_a"))
            assert r.status_code == 201, r.text
        yield w


def _parts(r: Any) -> list[tuple[dict[str, str], bytes]]:
    assert r.status_code == 200, r.text
    ctype = parse_media_type(r.headers["content-type"])
    return [(p.headers, bytes(p.data)) for p in split_parts(r.content, ctype.params["boundary"].encode())]


def test_jpeg_baseline_frames_decoded_as_stored_or_as_jpeg(world: World) -> None:
    base = world.base(JPEG_SERIES)
    stored = list(generate_frames(pydicom.dcmread(io.BytesIO(world.files[JPEG_SERIES])).PixelData, number_of_frames=2))
    # No transfer syntax, or Explicit VR Little Endian by name: decoded.
    for accept in (OCTET, f"{OCTET}; transfer-syntax=1.2.840.10008.1.2.1", None):
        parts = _parts(world.get(f"{base}/frames/2,1", accept))
        le = "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"
        assert [h["content-type"] for h, _ in parts] == [le, le]
        for (_, data), n in zip(parts, (2, 1), strict=True):
            got = np.frombuffer(data, np.uint8).reshape(64, 64)
            assert np.array_equal(got, np.asarray(Image.open(io.BytesIO(stored[n - 1]))))  # the decoder's output
            assert np.abs(got.astype(int) - GRADIENT[n - 1]).max() <= 8  # lossy: close to the original
    # transfer-syntax=* (OHIF) and the stored syntax by name: as stored.
    for accept in (ANY, f"{OCTET}; transfer-syntax=1.2.840.10008.1.2.4.50"):
        parts = _parts(world.get(f"{base}/frames/1,2", accept))
        assert [d for _, d in parts] == stored and parts[0][0]["content-type"].endswith("1.2.840.10008.1.2.4.50")
    # The frame's own media type (PS3.18 8.7.3.5): the JPEG bitstream itself.
    r = world.get(f"{base}/frames/2", 'multipart/related; type="image/jpeg"')
    assert parse_media_type(r.headers["content-type"]).params["type"] == "image/jpeg"
    [(headers, data)] = _parts(r)
    assert data == stored[1] and headers["content-type"] == "image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50"
    assert world.get(f"{base}/frames/1", 'multipart/related; type="image/jp2"').status_code == 406
    assert world.get(f"{base}/frames/1", f"{OCTET}; transfer-syntax=1.2.840.10008.1.2.4.90").status_code == 406
    assert world.get(f"{base}/frames/3", OCTET).status_code == 404


def test_lossless_jpeg_and_jpeg_ls_decode_pixel_equal(world: World) -> None:
    [(_, data)] = _parts(world.get(world.base(LOSSLESS_SERIES) + "/frames/1", OCTET))
    assert np.array_equal(np.frombuffer(data, "<i2").reshape(CT.shape), CT)
    [(_, data)] = _parts(world.get(world.base(JLS_SERIES) + "/frames/1", OCTET))
    assert np.array_equal(np.frombuffer(data, "<u2").reshape(JLS.shape), JLS)
    # Rendered from the decoded pixels, exactly as from native ones.
    r = world.get(world.base(LOSSLESS_SERIES) + "/rendered?window=0,2000,linear-exact&accept=image/png")
    assert r.status_code == 200, r.text
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(r.content))), rb.window(CT.astype(float), 0, 2000))


def test_instances_retrieved_as_explicit_little_endian(world: World) -> None:
    for series, expected, exact in ((LOSSLESS_SERIES, CT, True), (JPEG_SERIES, GRADIENT, False)):
        original = pydicom.dcmread(io.BytesIO(world.files[series]))
        [(headers, data)] = _parts(world.get(world.base(series), AS_LE))
        assert headers["content-type"] == "application/dicom; transfer-syntax=1.2.840.10008.1.2.1"
        assert int(headers["content-length"]) == len(data)
        ds = pydicom.dcmread(io.BytesIO(data))
        assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1" and not ds["PixelData"].is_undefined_length
        assert ds.SOPInstanceUID == original.SOPInstanceUID and ds.StudyInstanceUID == STUDY  # the same instance
        if exact:
            assert np.array_equal(ds.pixel_array, expected)
        else:
            assert np.abs(ds.pixel_array.astype(int) - expected).max() <= 8
    # Without a syntax: as stored, byte for byte.
    [(headers, data)] = _parts(world.get(world.base(JPEG_SERIES)))
    assert data == world.files[JPEG_SERIES] and headers["content-type"].endswith("1.2.840.10008.1.2.4.50")


def test_a_mixed_series_of_syntaxes_and_one_that_cannot_be_decoded(world: World) -> None:
    # The whole study (mixed syntaxes) re-encoded: only the MPEG-2 instance stops it, before anything is sent.
    r = world.get(f"/dicom-web/studies/{STUDY}", AS_LE)
    assert r.status_code == 406 and MPEG2 in r.json()["detail"]
    for series in (JPEG_SERIES, LOSSLESS_SERIES, JLS_SERIES, NATIVE_SERIES):
        [(_, data)] = _parts(world.get(f"/dicom-web/studies/{STUDY}/series/{series}", AS_LE))
        assert pydicom.dcmread(io.BytesIO(data)).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    named = 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50'
    assert world.get(f"/dicom-web/studies/{STUDY}", named).status_code == 406  # not every instance is JPEG
    assert len(_parts(world.get(f"/dicom-web/studies/{STUDY}"))) == 5  # as stored: all of them
    mpeg = world.base(MPEG_SERIES)
    assert world.get(f"{mpeg}/frames/1", OCTET).status_code == 406
    assert _parts(world.get(f"{mpeg}/frames/1", ANY))[0][1].startswith(b"\x00\x00\x01\xb3")
    for path in (f"{mpeg}/rendered", f"{mpeg}/thumbnail", f"/dicom-web/studies/{STUDY}/series/{MPEG_SERIES}/rendered"):
        r = world.get(path)
        assert r.status_code == 406 and r.headers["content-type"] == "application/problem+json", (path, r.text)
