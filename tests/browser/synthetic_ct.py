"""SYNTHETIC CT series for the viewer tests: a bright disc on a dark background, one radius per slice."""

from __future__ import annotations

import io

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

SIZE = 128
AIR_HU = -1000
DISC_HU = 1000


def radius(index: int) -> int:
    """The disc radius (pixels) of slice `index` (0 = lowest z)."""
    return 10 + 4 * index


def slice_pixels(index: int, *, inverted: bool = False) -> np.ndarray:
    """HU values of one slice: a disc centred in the image (or, inverted, a dark disc on bright)."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    inside = (yy - SIZE / 2 + 0.5) ** 2 + (xx - SIZE / 2 + 0.5) ** 2 <= radius(index) ** 2
    hu = np.where(inside, DISC_HU, AIR_HU)
    if inverted:
        hu = np.where(inside, AIR_HU, DISC_HU)
    return hu.astype(np.int16)


def ct_series(study_uid: str, *, slices: int, inverted: bool = False, number: int = 1,
              description: str = "SYNTHETIC DISC") -> list[bytes]:  # fmt: skip
    """`slices` de-identified CT instances of one new series, as Part 10 files (Explicit VR LE)."""
    series_uid = generate_uid(prefix="2.25.")
    out = []
    for i in range(slices):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.SOPInstanceUID = generate_uid(prefix="2.25.")
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = CTImageStorage
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.PatientID = ds.PatientName = "SYNTHETIC-VIEWER"
        ds.PatientIdentityRemoved = "YES"
        ds.StudyDate, ds.StudyTime, ds.StudyDescription = "20240101", "120000", "SYNTHETIC PHANTOM"
        ds.Modality, ds.SeriesNumber, ds.SeriesDescription = "CT", number, description
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = [0.0, 0.0, 2.5 * i]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [1.0, 1.0]
        ds.SliceThickness = 2.5
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows = ds.Columns = SIZE
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "HU"
        ds.WindowCenter, ds.WindowWidth = 0, 2000
        ds.PixelData = slice_pixels(i, inverted=inverted).tobytes()
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        out.append(buf.getvalue())
    return out


def jpeg_series(study_uid: str, *, slices: int, number: int = 3) -> list[bytes]:
    """The same disc pattern as 8-bit JPEG baseline (1.2.840.10008.1.2.4.50), encapsulated: the viewer
    must decode it with its WebAssembly codec (libjpeg-turbo)."""
    from PIL import Image
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit, SecondaryCaptureImageStorage

    out = []
    for i, data in enumerate(ct_series(study_uid, slices=slices, number=number, description="JPEG")):
        ds = dcmread(io.BytesIO(data))
        grey = np.where(slice_pixels(i) > 0, 255, 0).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(grey, mode="L").save(buf, format="JPEG", quality=95)
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.RescaleIntercept, ds.RescaleSlope = 0, 1
        ds.WindowCenter, ds.WindowWidth = 128, 256
        ds.PixelData = encapsulate([buf.getvalue()])
        ds["PixelData"].VR = "OB"
        ds.LossyImageCompression = "01"
        f = io.BytesIO()
        ds.save_as(f, enforce_file_format=True)
        out.append(f.getvalue())
    return out
