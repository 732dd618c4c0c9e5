"""Sites: the hospitals and societies that contribute data, their collection targets and progress."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from medcloud.errors import InvalidInput
from medcloud.store.db import Database, driver_execute, utcnow
from medcloud.store.tables import images, instances, series, sites, societies, studies, tokens

__all__ = ["Sites", "ensure_site"]


_SITE_KNOWN = sa.select(sites.c.name).where(sites.c.name == sa.bindparam("site"))  # built once: every ingest asks


def ensure_site(conn: Connection, site: str) -> None:
    """Register `site` (named after itself) unless it is known, in the caller's write transaction."""
    if not driver_execute(conn, _SITE_KNOWN, {"site": site}):
        conn.execute(sites.insert().values(name=site, display_name=site, created_at=utcnow()))


class Sites:
    """Sites and their collection progress."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def upsert(
        self,
        conn: Connection,
        name: str,
        *,
        display_name: str | None = None,
        target_cases: int | None = None,
        target_images: int | None = None,
        society: str | None = None,
    ) -> None:
        """Register a site or change its display name, targets and society, in the caller's write transaction.

        `society=""` takes the site out of its society; another name must be a registered society."""
        ensure_site(conn, name)
        values: dict[str, Any] = {}
        if society is not None:
            if society and conn.execute(sa.select(societies.c.name).where(societies.c.name == society)).first() is None:
                raise InvalidInput(f"society {society!r} is not registered; register it first")
            values["society"] = society or None
        if display_name is not None:
            values["display_name"] = display_name
        if target_cases is not None:
            values["target_cases"] = target_cases
        if target_images is not None:
            values["target_images"] = target_images
        if values:
            conn.execute(sites.update().where(sites.c.name == name).values(**values))

    def progress(self, projects: frozenset[str] | None) -> list[dict[str, Any]]:
        """Cases (distinct patients) and images per site, against the site's targets.

        With `projects`, only the sites taking part in those projects, counting only their data."""
        st = studies
        case_q = sa.select(st.c.site, sa.func.count(sa.distinct(st.c.patient_pseudonym)).label("n")).group_by(st.c.site)
        inst_q = (
            sa.select(st.c.site, sa.func.count(instances.c.id).label("n"))
            .select_from(instances.join(series).join(st))
            .group_by(st.c.site)
        )
        img_q = sa.select(images.c.site, sa.func.count(images.c.id).label("n")).group_by(images.c.site)
        if projects is not None:
            case_q = case_q.where(st.c.project.in_(projects))
            inst_q = inst_q.where(st.c.project.in_(projects))
            img_q = img_q.where(images.c.project.in_(projects))
        with self._db.read() as conn:
            cases = {r.site: int(r.n) for r in conn.execute(case_q)}
            inst = {r.site: int(r.n) for r in conn.execute(inst_q)}
            imgs = {r.site: int(r.n) for r in conn.execute(img_q)}
            rows = list(conn.execute(sa.select(sites).order_by(sites.c.name)))
            if projects is not None:
                # A researcher sees the sites of their projects only: those with data there, and those
                # holding a live site token for one of them (enrolled, nothing sent yet).
                visible = set(cases) | set(inst) | set(imgs) | _enrolled_sites(conn, projects)
                rows = [r for r in rows if r.name in visible]
        out = []
        for r in rows:
            n_images = inst.get(r.name, 0) + imgs.get(r.name, 0)
            n_cases = cases.get(r.name, 0)
            out.append(
                {
                    "site": r.name,
                    "display_name": r.display_name,
                    "society": r.society,
                    "cases": n_cases,
                    "dicom_instances": inst.get(r.name, 0),
                    "other_images": imgs.get(r.name, 0),
                    "images": n_images,
                    "target_cases": r.target_cases,
                    "target_images": r.target_images,
                    "cases_progress": round(n_cases / r.target_cases, 4) if r.target_cases else None,
                    "images_progress": round(n_images / r.target_images, 4) if r.target_images else None,
                }
            )
        return out


def _enrolled_sites(conn: Connection, projects: frozenset[str]) -> set[str]:
    """Sites holding an unrevoked, unexpired site token for any of `projects`."""
    now = utcnow()
    q = sa.select(tokens.c.site, tokens.c.projects, tokens.c.expires_at).where(
        tokens.c.role == "site", tokens.c.site.is_not(None), tokens.c.revoked_at.is_(None)
    )
    out: set[str] = set()
    for r in conn.execute(q):
        expires = r.expires_at
        if expires is not None and expires.tzinfo is None:  # SQLite hands back naive UTC
            expires = expires.replace(tzinfo=now.tzinfo)
        if (expires is None or expires > now) and projects & set(str(r.projects).split(",")):
            out.add(str(r.site))
    return out
