"""The one multipart splitter and writer (`formats.multipart`), shared by batch ingest and DICOMweb."""

from __future__ import annotations

import mmap

import pytest

from medcloud.errors import InvalidInput
from medcloud.formats.multipart import closing, new_boundary, part_header, split_multipart


def _body(boundary: str, parts: list[bytes], preamble: bytes = b"") -> bytes:
    return preamble + b"".join(part_header(boundary, "application/dicom") + p for p in parts) + closing(boundary)


def test_what_is_written_splits_back_into_the_same_parts() -> None:
    b = new_boundary()
    parts = [b"first", b"\r\n--not-the-boundary\r\n", b""]
    got = [(h, bytes(d)) for h, d in split_multipart(_body(b, parts), b.encode())]
    assert [d for _, d in got] == parts
    assert all(h == {"content-type": "application/dicom"} for h, _ in got)


def test_a_mapped_body_splits_like_bytes() -> None:
    b = new_boundary()
    body = _body(b, [b"x" * 1000, b"y"])
    with mmap.mmap(-1, len(body)) as mm:
        mm.write(body)
        views = list(split_multipart(mm, b.encode()))
        assert [bytes(d) for _, d in views] == [b"x" * 1000, b"y"]
        for _, d in views:
            d.release()


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda body: body[: -len(b"--\r\n") - 10], "closing boundary"),
        (lambda body: b"preamble" + body.lstrip(b"\r\n"), "never opens a line"),
        (lambda body: body.replace(b"Content-Type", b"Content-Type-no-colon-here", 1).replace(b":", b"", 1), "':'"),
    ],
    ids=["cut", "boundary-mid-line", "header-without-colon"],
)
def test_a_malformed_body_is_refused(mangle: object, message: str) -> None:
    b = new_boundary()
    body = _body(b, [b"data"])
    with pytest.raises(InvalidInput, match=message):
        list(split_multipart(mangle(body), b.encode()))  # type: ignore[operator]


def test_a_preamble_ending_in_a_line_break_is_allowed() -> None:
    b = new_boundary()
    body = b"This is a preamble.\r\n" + _body(b, [b"data"]).lstrip(b"\r\n")
    assert [bytes(d) for _, d in split_multipart(body, b.encode())] == [b"data"]
