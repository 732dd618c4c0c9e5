"""The manifest's canonical form and the patient split, as pure functions."""

from __future__ import annotations

import pytest

from medcloud.datasets.manifest import canonical_line, file_line, manifest_id, normalize_split, split_for_patient


@pytest.mark.parametrize("patient", ["PSEUDO-1", 'a"b\\c', "患者\u2028x", "tab\there", ""])
def test_fast_file_line_is_the_canonical_line(patient: str) -> None:
    args = (7, "2.25.1", "2.25.2", "2.25.3", patient, "ab" * 32, 12345, "val")
    entry = dict(
        zip(("index", "sop_uid", "study_uid", "series_uid", "patient", "sha256", "size", "split"), args, strict=True)
    )
    assert file_line(*args) == canonical_line({**entry, "labels": {}})  # type: ignore[arg-type]


def test_manifest_id_changes_with_any_byte() -> None:
    header = {"format": "x", "seed": 1}
    files = [{"index": 0, "sha256": "a"}]
    base = manifest_id(header, files)
    assert manifest_id(dict(header), [dict(files[0])]) == base
    assert manifest_id({**header, "seed": 2}, files) != base
    assert manifest_id(header, [{"index": 0, "sha256": "b"}]) != base
    assert manifest_id(header, []) != base


def test_split_is_a_function_of_seed_and_patient() -> None:
    parts = normalize_split(None)
    patients = [f"P{i}" for i in range(5000)]
    first = [split_for_patient(p, 1, parts) for p in patients]
    assert first == [split_for_patient(p, 1, parts) for p in patients]
    assert first != [split_for_patient(p, 2, parts) for p in patients]
    share = {name: first.count(name) / len(first) for name in parts}
    assert abs(share["train"] - 0.8) < 0.03 and abs(share["val"] - 0.1) < 0.02 and abs(share["test"] - 0.1) < 0.02
    assert {split_for_patient(p, 1, {"train": 1.0, "test": 0.0}) for p in patients} == {"train"}


@pytest.mark.parametrize(
    "bad", [{}, {"train": 0.5}, {"train": 1.5, "test": -0.5}, {"Train": 1.0}, {"a/b": 1.0}, {"train": True}]
)
def test_bad_splits(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        normalize_split(bad)
