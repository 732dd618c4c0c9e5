"""The dataset manifest's canonical form, its content address and the patient-level split (pure functions).

The manifest is JSON Lines: one header object, then one object per file, each written with sorted keys,
no spaces and UTF-8. The version id is the SHA-256 of those bytes, so anyone holding a manifest can
check that it is the version it claims to be. The hub (`store.datasets`) and the CLI share this module.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from typing import Any

__all__ = [
    "DEFAULT_SPLIT",
    "FORMAT",
    "canonical_line",
    "file_line",
    "manifest_id",
    "manifest_lines",
    "normalize_split",
    "split_for_patient",
]

FORMAT = "medcloud.dataset/1"
DEFAULT_SPLIT: dict[str, float] = {"train": 0.8, "val": 0.1, "test": 0.1}
_SPLIT_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-")


def canonical_line(obj: Mapping[str, Any]) -> bytes:
    """One manifest line: sorted keys, no spaces, UTF-8, a trailing newline."""
    return (json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


def file_line(
    index: int, sop_uid: str, study_uid: str, series_uid: str, patient: str, sha256: str, size: int, split: str
) -> bytes:
    """`canonical_line` of one file entry with empty labels, built directly: freezing 100,000 files spends
    most of its time here otherwise. A test holds the two to the same bytes."""
    return (
        f'{{"index":{int(index)},"labels":{{}},"patient":{encode_basestring(patient)},'
        f'"series_uid":{encode_basestring(series_uid)},"sha256":{encode_basestring(sha256)},"size":{int(size)},'
        f'"sop_uid":{encode_basestring(sop_uid)},"split":{encode_basestring(split)},'
        f'"study_uid":{encode_basestring(study_uid)}}}\n'
    ).encode()


def manifest_lines(header: Mapping[str, Any], files: Iterable[Mapping[str, Any]]) -> Iterator[bytes]:
    """The canonical manifest, one line at a time."""
    yield canonical_line(header)
    for f in files:
        yield canonical_line(f)


def manifest_id(header: Mapping[str, Any], files: Iterable[Mapping[str, Any]]) -> str:
    """The version id: SHA-256 of the canonical manifest."""
    h = hashlib.sha256()
    for line in manifest_lines(header, files):
        h.update(line)
    return h.hexdigest()


def normalize_split(split: Mapping[str, float] | None) -> dict[str, float]:
    """Validate split fractions (named, non-negative, summing to 1); ValueError says what is wrong."""
    split = dict(DEFAULT_SPLIT if split is None else split)
    if not split:
        raise ValueError("split needs at least one part")
    for name, frac in split.items():
        if not name or len(name) > 16 or not set(name) <= _SPLIT_NAME_CHARS:
            raise ValueError(f"split name {name!r}: use 1-16 of a-z 0-9 _ -")
        if not isinstance(frac, (int, float)) or isinstance(frac, bool) or not 0 <= frac <= 1:
            raise ValueError(f"split {name!r}: fraction must be a number in [0, 1]")
    if abs(sum(split.values()) - 1.0) > 1e-6:
        raise ValueError(f"split fractions sum to {sum(split.values()):g}, not 1")
    # Rounded so that 0.1 typed by hand and 0.1 computed elsewhere hash the same.
    return {name: round(float(frac), 6) for name, frac in sorted(split.items())}


def split_for_patient(patient: str, seed: int, split: Mapping[str, float]) -> str:
    """The split a patient falls in: a keyed hash of the pseudonym, so every image of a patient lands together."""
    digest = hashlib.sha256(f"{seed}\x00{patient}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    acc = 0.0
    names = sorted(split)
    for name in names:
        acc += split[name]
        if u < acc:
            return name
    return next(n for n in reversed(names) if split[n] > 0)
