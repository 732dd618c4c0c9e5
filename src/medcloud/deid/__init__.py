"""De-identification at the source: the DICOM PS3.15 Annex E profile as data, the engine applying it
(nested sequences included), keyed pseudonyms / UID remapping / date shifting, metadata scrubbing for
JPEG/PNG/TIFF/SVS, and burned-in annotation checks.

Public API: `SiteKey`, `DeidOptions`, `Deidentifier`, `DeidOutcome`.
"""

from medcloud.deid.engine import Deidentifier, DeidOptions, DeidOutcome
from medcloud.deid.keys import SiteKey
from medcloud.deid.profile import PROFILE_NAME

__all__ = ["PROFILE_NAME", "DeidOptions", "DeidOutcome", "Deidentifier", "SiteKey"]
