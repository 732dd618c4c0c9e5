"""DICOMweb (PS3.18): QIDO-RS query parsing, DICOM JSON (F.2), Accept negotiation and multipart bodies.

Pure functions over catalog rows and stored files; the hub's `routes/dicomweb.py` wires them to HTTP and
`store/dicomweb.py` holds their SQL.
"""
