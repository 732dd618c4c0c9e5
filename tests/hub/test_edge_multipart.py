"""hub/multipart.py alone: whole-body and streamed parsing agree, limits hold, a cut body is refused."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import pytest

from medcloud.errors import InvalidInput, TooLarge, UnsupportedFormat
from medcloud.hub.multipart import MAX_BOUNDARY_BYTES, MAX_PART_HEADER_LINES, boundary_of, read_parts

BOUNDARY = b"b0undary"


class Parts:
    """A PartSink that keeps what it is given."""

    def __init__(self) -> None:
        self.parts: list[tuple[str, str | None, bytes]] = []

    def begin(self, filename: str, expected_sha256: str | None) -> None:
        self.parts.append((filename, expected_sha256, b""))

    def write(self, chunk: bytes | memoryview) -> None:
        name, sha, data = self.parts[-1]
        self.parts[-1] = (name, sha, data + bytes(chunk))


def body_of(parts: list[tuple[dict[str, str], bytes]], *, close: bool = True) -> bytes:
    out = b""
    for headers, data in parts:
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        out += b"--" + BOUNDARY + b"\r\n" + head.encode() + b"\r\n" + data + b"\r\n"
    return out + (b"--" + BOUNDARY + b"--\r\nepilogue" if close else b"")


def parse(body: bytes, *, streamed: bool, chunk: int = 7, limit: int = 10**9) -> list[tuple[str, str | None, bytes]]:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(body), chunk):
            yield body[i : i + chunk]

    sink = Parts()
    declared = None if streamed else len(body)
    asyncio.run(read_parts(chunks(), BOUNDARY, sink, limit=limit, declared=declared, whole_below=10**9))
    return sink.parts


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
def test_parts_come_out_as_they_went_in(streamed: bool) -> None:
    rng = random.Random(7)
    tricky = [b"", b"\r\n", b"--" + BOUNDARY, b"\r\n--" + BOUNDARY[:-1], bytes(rng.randrange(256) for _ in range(5000))]
    parts = [
        ({"X-Medcloud-Filename": f"f{i}.dcm", "X-Content-SHA256": "a" * 64}, data) for i, data in enumerate(tricky)
    ]
    parts.append(({"Content-Disposition": 'form-data; name="file"; filename="from-form.png"'}, b"png"))
    got = parse(body_of(parts), streamed=streamed)
    want = [(f"f{i}.dcm", "a" * 64, data) for i, data in enumerate(tricky)] + [("from-form.png", None, b"png")]
    assert got == want


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
def test_a_body_without_its_closing_boundary_is_refused(streamed: bool) -> None:
    body = body_of([({}, b"one"), ({}, b"two")], close=False)
    with pytest.raises(InvalidInput, match="closing boundary"):
        parse(body, streamed=streamed)
    whole = body_of([({}, b"one")])
    with pytest.raises(InvalidInput, match="closing boundary"):
        parse(whole[: whole.index(b"--" + BOUNDARY + b"--")], streamed=streamed)


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
def test_part_header_lines_are_bounded(streamed: bool) -> None:
    ok = {f"X-H{i}": "v" for i in range(MAX_PART_HEADER_LINES)}
    assert len(parse(body_of([(ok, b"x")]), streamed=streamed)) == 1
    too_many = {f"X-H{i}": "v" for i in range(MAX_PART_HEADER_LINES + 1)}
    with pytest.raises(InvalidInput, match="malformed multipart body"):
        parse(body_of([(too_many, b"x")]), streamed=streamed)


def test_body_over_the_limit_is_413() -> None:
    with pytest.raises(TooLarge):
        parse(body_of([({}, b"x" * 1000)]), streamed=True, limit=500)


def test_boundary_of_content_types() -> None:
    assert boundary_of('multipart/related; type="application/dicom"; boundary=abc') == b"abc"
    assert boundary_of("multipart/form-data; boundary=xyz") == b"xyz"
    for bad in ("application/dicom", "multipart/related", "text/plain; boundary=abc"):
        with pytest.raises(UnsupportedFormat):
            boundary_of(bad)
    with pytest.raises(InvalidInput, match="boundary"):
        boundary_of("multipart/related; boundary=" + "b" * (MAX_BOUNDARY_BYTES + 1))
