"""Cohort queries and frozen dataset versions at the SQL level (SQLite, and PostgreSQL where it runs)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from medcloud.datasets.manifest import canonical_line, manifest_id
from medcloud.errors import Conflict, InvalidInput, NotFound
from medcloud.store import Catalog
from medcloud.store.datasets import VersionWithdrawn, normalize_query
from medcloud.store.filler import fill_synthetic
from medcloud.store.tables import dataset_files, dataset_versions
from tests.hub.conftest import pg_url

__all__ = ["pg_url"]


def _catalog(url: str, n: int = 400) -> Catalog:
    cat = Catalog(url)
    cat.migrate()
    with cat.write() as conn:
        fill_synthetic(conn, n, projects=("lung", "brain"), per_series=5)
    return cat


@pytest.fixture
def cat(tmp_path: Path) -> Iterator[Catalog]:
    c = _catalog(f"sqlite:///{tmp_path / 'c.db'}")
    yield c
    c.dispose()


def _freeze(cat: Catalog, **kw: object):  # type: ignore[no-untyped-def]
    args: dict[str, object] = {"name": "ds", "query": [], "projects": ["lung"], "seed": 7}
    args.update(kw)
    with cat.write() as conn:
        return cat.datasets.freeze(conn, **args)  # type: ignore[arg-type]


def test_same_inputs_give_the_same_id_stored_once(cat: Catalog) -> None:
    first = _freeze(cat)
    again = _freeze(cat)
    assert first.created and not again.created
    assert again.version["id"] == first.version["id"]
    with cat.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(dataset_versions)).scalar_one() == 1
        files = conn.execute(sa.select(sa.func.count()).select_from(dataset_files)).scalar_one()
    assert files == first.version["file_count"] == 200  # lung holds every other study
    header, entries = cat.datasets.manifest(first.version["id"], None)
    assert manifest_id(header, entries) == first.version["id"]
    assert b"".join(cat.datasets.manifest_lines(first.version["id"], None)).count(b"\n") == 201


def test_other_inputs_give_other_ids(cat: Catalog) -> None:
    base = _freeze(cat).version["id"]
    assert _freeze(cat, seed=8).version["id"] != base
    assert _freeze(cat, split={"train": 0.5, "test": 0.5}).version["id"] != base
    assert _freeze(cat, query=[{"modality": "CT"}]).version["id"] != base
    assert _freeze(cat, name="other").version["id"] != base
    assert len(cat.datasets.list_versions(None)) == 5


def test_unrelated_ingest_keeps_the_id_new_matches_change_it(cat: Catalog) -> None:
    base = _freeze(cat).version["id"]
    with cat.write() as conn:
        fill_synthetic(conn, 20, projects=("brain",), prefix="2.25.8")
    assert _freeze(cat).version["id"] == base
    with cat.write() as conn:
        fill_synthetic(conn, 20, projects=("lung",), prefix="2.25.7")
    grown = _freeze(cat)
    assert grown.created and grown.version["id"] != base and grown.version["file_count"] == 220


def test_split_is_by_patient_and_deterministic(cat: Catalog) -> None:
    with cat.write() as conn:
        fill_synthetic(conn, 6000, projects=("lung",), prefix="2.25.6", per_series=2, series_per_study=1)
    v = _freeze(cat, seed=3).version
    _, files = cat.datasets.manifest(v["id"], None)
    split_of: dict[str, set[str]] = {}
    for f in files:
        split_of.setdefault(f["patient"], set()).add(f["split"])
    assert all(len(s) == 1 for s in split_of.values()), "a patient landed in two splits"
    counts = v["split_counts"]
    assert sum(counts.values()) == len(files)
    assert 0.75 < counts["train"] / len(files) < 0.85 and 0.06 < counts["test"] / len(files) < 0.14
    # Another seed moves patients between splits, but never splits one.
    _, files2 = cat.datasets.manifest(_freeze(cat, seed=4).version["id"], None)
    assert [f["split"] for f in files2] != [f["split"] for f in files]


def test_remove_source_withdraws_and_never_changes_the_version(cat: Catalog) -> None:
    v = _freeze(cat).version
    untouched = _freeze(cat, query=[{"modality": "MR"}]).version
    before = b"".join(cat.datasets.manifest_lines(v["id"], None))
    _, files = cat.datasets.manifest(v["id"], None)
    victim = next(
        f for f in files if f["sop_uid"] not in {g["sop_uid"] for g in cat.datasets.manifest(untouched["id"], None)[1]}
    )
    with cat.write() as conn:
        withdrawn = cat.datasets.remove_instance(conn, victim["sop_uid"], "consent withdrawn")
    assert withdrawn == [v["id"]]
    after = b"".join(cat.datasets.manifest_lines(v["id"], None))
    assert after == before
    import hashlib

    assert hashlib.sha256(after).hexdigest() == v["id"]
    shown = cat.datasets.get_version(v["id"], None)
    assert shown["status"] == "withdrawn" and "consent withdrawn" in shown["withdrawn_reason"]
    with pytest.raises(VersionWithdrawn):
        cat.datasets.get_file(v["id"], "0", None)
    assert cat.datasets.get_version(untouched["id"], None)["status"] == "active"
    assert cat.datasets.get_file(untouched["id"], "0", None)["index"] == 0
    with pytest.raises(InvalidInput), cat.write() as conn:
        cat.datasets.remove_instance(conn, files[1]["sop_uid"], "  ")
    with pytest.raises(NotFound), cat.write() as conn:
        cat.datasets.remove_instance(conn, victim["sop_uid"], "again")
    # Freezing the same inputs now gives a new version without the removed instance.
    again = _freeze(cat)
    assert again.created and again.version["file_count"] == v["file_count"] - 1


def test_query_terms(cat: Catalog) -> None:
    everything = cat.datasets.count([], ["lung", "brain"])
    assert everything == 400
    ct = cat.datasets.count([{"modality": "ct"}], ["lung", "brain"])
    not_ct = cat.datasets.count([{"modality": "CT", "negate": True}], ["lung", "brain"])
    assert ct > 0 and ct + not_ct == everything
    women = cat.datasets.count([{"sex": "f"}], ["lung", "brain"])
    assert 0 < women < everything
    band = cat.datasets.count([{"age_min": 20, "age_max": 22}], ["lung", "brain"])
    older = cat.datasets.count([{"age_min": 23}], ["lung", "brain"])
    assert band > 0 and band + older == everything
    dated = cat.datasets.count([{"date_from": "2016-01-01", "date_to": "2017-12-31"}], ["lung", "brain"])
    assert 0 < dated < everything
    both = cat.datasets.count([{"modality": "CT"}, {"sex": "F", "negate": True}], ["lung", "brain"])
    assert both <= ct and both <= everything - women


@pytest.mark.parametrize(
    "bad",
    [
        "modality=CT",
        [{"kind": "finding", "code": "unicorn"}],  # an unknown finding code
        [{"modality": "CT", "colour": "red"}],
        [{"date_from": "2020-13-01"}],
        [{"date_from": "2021-01-01", "date_to": "2020-01-01"}],
        [{"age_min": -1}],
        [{"age_min": 50, "age_max": 40}],
        [{"negate": True}],
        [{"sex": ""}],
    ],
)
def test_bad_queries_are_refused(bad: object) -> None:
    with pytest.raises(InvalidInput):
        normalize_query(bad)


def test_bad_freeze_inputs(cat: Catalog) -> None:
    for kw in (
        {"split": {"train": 0.5, "val": 0.4}},
        {"split": {"../x": 1.0}},
        {"seed": -1},
        {"name": " padded "},
        {"projects": []},
        {"query": [{"modality": "XA"}]},  # matches nothing
    ):
        with pytest.raises(InvalidInput):
            _freeze(cat, **kw)
    assert cat.datasets.list_versions(None) == []


def test_cohorts_are_idempotent_immutable_and_project_scoped(cat: Catalog) -> None:
    with cat.write() as conn:
        c, created = cat.datasets.save_cohort(conn, "ct", ["lung"], [{"modality": "CT"}], "researcher:x")
        _, again = cat.datasets.save_cohort(conn, "ct", ["lung"], [{"modality": "ct"}], "researcher:x")
        cat.datasets.save_cohort(conn, "ct", ["brain"], [{"modality": "MR"}], "researcher:y")
    assert created and not again and c["query"] == [{"kind": "image", "modality": "CT"}]
    with pytest.raises(Conflict), cat.write() as conn:
        cat.datasets.save_cohort(conn, "ct", ["lung"], [{"modality": "MR"}], "researcher:x")
    assert [x["projects"] for x in cat.datasets.list_cohorts(frozenset({"lung"}))] == [["lung"]]
    assert cat.datasets.get_cohort("ct", frozenset({"brain"}))["query"][0]["modality"] == "MR"
    with pytest.raises(Conflict):
        cat.datasets.get_cohort("ct", frozenset({"lung", "brain"}))
    assert cat.datasets.get_cohort("ct", frozenset({"lung", "brain"}), "lung")["projects"] == ["lung"]
    with pytest.raises(NotFound):
        cat.datasets.get_cohort("ct", frozenset({"heart"}))


def test_versions_are_project_scoped(cat: Catalog) -> None:
    v = _freeze(cat).version
    assert cat.datasets.list_versions(frozenset({"brain"})) == []
    with pytest.raises(NotFound):
        cat.datasets.get_version(v["id"], frozenset({"brain"}))
    with pytest.raises(NotFound):
        cat.datasets.manifest(v["id"], frozenset({"brain"}))
    with pytest.raises(NotFound):
        cat.datasets.get_file(v["id"], "0", frozenset({"brain"}))
    both = _freeze(cat, projects=["lung", "brain"]).version
    # A two-project version needs both grants.
    assert [x["id"] for x in cat.datasets.list_versions(frozenset({"lung"}))] == [v["id"]]
    assert cat.datasets.get_version(both["id"], frozenset({"lung", "brain"}))["file_count"] == 400


def test_same_catalog_same_id_on_postgresql(tmp_path: Path, pg_url: str) -> None:
    lite = _catalog(f"sqlite:///{tmp_path / 'c.db'}")
    pg = _catalog(pg_url)
    try:
        a, b = _freeze(lite, query=[{"age_min": 25}]), _freeze(pg, query=[{"age_min": 25}])
        assert a.version["id"] == b.version["id"]
        assert _freeze(pg, query=[{"age_min": 25}]).created is False
        assert canonical_line({"b": 1, "a": "é"}) == '{"a":"é","b":1}\n'.encode()
    finally:
        lite.dispose()
        pg.dispose()
