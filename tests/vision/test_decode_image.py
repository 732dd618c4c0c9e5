"""Photos as cameras and phones write them: EXIF orientation, 16-bit and floating-point grey, transparency.

Each case failed before `runtime.decode_image` handled it: a phone photo turned by its EXIF tag got its
boxes in the sensor's frame while the page draws the photo upright, and a 16-bit TIFF came out white.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medcloud.errors import UnsupportedFormat
from medcloud.vision.metrics import iou_matrix
from medcloud.vision.runtime import GramStainModel, decode_image, decode_photo
from medcloud.vision.synth import render_smear

from .conftest import VisionHub

ORIENTATION = 0x0112


def _save(im: Image.Image, fmt: str = "PNG", orientation: int | None = None) -> bytes:
    buf = io.BytesIO()
    kwargs = {}
    if orientation is not None:
        exif = Image.Exif()
        exif[ORIENTATION] = orientation
        kwargs["exif"] = exif.tobytes()
    im.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


@pytest.fixture(scope="module")
def upright() -> np.ndarray:
    # Not square, so a swapped width and height cannot pass unnoticed.
    return render_smear(515151, "site-a", (480, 640), 1.0, species=["s_aureus"] * 3 + ["enterobacterales"] * 3).image


# EXIF orientation -> the sensor's pixels that display as `upright` (what a phone held turned writes).
SENSOR = {
    3: lambda a: np.rot90(a, 2),
    6: lambda a: np.rot90(a, 1),  # displayed turned 90 degrees clockwise
    8: lambda a: np.rot90(a, -1),
    2: lambda a: a[:, ::-1],
}


@pytest.mark.parametrize("orientation", sorted(SENSOR))
def test_an_exif_orientation_is_applied_so_the_pixels_are_the_ones_a_browser_draws(
    upright: np.ndarray, orientation: int
) -> None:
    sensor = np.ascontiguousarray(SENSOR[orientation](upright))
    decoded = decode_image(_save(Image.fromarray(sensor), orientation=orientation))
    assert decoded.shape == upright.shape
    assert np.array_equal(decoded, upright)


def test_boxes_of_a_turned_phone_photo_are_in_the_upright_frame(upright: np.ndarray, packaged_model_dir: Path) -> None:
    model = GramStainModel(packaged_model_dir, threads=1)
    want = model.predict(upright)
    turned = decode_image(_save(Image.fromarray(np.ascontiguousarray(np.rot90(upright, 1))), orientation=6))
    got = model.predict(turned)
    assert want.detections, "the smear should show organisms"
    assert [(d.label, d.box) for d in got.detections] == [(d.label, d.box) for d in want.detections]
    assert got.verdict == want.verdict


def test_orientation_1_and_no_exif_leave_the_pixels_alone(upright: np.ndarray) -> None:
    for data in (_save(Image.fromarray(upright)), _save(Image.fromarray(upright), orientation=1)):
        assert np.array_equal(decode_image(data), upright)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_sixteen_bit_grey_is_scaled_by_its_depth_not_clipped_white(fmt: str) -> None:
    ramp = np.linspace(0, 65535, 256 * 256).reshape(256, 256).astype(np.uint16)
    out = decode_image(_save(Image.fromarray(ramp), fmt))
    assert out.shape == (256, 256, 3) and out.dtype == np.uint8
    assert np.array_equal(out[..., 0], out[..., 2])
    assert abs(float(out.mean()) - 127.5) < 1.0  # Pillow's own conversion gave a mean of 254.5
    assert np.array_equal(out[..., 0], (ramp >> 8).astype(np.uint8))


def test_twelve_bit_data_in_a_sixteen_bit_file_keeps_its_contrast() -> None:
    ramp = np.linspace(0, 4095, 128 * 128).reshape(128, 128).astype(np.uint16)
    out = decode_image(_save(Image.fromarray(ramp), "TIFF"))
    assert out.max() == 255 and out.min() == 0
    assert np.array_equal(out[..., 1], (ramp >> 4).astype(np.uint8))


def test_floating_point_grey_is_scaled_from_zero_to_one() -> None:
    field = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    out = decode_image(_save(Image.fromarray(field), "TIFF"))
    assert out.max() == 255 and out.min() == 0 and abs(float(out.mean()) - 127.5) < 1.0


def test_transparent_pixels_are_laid_on_a_white_background() -> None:
    rgba = np.zeros((32, 32, 4), dtype=np.uint8)
    rgba[:16, :, :3] = (120, 40, 160)
    rgba[:16, :, 3] = 255  # opaque violet on top, fully transparent (stored black) below
    out = decode_image(_save(Image.fromarray(rgba, "RGBA")))
    assert (out[:16] == (120, 40, 160)).all()
    assert (out[16:] == 255).all()


def test_forty_eight_bit_rgb_keeps_its_colour() -> None:
    import tifffile

    rgb16 = np.zeros((16, 16, 3), dtype=np.uint16)
    rgb16[...] = (60000, 30000, 1000)
    buf = io.BytesIO()
    tifffile.imwrite(buf, rgb16, photometric="rgb")
    out = decode_image(buf.getvalue())
    assert tuple(out[0, 0]) == (234, 117, 3)  # the high byte of each sample


def test_still_refuses_what_is_not_an_image() -> None:
    with pytest.raises(UnsupportedFormat, match="not a readable image"):
        decode_image(b"GIF89a" + b"\0" * 20)


def _big_jpeg(upright: np.ndarray, factor: int = 4, orientation: int | None = None) -> bytes:
    size = (upright.shape[1] * factor, upright.shape[0] * factor)
    big = Image.fromarray(upright).resize(size, Image.Resampling.BICUBIC)
    if orientation == 6:
        big = big.transpose(Image.Transpose.ROTATE_90)  # the sensor's frame of a photo displayed upright
    return _save(big, "JPEG", orientation=orientation)


def test_a_large_jpeg_is_decoded_reduced_and_keeps_its_own_size(upright: np.ndarray) -> None:
    data = _big_jpeg(upright)  # 2560 x 1920
    full = decode_photo(data)
    small = decode_photo(data, least_side=640)
    assert (full.width, full.height) == (small.width, small.height) == (2560, 1920)
    assert full.pixels.shape == (1920, 2560, 3)
    assert small.pixels.shape == (480, 640, 3)  # libjpeg's 1/4 scale: the least at or above 640
    # The same picture: the reduced decode against the full one averaged down 4x.
    pooled = full.pixels.reshape(480, 4, 640, 4, 3).mean(axis=(1, 3))
    assert np.abs(pooled - small.pixels.astype(np.float64)).mean() < 2.0


def test_png_and_small_jpegs_are_decoded_whole(upright: np.ndarray) -> None:
    png = _save(Image.fromarray(upright).resize((2560, 1920)))
    assert decode_photo(png, least_side=640).pixels.shape == (1920, 2560, 3)
    small = _save(Image.fromarray(upright), "JPEG")  # 640 x 480: under twice the least side
    assert decode_photo(small, least_side=640).pixels.shape == (480, 640, 3)


def test_a_turned_large_jpeg_is_reduced_upright_with_the_displayed_size(upright: np.ndarray) -> None:
    photo = decode_photo(_big_jpeg(upright, orientation=6), least_side=640)
    assert (photo.width, photo.height) == (2560, 1920)
    assert photo.pixels.shape == (480, 640, 3)
    assert np.abs(photo.pixels.astype(np.float64) - upright).mean() < 12.0  # upright, not turned


def test_boxes_from_a_reduced_decode_are_the_full_decodes_in_the_photos_pixels(
    upright: np.ndarray, packaged_model_dir: Path
) -> None:
    model = GramStainModel(packaged_model_dir, threads=1)
    data = _big_jpeg(upright)
    full = model.predict_photo(decode_photo(data), score_threshold=0.3)
    reduced = model.predict_photo(decode_photo(data, least_side=model.decode_side), score_threshold=0.3)
    assert (reduced.width, reduced.height) == (full.width, full.height) == (2560, 1920)
    strong = [d for d in full.detections if d.score >= 0.5]
    assert strong
    for d in strong:
        same = [r for r in reduced.detections if r.label == d.label]
        assert same, f"label {d.label} lost in the reduced decode"
        ious = iou_matrix(np.array([d.box], np.float32), np.array([r.box for r in same], np.float32))
        assert ious.max() >= 0.8
    assert all(0 <= r.box[0] < r.box[2] <= 2560 and 0 <= r.box[1] < r.box[3] <= 1920 for r in reduced.detections)
    assert reduced.verdict == full.verdict


def test_the_inference_route_answers_in_the_photos_pixels(hub: VisionHub, upright: np.ndarray) -> None:
    data = _big_jpeg(upright)
    r = hub.client.post("/api/v1/inference", content=data, headers=hub.auth("clinician"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["image"] == {"width": 2560, "height": 1920}
    boxes = [d["box"] for d in body["detections"]]
    assert boxes and max(b[2] for b in boxes) > 640  # in the photo's pixels, not the reduced decode's


def test_a_damaged_exif_block_does_not_make_a_photo_unreadable(upright: np.ndarray) -> None:
    good = _save(Image.fromarray(upright), "JPEG", orientation=6)
    start = good.index(b"Exif\x00\x00") + 6
    # The TIFF header of the EXIF block replaced by garbage: the orientation cannot be read.
    damaged = good[:start] + b"\xde\xad\xbe\xef" * 4 + good[start + 16 :]
    photo = decode_photo(damaged)
    assert (photo.width, photo.height) == (640, 480) and photo.pixels.shape == (480, 640, 3)
    # An orientation outside EXIF's 1-8 is ignored, not guessed at.
    assert np.array_equal(decode_photo(_save(Image.fromarray(upright), orientation=9)).pixels, upright)
