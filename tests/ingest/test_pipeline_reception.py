"""The ingest pipeline owns spooling: one file as it streams, or a batch's files each judged alone."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from medcloud.errors import InvalidInput, TooLarge
from medcloud.ingest.pipeline import Ingestor
from medcloud.store.blobs import LocalBlobStore
from medcloud.store.catalog import Catalog


@pytest.fixture
def ingestor(tmp_path: Path) -> Iterator[Ingestor]:
    catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.sqlite3'}")
    blobs = LocalBlobStore(tmp_path / "blobs", pack_below=1024)
    yield Ingestor(catalog, blobs)
    blobs.close()
    catalog.dispose()


async def _chunks(data: bytes, size: int = 100) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def test_receive_spools_and_hashes(ingestor: Ingestor) -> None:
    data = bytes(range(256)) * 20  # over pack_below: spilled to .incoming
    upload = asyncio.run(ingestor.receive(_chunks(data), max_bytes=10_000, declared=len(data)))
    assert upload.finish(fsync=False) == hashlib.sha256(data).hexdigest() and upload.size == len(data)
    assert not upload.in_memory and upload.path.read_bytes() == data
    upload.discard()
    assert list(ingestor.blobs.incoming.iterdir()) == []


@pytest.mark.parametrize(
    ("declared", "limit", "error"),
    [(6000, 10_000, InvalidInput), (None, 1000, TooLarge), (20_000, 10_000, TooLarge)],
    ids=["shorter-than-declared", "over-limit-streamed", "over-limit-declared"],
)
def test_receive_refuses_and_keeps_nothing(ingestor: Ingestor, declared: int | None, limit: int, error: type) -> None:
    with pytest.raises(error):
        asyncio.run(ingestor.receive(_chunks(b"x" * 5000), max_bytes=limit, declared=declared))
    assert list(ingestor.blobs.incoming.iterdir()) == []


def test_batch_reception_judges_each_file_alone(ingestor: Ingestor) -> None:
    reception = ingestor.batch_reception(max_file_bytes=3000, max_files=3, memory_bytes=10_000)
    with reception:
        reception.begin("good.dcm", "a" * 64)
        reception.write(b"g" * 100)
        reception.begin("big.dcm", None)
        for _ in range(4):
            reception.write(b"b" * 1000)
        reception.begin("odd.dcm", "not-hex")
        reception.write(b"o" * 100)
    good, big, odd = reception.items
    assert good.error is None and good.expected_sha256 == "a" * 64 and good.upload.size == 100
    assert isinstance(big.error, TooLarge) and isinstance(odd.error, InvalidInput)
    assert odd.upload.size == 0  # a refused file keeps no bytes
    with pytest.raises(InvalidInput, match="at most 3 files"):
        reception.begin("fourth.dcm", None)
    reception.discard()
    assert list(ingestor.blobs.incoming.iterdir()) == []


def test_batch_reception_discards_everything_when_receiving_fails(ingestor: Ingestor) -> None:
    reception = ingestor.batch_reception(max_file_bytes=10_000, max_files=10, memory_bytes=500)
    with pytest.raises(InvalidInput), reception:
        for name in ("a", "b"):
            reception.begin(name, None)
            reception.write(b"z" * 2000)  # over the memory budget: spilled to .incoming
        assert len(list(ingestor.blobs.incoming.iterdir())) == 2
        raise InvalidInput("the body was cut")
    assert list(ingestor.blobs.incoming.iterdir()) == []


def test_an_upload_items_name_is_asked_for_once_and_only_when_needed(ingestor: Ingestor) -> None:
    from medcloud.ingest.pipeline import UploadItem as Item

    blobs = ingestor.blobs
    asked: list[int] = []

    def name_of() -> str:
        asked.append(1)
        return "1.2.3"

    item = Item(blobs.spool(100), name_of=name_of)
    assert asked == []  # nothing is read when the item is made
    assert item.name == "1.2.3" and item.name == "1.2.3" and asked == [1]
    given = Item(blobs.spool(100), "scan.dcm", name_of=name_of)
    assert given.name == "scan.dcm" and asked == [1]  # a name given is never asked for
    assert Item(blobs.spool(100)).name == ""
