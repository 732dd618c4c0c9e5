"""File formats only: the DICOM byte reader and writer (`formats.dicom`), format sniffing
(`formats.sniff`), character sets (`formats.charset`), and the plain records that de-identification,
ingest, the store and the gateway share. Imports nothing else of medcloud but `medcloud.errors`.

Only the records are imported here: the DICOM modules load pydicom's dictionaries, which the store
and the gateway's forwarder never need.
"""

from medcloud.formats.records import DicomRecord, ImageRecord

__all__ = ["DicomRecord", "ImageRecord"]
