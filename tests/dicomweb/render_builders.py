"""Synthetic images with known pixels for the rendered/thumbnail/transcoding tests (test data, not patients).

Every file starts from tests.hub's de-identified CT (so ingest accepts it) and gets its pixels replaced.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pydicom
from pydicom.encaps import encapsulate
from pydicom.uid import UID

from tests.hub.conftest import deidentified_dicom

JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"
EXPLICIT_LE = "1.2.840.10008.1.2.1"


def _base(study: str, series: str, **kw: Any) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(deidentified_dicom(study_uid=study, series_uid=series, **kw)))


def _save(ds: pydicom.Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _clear_display(ds: pydicom.Dataset) -> None:
    for keyword in ("WindowCenter", "WindowWidth", "RescaleSlope", "RescaleIntercept", "PixelPaddingValue",
                    "VOILUTFunction", "WindowCenterWidthExplanation"):  # fmt: skip
        if keyword in ds:
            delattr(ds, keyword)


def image(
    study: str,
    series: str,
    arr: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    number: int = 1,
    **attrs: Any,
) -> bytes:
    """A native (Explicit VR Little Endian) image of `arr` (frames first when 3-D grayscale / 4-D colour)."""
    ds = _base(study, series)
    _clear_display(ds)
    ds.set_pixel_data(arr, photometric, bits_stored or arr.dtype.itemsize * 8, generate_instance_uid=False)
    ds.InstanceNumber = number
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    return _save(ds)


def compressed(study: str, series: str, frames: list[bytes], transfer_syntax: str, template: np.ndarray,
               **attrs: Any) -> bytes:  # fmt: skip
    """A file whose pixel data is `frames` (already encoded) encapsulated under `transfer_syntax`."""
    ds = _base(study, series)
    _clear_display(ds)
    ds.set_pixel_data(template, "MONOCHROME2", template.dtype.itemsize * 8, generate_instance_uid=False)
    ds.PixelData = encapsulate(frames)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    if len(frames) > 1:
        ds.NumberOfFrames = len(frames)
    ds.file_meta.TransferSyntaxUID = UID(transfer_syntax)
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    return _save(ds)


def jpeg_frame(arr: np.ndarray, quality: int = 95) -> bytes:
    """One 8-bit grayscale frame as a baseline JPEG (Pillow)."""
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(arr, "L").save(out, "JPEG", quality=quality)
    return out.getvalue()


def structured_report(study: str, series: str) -> bytes:
    """A Basic Text SR: an instance without pixel data."""
    ds = _base(study, series, modality="SR")
    for keyword in ("PixelData", "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
                    "SamplesPerPixel", "PhotometricInterpretation", "WindowCenter", "WindowWidth",
                    "RescaleSlope", "RescaleIntercept"):  # fmt: skip
        if keyword in ds:
            delattr(ds, keyword)
    ds.SOPClassUID = UID("1.2.840.10008.5.1.4.1.1.88.11")
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.ValueType = "CONTAINER"
    return _save(ds)


def window(values: np.ndarray, center: float, width: float, function: str = "linear-exact") -> np.ndarray:
    """PS3.3 C.11.2.1.2's VOI functions written out independently, to 0..255 integers."""
    x = values.astype(np.float64)
    if function == "linear":
        y = np.clip((x - (center - 0.5)) / (width - 1) + 0.5, 0, 1) * 255
    elif function == "sigmoid":
        y = 255 / (1 + np.exp(-4 * (x - center) / width))
    else:
        y = np.clip((x - center) / width + 0.5, 0, 1) * 255
    return np.rint(y).astype(np.uint8)
