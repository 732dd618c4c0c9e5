"""Societies: the organisations sites contribute through (a medical society, a hospital group), their
collection targets, and their progress summed over their sites.

A site belongs to at most one society (`sites.society`). Progress is always that of `Sites.progress`, so
a researcher sees the same per-project scoping here as in `GET /api/v1/sites`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib import resources
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from medcloud.errors import InvalidInput
from medcloud.store.db import Database, utcnow
from medcloud.store.sites import Sites
from medcloud.store.tables import societies

__all__ = ["EXAMPLE_TARGETS", "Societies", "example_targets"]

# The example table `medcloud demo` loads (made-up targets, labelled as such inside the file).
EXAMPLE_TARGETS = "society_targets.example.json"
_SOCIETY_FIELDS = {"name", "display_name", "display_name_ja", "target_cases", "target_images", "sites"}
_SITE_FIELDS = {"name", "display_name", "target_cases", "target_images"}


def example_targets() -> dict[str, Any]:
    """The example per-society target table shipped with the package."""
    text = (resources.files("medcloud.store") / "data" / EXAMPLE_TARGETS).read_text(encoding="utf-8")
    return dict(json.loads(text))


def _target(where: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput(f"{where}: a target is a whole number ≥ 0 or null")
    return value


def _text(where: str, value: Any, limit: int = 200) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise InvalidInput(f"{where}: a display name is text of at most {limit} characters")
    return value


def _ratio(n: int, target: int | None) -> float | None:
    return round(n / target, 4) if target else None


class Societies:
    """Societies, their targets and their progress."""

    def __init__(self, db: Database, sites: Sites) -> None:
        self._db = db
        self._sites = sites

    def upsert(
        self,
        conn: Connection,
        name: str,
        *,
        display_name: str | None = None,
        display_name_ja: str | None = None,
        target_cases: int | None = None,
        target_images: int | None = None,
    ) -> bool:
        """Register a society or change its names and targets (caller's write transaction); True if new."""
        found = conn.execute(sa.select(societies.c.name).where(societies.c.name == name)).first()
        values: dict[str, Any] = {}
        if display_name is not None:
            values["display_name"] = display_name
        if display_name_ja is not None:
            values["display_name_ja"] = display_name_ja
        if target_cases is not None:
            values["target_cases"] = target_cases
        if target_images is not None:
            values["target_images"] = target_images
        if found is None:
            conn.execute(societies.insert().values(name=name, **{"display_name": name, **values}, created_at=utcnow()))
            return True
        if values:
            conn.execute(societies.update().where(societies.c.name == name).values(**values))
        return False

    def load(self, conn: Connection, table: Mapping[str, Any]) -> dict[str, int]:
        """Register the societies of a target table, their sites and every target, in one transaction.

        The table is `{"societies": [{name, display_name?, display_name_ja?, target_cases?, target_images?,
        sites: [{name, display_name?, target_cases?, target_images?}]}]}` (see the example in
        `store/data`). Anything malformed is refused whole (400) before a row changes."""
        from medcloud.security.tokens import validate_name

        items = table.get("societies") if isinstance(table, Mapping) else None
        if not isinstance(items, list):
            raise InvalidInput('a target table is an object with a "societies" list')
        plan: list[tuple[str, dict[str, Any], list[tuple[str, dict[str, Any]]]]] = []
        for i, soc in enumerate(items):
            where = f"societies[{i}]"
            if not isinstance(soc, Mapping) or not isinstance(soc.get("name"), str):
                raise InvalidInput(f"{where}: an object with a name")
            if unknown := set(soc) - _SOCIETY_FIELDS:
                raise InvalidInput(f"{where}: unknown fields {sorted(unknown)}")
            validate_name("society", soc["name"])
            fields: dict[str, Any] = {
                "display_name": _text(where, soc.get("display_name")),
                "display_name_ja": _text(where, soc.get("display_name_ja")),
                "target_cases": _target(where, soc.get("target_cases")),
                "target_images": _target(where, soc.get("target_images")),
            }
            members: list[tuple[str, dict[str, Any]]] = []
            for j, site in enumerate(soc.get("sites") or []):
                w = f"{where}.sites[{j}]"
                if not isinstance(site, Mapping) or not isinstance(site.get("name"), str):
                    raise InvalidInput(f"{w}: an object with a name")
                if unknown := set(site) - _SITE_FIELDS:
                    raise InvalidInput(f"{w}: unknown fields {sorted(unknown)}")
                validate_name("site", site["name"])
                members.append(
                    (
                        site["name"],
                        {
                            "display_name": _text(w, site.get("display_name")),
                            "target_cases": _target(w, site.get("target_cases")),
                            "target_images": _target(w, site.get("target_images")),
                        },
                    )
                )
            plan.append((soc["name"], fields, members))
        n_sites = 0
        for name, fields, members in plan:
            self.upsert(conn, name, **fields)
            for site, site_fields in members:
                self._sites.upsert(conn, site, society=name, **site_fields)
                n_sites += 1
        return {"societies": len(plan), "sites": n_sites}

    def progress(self, projects: frozenset[str] | None) -> dict[str, Any]:
        """Per society: its targets, its sites' progress and their sums; sites of no society come last.

        With `projects`, only the sites visible to those projects (as `Sites.progress`) and the societies
        that have one of them; the counts are of those projects' data only."""
        site_rows = self._sites.progress(projects)
        with self._db.read() as conn:
            rows = list(conn.execute(sa.select(societies).order_by(societies.c.name)))
        by_society: dict[str | None, list[dict[str, Any]]] = {}
        for s in site_rows:
            by_society.setdefault(s["society"], []).append(s)
        out = []
        for r in rows:
            members = by_society.pop(r.name, [])
            if projects is not None and not members:
                continue
            out.append(_summary(r.name, r.display_name, r.display_name_ja, r.target_cases, r.target_images, members))
        unassigned = by_society.pop(None, [])
        for name, members in sorted(by_society.items(), key=lambda kv: str(kv[0])):  # a society since removed
            out.append(_summary(name, str(name), "", None, None, members))
        if unassigned:
            out.append(_summary(None, "", "", None, None, unassigned))
        totals = {
            "cases": sum(s["cases"] for s in site_rows),
            "images": sum(s["images"] for s in site_rows),
            "sites": len(site_rows),
        }
        return {"societies": out, "totals": totals}


def _summary(
    name: str | None,
    display_name: str,
    display_name_ja: str,
    target_cases: int | None,
    target_images: int | None,
    members: list[dict[str, Any]],
) -> dict[str, Any]:
    cases = sum(m["cases"] for m in members)
    images = sum(m["images"] for m in members)
    return {
        "society": name,
        "display_name": display_name,
        "display_name_ja": display_name_ja,
        "target_cases": target_cases,
        "target_images": target_images,
        "cases": cases,
        "images": images,
        "cases_progress": _ratio(cases, target_cases),
        "images_progress": _ratio(images, target_images),
        "sites": members,
    }
