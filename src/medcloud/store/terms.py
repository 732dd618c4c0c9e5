"""Cohort query terms: validation to a canonical form, and each term compiled to one SQL condition.

A query is a list of terms, all of which must hold; a term may be negated. A term of kind "image" holds
study, series and instance metadata; a term of kind "finding" (code and status) holds when a report of
the study, in the study's own project, has that finding (an EXISTS clause over `findings`). Conditions
are written against `instances JOIN series JOIN studies`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any

import sqlalchemy as sa

from medcloud.errors import InvalidInput
from medcloud.store.tables import findings, series, studies

__all__ = ["IMAGE_FIELDS", "age_condition", "normalize_query", "term_condition"]

IMAGE_FIELDS = ("site", "modality", "body_part", "date_from", "date_to", "sex", "age_min", "age_max")


def normalize_query(terms: Any) -> list[dict[str, Any]]:
    """Validate a cohort query (a list of terms) and return its canonical form; InvalidInput says what is wrong."""
    if not isinstance(terms, list):
        raise InvalidInput("a cohort query is a list of terms")
    if len(terms) > 50:
        raise InvalidInput("a cohort query has at most 50 terms")
    out: list[dict[str, Any]] = []
    for i, term in enumerate(terms):
        if not isinstance(term, dict):
            raise InvalidInput(f"term {i}: not an object")
        kind = term.get("kind", "image")
        if kind == "finding":
            out.append(_finding_term(i, term))
            continue
        if kind != "image":
            raise InvalidInput(f"term {i}: unknown kind {kind!r} (image or finding)")
        unknown = set(term) - {"kind", "negate", *IMAGE_FIELDS}
        if unknown:
            raise InvalidInput(f"term {i}: unknown field(s) {', '.join(sorted(unknown))}")
        norm: dict[str, Any] = {"kind": "image"}
        if not isinstance(term.get("negate", False), bool):
            raise InvalidInput(f"term {i}: negate must be true or false")
        if term.get("negate"):
            norm["negate"] = True
        for name in ("site", "modality", "body_part", "sex"):
            value = term.get(name)
            if value is None:
                continue
            if not isinstance(value, str) or not value or len(value) > 64:
                raise InvalidInput(f"term {i}: {name} must be a non-empty string")
            norm[name] = value.upper() if name in ("modality", "body_part", "sex") else value
        for name in ("date_from", "date_to"):
            value = term.get(name)
            if value is None:
                continue
            try:
                norm[name] = date.fromisoformat(str(value)).isoformat()
            except ValueError:
                raise InvalidInput(f"term {i}: {name} must be a date YYYY-MM-DD") from None
        for name in ("age_min", "age_max"):
            value = term.get(name)
            if value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 999:
                raise InvalidInput(f"term {i}: {name} must be whole years 0-999")
            norm[name] = value
        if "date_from" in norm and "date_to" in norm and norm["date_from"] > norm["date_to"]:
            raise InvalidInput(f"term {i}: date_from is after date_to")
        if "age_min" in norm and "age_max" in norm and norm["age_min"] > norm["age_max"]:
            raise InvalidInput(f"term {i}: age_min is above age_max")
        if len(norm) == 1 + ("negate" in norm):
            raise InvalidInput(f"term {i}: no condition")
        out.append(norm)
    return out


def _finding_term(i: int, term: Mapping[str, Any]) -> dict[str, Any]:
    """`{"kind": "finding", "code": ..., "status": "present"|"absent"|"uncertain", "negate"?}`, canonical."""
    from medcloud.nlp import CODES, STATUSES

    if unknown := set(term) - {"kind", "negate", "code", "status"}:
        raise InvalidInput(f"term {i}: unknown field(s) {', '.join(sorted(unknown))}")
    code, status = term.get("code"), term.get("status", "present")
    if not isinstance(code, str) or code.strip().lower() not in CODES:
        raise InvalidInput(f"term {i}: unknown finding code {code!r} (known: {', '.join(CODES)})")
    if not isinstance(status, str) or status.strip().lower() not in STATUSES:
        raise InvalidInput(f"term {i}: finding status must be one of {', '.join(STATUSES)}")
    if not isinstance(term.get("negate", False), bool):
        raise InvalidInput(f"term {i}: negate must be true or false")
    norm: dict[str, Any] = {"kind": "finding", "code": code.strip().lower(), "status": status.strip().lower()}
    return {**norm, "negate": True} if term.get("negate") else norm


def _finding_condition(term: Mapping[str, Any]) -> sa.ColumnElement[bool]:
    has = (
        sa.exists()
        .where(
            findings.c.code == term["code"],
            findings.c.status == term["status"],
            findings.c.study_uid == studies.c.study_uid,
            findings.c.project == studies.c.project,
        )
        .correlate(studies)
    )
    return sa.not_(has) if term.get("negate") else has


def age_condition(term: Mapping[str, Any]) -> sa.ColumnElement[bool]:
    # Ages are DICOM AS strings ("045Y", "006M"): with three digits, comparing strings compares years,
    # which keeps the test in SQL on SQLite and PostgreSQL alike. Ages in days, weeks or months are year 0.
    age = studies.c.patient_age
    years = sa.and_(age.like("___Y"))
    if "age_min" in term:
        years = sa.and_(years, age >= f"{term['age_min']:03d}Y")
    if "age_max" in term:
        years = sa.and_(years, age <= f"{term['age_max']:03d}Y")
    if term.get("age_min", 0) == 0:
        return sa.or_(years, age.like("___D"), age.like("___W"), age.like("___M"))
    return years


def _image_condition(term: Mapping[str, Any]) -> sa.ColumnElement[bool]:
    conds: list[sa.ColumnElement[bool]] = []
    if "site" in term:
        conds.append(studies.c.site == term["site"])
    if "modality" in term:
        conds.append(series.c.modality == term["modality"])
    if "body_part" in term:
        conds.append(sa.func.upper(series.c.body_part) == term["body_part"])
    if "sex" in term:
        conds.append(sa.func.upper(studies.c.patient_sex) == term["sex"])
    if "date_from" in term:
        conds.append(studies.c.study_date >= date.fromisoformat(term["date_from"]))
    if "date_to" in term:
        conds.append(studies.c.study_date <= date.fromisoformat(term["date_to"]))
    if "age_min" in term or "age_max" in term:
        conds.append(age_condition(term))
    cond = sa.and_(*conds)
    # NULL metadata (no study date, no sex) never matches a term, negated or not.
    return sa.not_(sa.func.coalesce(cond, True)) if term.get("negate") else sa.func.coalesce(cond, False)


def term_condition(term: Mapping[str, Any]) -> sa.ColumnElement[bool]:
    """The SQL condition of one canonical term (from `normalize_query`)."""
    return _finding_condition(term) if term["kind"] == "finding" else _image_condition(term)
