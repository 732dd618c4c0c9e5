"""`--where` text to cohort terms: `pneumothorax=present AND NOT pleural_effusion=present AND modality=CT`.

Atoms are `KEY=VALUE` joined by `AND`, each optionally preceded by `NOT`. A key that names an image field
(site, modality, body_part, sex, date_from, date_to, age_min, age_max) makes an image term of that one
field; any other key is a finding code whose value is its status (present, absent, uncertain). The hub
validates the terms (unknown codes, bad dates) and says what is wrong; this only splits the text.
"""

from __future__ import annotations

import re
from typing import Any

from medcloud.errors import InvalidInput

__all__ = ["parse_where"]

_IMAGE = ("site", "modality", "body_part", "sex", "date_from", "date_to", "age_min", "age_max")
_AND = re.compile(r"\s+AND(?:\s+|$)|^AND\s+", re.IGNORECASE)
_NOT = re.compile(r"^NOT\s+", re.IGNORECASE)


def parse_where(text: str) -> list[dict[str, Any]]:
    """Cohort terms from a `--where` expression (AND of possibly negated KEY=VALUE atoms)."""
    terms: list[dict[str, Any]] = []
    for raw in _AND.split(text.strip()):
        atom = raw.strip()
        negate = bool(_NOT.match(atom))
        atom = _NOT.sub("", atom).strip()
        key, sep, value = atom.partition("=")
        key, value = key.strip().lower().replace("-", "_"), value.strip()
        if not sep or not key or not value:
            raise InvalidInput(f"--where: {raw.strip()!r} is not KEY=VALUE (e.g. pneumothorax=present)")
        term: dict[str, Any]
        if key in _IMAGE:
            typed: Any = value
            if key in ("age_min", "age_max"):
                if not value.isdigit():
                    raise InvalidInput(f"--where: {key} must be whole years, not {value!r}")
                typed = int(value)
            term = {"kind": "image", key: typed}
        else:
            term = {"kind": "finding", "code": key, "status": value.lower()}
        if negate:
            term["negate"] = True
        terms.append(term)
    return terms
