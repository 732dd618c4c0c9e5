"""The metadata cache: converted once per content hash, bounded, and never handing out shared top levels."""

from __future__ import annotations

import io

from medcloud.dicomweb.json import MetadataCache, StoredJsonCache, instance_metadata
from tests.dicomweb.conftest import dicom_file


def test_converted_once_per_hash_bounded_and_not_shared() -> None:
    files = {"a": dicom_file(study_uid="2.25.1"), "b": dicom_file(study_uid="2.25.2")}
    opened: list[str] = []

    def opener(key: str):  # type: ignore[no-untyped-def]
        def open_blob() -> io.BytesIO:
            opened.append(key)
            return io.BytesIO(files[key])

        return open_blob

    cache = MetadataCache(max_entries=1)
    first = cache.metadata("a", opener("a"), "http://h/frames/1")
    again = cache.metadata("a", opener("a"), "http://other/frames/1")
    assert opened == ["a"]  # the second answer came from the cache
    assert first == instance_metadata(io.BytesIO(files["a"]), "http://h/frames/1")
    assert again["7FE00010"]["BulkDataURI"] == "http://other/frames/1"  # the URI is per request, not cached
    assert first["7FE00010"]["BulkDataURI"] == "http://h/frames/1"
    assert "7FE00010" not in cache.metadata("a", opener("a"), None)
    cache.metadata("b", opener("b"), None)  # evicts "a" (one entry at most)
    cache.metadata("a", opener("a"), None)
    assert opened == ["a", "b", "a"]


def test_stored_json_cache_is_bounded_by_bytes_and_keeps_the_recently_used() -> None:
    cache = StoredJsonCache(max_bytes=1600)
    cache.put("a", (b"a" * 60, b"a" * 40))  # held as pieces: their sizes add up
    cache.put("b", (b"b" * 100,))
    assert cache.get_many(["a", "b", "c"]) == {"a": (b"a" * 60, b"a" * 40), "b": (b"b" * 100,)}
    cache.get_many(["a"])  # "a" is now the most recently used: "b" is the oldest
    for key in "cdefghijklmnopq":
        cache.put(key, (key.encode() * 100,))  # 17 entries of 100 bytes: the least recently used goes
    held = set(cache.get_many("abcdefghijklmnopq"))
    assert len(held) == 16 and "b" not in held and "a" in held
    cache.put("huge", (b"x" * 50, b"x" * 51))  # over a sixteenth of the budget: never held, nothing evicted for it
    assert cache.get_many(["huge"]) == {} and len(cache.get_many("abcdefghijklmnopq")) == 16
