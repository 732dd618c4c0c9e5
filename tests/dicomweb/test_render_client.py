"""The real `dicomweb-client` against a real uvicorn hub: rendered instances and frames, series rendered,
thumbnails at the URLs the researcher's page uses, and transcoded retrieves (synthetic files)."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pydicom
import pytest
import requests
from PIL import Image

from tests.dicomweb import render_builders as rb
from tests.dicomweb.conftest import dicom_file
from tests.dicomweb.test_dicomweb_client import LiveHub, live  # noqa: F401 - the live hub fixture

STUDY, CT_SERIES, JPEG_SERIES = "2.25.9001", "2.25.9001.1", "2.25.9001.2"
GRADIENT = np.add.outer(np.arange(64), np.arange(64)).astype(np.uint8) * 2
LE = "1.2.840.10008.1.2.1"


@pytest.fixture(scope="module")
def stored(live: LiveHub) -> dict[str, pydicom.Dataset]:  # noqa: F811 - the fixture imported above
    ct = [pydicom.dcmread(io.BytesIO(dicom_file(study_uid=STUDY, series_uid=CT_SERIES))) for _ in range(3)]
    jpeg = pydicom.dcmread(io.BytesIO(rb.compressed(STUDY, JPEG_SERIES, [rb.jpeg_frame(GRADIENT)],
                                                    rb.JPEG_BASELINE, GRADIENT)))  # fmt: skip
    answer = live.client(live.site).store_instances(datasets=[*ct, jpeg])
    assert "FailedSOPSequence" not in answer
    return {"ct": ct[0], "jpeg": jpeg}


def _image(data: bytes, kind: str) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == kind
    return image


def test_rendered_with_dicomweb_client(live: LiveHub, stored: dict[str, pydicom.Dataset]) -> None:  # noqa: F811
    c = live.client(live.researcher)
    sop = stored["ct"].SOPInstanceUID
    png = _image(c.retrieve_instance_rendered(STUDY, CT_SERIES, sop, media_types=("image/png",)), "PNG")
    assert png.size == (128, 128) and png.mode == "L"
    params = {"window": "40,400", "viewport": "64,64", "quality": 80}
    jpeg = c.retrieve_instance_frames_rendered(
        STUDY, CT_SERIES, sop, frame_numbers=[1], media_types=("image/jpeg",), params=params
    )
    assert _image(jpeg, "JPEG").size == (64, 64)
    # A series rendered without a media type: every image, as multipart/related.
    series = c.retrieve_series_rendered(STUDY, CT_SERIES)
    assert series.count(b"Content-Type: image/jpeg") == 3
    # The compressed instance renders too, from decoded pixels.
    compressed = c.retrieve_instance_rendered(
        STUDY, JPEG_SERIES, stored["jpeg"].SOPInstanceUID, media_types=("image/png",)
    )
    assert _image(compressed, "PNG").size == (64, 64)
    # Another project's researcher cannot read it.
    with pytest.raises(requests.HTTPError, match="404"):
        live.client(live.other).retrieve_instance_rendered(STUDY, CT_SERIES, sop)


def test_thumbnail_urls_of_the_researchers_page(live: LiveHub, stored: dict[str, pydicom.Dataset]) -> None:  # noqa: F811
    auth = {"Authorization": f"Bearer {live.researcher}"}
    for path in (f"/dicom-web/studies/{STUDY}/thumbnail", f"/dicom-web/studies/{STUDY}/series/{CT_SERIES}/thumbnail"):
        r = httpx.get(live.url + path, headers=auth)
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
        assert max(_image(r.content, "JPEG").size) == 128
        assert httpx.get(live.url + path).status_code == 401
        assert httpx.get(live.url + path, headers={"Authorization": f"Bearer {live.other}"}).status_code == 404
    r = httpx.get(f"{live.url}/dicom-web/studies/{STUDY}/thumbnail?viewport=48,48&accept=image/png", headers=auth)
    assert _image(r.content, "PNG").size == (48, 48)


def test_transcoded_retrieve_with_dicomweb_client(live: LiveHub, stored: dict[str, pydicom.Dataset]) -> None:  # noqa: F811
    c = live.client(live.researcher)
    sop = stored["jpeg"].SOPInstanceUID
    ds = c.retrieve_instance(STUDY, JPEG_SERIES, sop, media_types=(("application/dicom", LE),))
    assert ds.file_meta.TransferSyntaxUID == LE and ds.SOPInstanceUID == sop
    assert np.abs(ds.pixel_array.astype(int) - GRADIENT).max() <= 8
    [frame] = c.retrieve_instance_frames(STUDY, JPEG_SERIES, sop, frame_numbers=[1],
                                         media_types=(("application/octet-stream", LE),))  # fmt: skip
    assert np.abs(np.frombuffer(frame, np.uint8).reshape(64, 64).astype(int) - GRADIENT).max() <= 8
    # The frame in its own media type (PS3.18 8.7.3.5): the stored JPEG bitstream.
    [stored_frame] = c.retrieve_instance_frames(STUDY, JPEG_SERIES, sop, frame_numbers=[1],
                                                media_types=(("image/jpeg", rb.JPEG_BASELINE),))  # fmt: skip
    assert stored_frame[:2] == b"\xff\xd8"
