"""Ingest: sniff the format, validate, extract metadata, store the blob, index it. Idempotent.

`read_dicom` and `read_image` validate a file and return its record without storing anything (the
gateway runs the hub's DICOM check with them); `medcloud.ingest.pipeline.Ingestor` stores and indexes,
and is imported from there because it needs the store.
"""

from medcloud.ingest.dicom import read_dicom
from medcloud.ingest.images import read_image

__all__ = ["read_dicom", "read_image"]
