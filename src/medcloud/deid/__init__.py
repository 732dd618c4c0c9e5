"""De-identification at the source: the DICOM PS3.15 Annex E profile as data, the engine applying it
(nested sequences included), keyed pseudonyms / UID remapping / date shifting, metadata scrubbing for
JPEG/PNG/TIFF/SVS, and burned-in annotation checks."""
