"""Cohort queries: terms over image metadata and report findings, validated and compiled to SQL.

A query is a list of terms, all of which must hold; any term may be negated. Two kinds:

- `image`: study and series metadata (site, modality, body part, study dates, sex, age band). Each term is
  judged per series (every field of it lives on the series or its study), so an instance matches when its
  series does, and counting instances is summing the matched series' `n_instances` (migration 0005).
- `finding`: a report finding of the study, `{"kind": "finding", "code": "pneumothorax", "status":
  "present"}`, codes and statuses of `medcloud.nlp`; compiled to EXISTS over `findings` (reports of the
  study's own project only), which the (code, status, project, study_uid) index answers alone.

`pneumothorax=present AND NOT pleural_effusion=present` is two finding terms, the second negated.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

import sqlalchemy as sa

from medcloud.errors import InvalidInput
from medcloud.nlp import CODES, STATUSES
from medcloud.store.tables import findings, series, studies

__all__ = ["FINDING_FIELDS", "IMAGE_FIELDS", "age_condition", "normalize_query", "series_match", "term_condition"]

IMAGE_FIELDS = ("site", "modality", "body_part", "date_from", "date_to", "sex", "age_min", "age_max")
FINDING_FIELDS = ("code", "status")
MAX_TERMS = 50


def normalize_query(terms: Any) -> list[dict[str, Any]]:
    """Validate a cohort query (a list of terms) and return its canonical form; InvalidInput says what is wrong."""
    if not isinstance(terms, list):
        raise InvalidInput("a cohort query is a list of terms")
    if len(terms) > MAX_TERMS:
        raise InvalidInput(f"a cohort query has at most {MAX_TERMS} terms")
    out: list[dict[str, Any]] = []
    for i, term in enumerate(terms):
        if not isinstance(term, dict):
            raise InvalidInput(f"term {i}: not an object")
        kind = term.get("kind", "image")
        if kind not in ("image", "finding"):
            raise InvalidInput(f"term {i}: unknown kind {kind!r} (image or finding)")
        fields = IMAGE_FIELDS if kind == "image" else FINDING_FIELDS
        unknown = set(term) - {"kind", "negate", *fields}
        if unknown:
            raise InvalidInput(f"term {i}: unknown field(s) {', '.join(sorted(unknown))} for a {kind} term")
        if not isinstance(term.get("negate", False), bool):
            raise InvalidInput(f"term {i}: negate must be true or false")
        norm = _image_term(i, term) if kind == "image" else _finding_term(i, term)
        if term.get("negate"):
            norm["negate"] = True
        out.append(norm)
    return out


def _finding_term(i: int, term: Mapping[str, Any]) -> dict[str, Any]:
    code, status = term.get("code"), term.get("status", "present")
    if not isinstance(code, str) or code.strip().lower() not in CODES:
        raise InvalidInput(f"term {i}: code must be one of {', '.join(CODES)}")
    if not isinstance(status, str) or status.strip().lower() not in STATUSES:
        raise InvalidInput(f"term {i}: status must be one of {', '.join(STATUSES)}")
    return {"kind": "finding", "code": code.strip().lower(), "status": status.strip().lower()}


def _image_term(i: int, term: Mapping[str, Any]) -> dict[str, Any]:
    norm: dict[str, Any] = {"kind": "image"}
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
    if len(norm) == 1:
        raise InvalidInput(f"term {i}: no condition")
    return norm


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


def _finding_condition(term: Mapping[str, Any]) -> sa.ColumnElement[bool]:
    has = (
        sa.exists()
        .where(
            findings.c.code == term["code"],
            findings.c.status == term["status"],
            findings.c.project == studies.c.project,
            findings.c.study_uid == studies.c.study_uid,
        )
        .correlate(studies)
    )
    return sa.not_(has) if term.get("negate") else has


def term_condition(term: Mapping[str, Any]) -> sa.ColumnElement[bool]:
    """One normalised term as a condition over `series` joined to `studies`."""
    return _finding_condition(term) if term["kind"] == "finding" else _image_condition(term)


def series_match(terms: Sequence[Mapping[str, Any]], projects: Sequence[str]) -> sa.Select[Any]:
    """The series (with their studies) a cohort matches in `projects`: select what you need from it."""
    q = sa.select().select_from(series.join(studies)).where(studies.c.project.in_(sorted(set(projects))))
    for term in terms:
        q = q.where(term_condition(term))
    return q
