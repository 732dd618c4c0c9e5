"""Report text to findings: a dictionary of radiology findings (Japanese and English) with ConText-style
negation and uncertainty scoped to the finding each cue governs.

Owns the vocabulary (`vocabulary.py`, data only), the extractor (`findings.py`) and the
`medcloud nlp` commands (`cli.py`). Pure Python, no model files: fast enough to run on every
report at ingest.
"""

from medcloud.nlp.findings import CODES, STATUSES, Finding, Status, detect_language, extract_findings

__all__ = ["CODES", "STATUSES", "Finding", "Status", "detect_language", "extract_findings"]
