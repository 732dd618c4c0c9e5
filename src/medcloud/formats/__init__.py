"""File formats only: the DICOM byte reader and writer, format sniffing, and the plain records that
de-identification, ingest, the store and the gateway share. Imports nothing else of medcloud."""

from medcloud.formats.records import DicomRecord, ImageRecord

__all__ = ["DicomRecord", "ImageRecord"]
