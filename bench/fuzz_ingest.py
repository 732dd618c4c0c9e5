"""Seeded mutation fuzzer for the hub's ingest routes, against a real hub process.

    .venv/bin/python bench/fuzz_ingest.py [--count 30000] [--seed 1] [--paths single,batch,pydicom]
                                          [--workers 2] [--timeout 20] [--rss-limit-mb 1024] [--out DIR]
    .venv/bin/python bench/fuzz_ingest.py --seed 1 --replay single:123   # one mutant again, on a fresh hub

Three paths, each with its own mutant numbering:
- `single`: one file per `POST /api/v1/ingest` (raw body; some chunked, some with X-Content-SHA256);
- `batch`: `POST /api/v1/ingest/batch`, multipart/related of 1-6 parts (mutated files and mutated
  multipart structure: no closing boundary, bad part headers, duplicate parts, boundary games), some
  sent chunked so the hub's streaming parser gets them instead of the in-memory splitter;
- `pydicom`: DICOM mutants padded to at least 4 MiB, which the hub spools to disk and reads with pydicom
  instead of its byte reader.

Seeds: pydicom's own test files (globbed from the installed package, never `get_testdata_files()`,
which may go to the network), de-identified with `medcloud.deid.Deidentifier` under a key derived
from `--seed` (the hub refuses DICOM that is not de-identified); PNG, JPEG and TIFF images made here.
A mutant is a function of (seed, path, index) only, so every finding is reproducible with `--replay`.
DICOM mutants get a SOP Instance UID of their own (same length, so the layout is unchanged) unless they
are big, so a mutant that passes validation is indexed and stored instead of refused as a conflict.

Outcomes per request: `2xx` and `4xx` are fine; findings are `server_error` (5xx), `timeout` (no answer
within `--timeout`: a hang), `connection_error` (reset or closed without an answer), `crash` (the hub
process died), `accepted_invalid` (2xx for an input the oracle knows is broken: a DICOM cut inside a
sequence or mid-element, a PNG without IEND, a TIFF cut inside its image data, a wrong X-Content-SHA256,
a deflated data set that inflates beyond the hub's upload limit, a batch without its closing boundary)
and `memory` (hub RSS above `--rss-limit-mb` while the mutant was in flight). After a timeout or a
crash the hub is restarted (a hung worker thread may spin forever). Findings are then grouped by path,
outcome and mutation operators, and a few of each group are replayed one at a time to capture the hub's
answer and the traceback from its log; those inputs are written to `--out` (default bench/out/fuzz/,
gitignored) as `<path>-<index>.bin` plus a `.json` with headers, operators and what the hub said.

The hub runs with `MEDCLOUD_MAX_UPLOAD_BYTES` = 64 MiB (the fuzzer never sends more than ~5 MiB of
legitimate data), so a deflated data set inflating beyond that must be refused. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import warnings
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
SRC = BENCH.parent / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

PATHS = ("single", "batch", "pydicom")
FINDINGS = ("server_error", "timeout", "connection_error", "crash", "accepted_invalid", "memory")
MIB = 1024 * 1024
PYDICOM_THRESHOLD = 4 * MIB  # the hub's default pack_below: uploads this big spill to disk and go to pydicom
HUB_MAX_UPLOAD = 64 * MIB
UNDEFINED = 0xFFFFFFFF
TS_IMPLICIT = "1.2.840.10008.1.2"
TS_EXPLICIT = "1.2.840.10008.1.2.1"
TS_BIG = "1.2.840.10008.1.2.2"
TS_DEFLATED = "1.2.840.10008.1.2.1.99"
TS_CHOICES = (
    TS_IMPLICIT, TS_EXPLICIT, TS_BIG, TS_DEFLATED,
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.5",
    "1.2.3.4", "", "1.2.840.10008.1.2.1.99.1", "9" * 64, "1.2.840.10008.1.2\x00\x00",
)  # fmt: skip
LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
ALL_VRS = (
    b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"OB", b"OD", b"OF",
    b"OL", b"OV", b"OW", b"PN", b"SH", b"SL", b"SQ", b"SS", b"ST", b"SV", b"TM", b"UC", b"UI", b"UL", b"UN",
    b"UR", b"US", b"UT", b"UV",
)  # fmt: skip
BAD_VRS = (b"ZZ", b"\x00\x00", b"sq", b"  ", b"\xff\xff", b"O\x00", b"QS")


# -- seeds -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Seed:
    name: str
    kind: str  # "dicom" | "png" | "jpeg" | "tiff"
    data: bytes
    data_end: int = 0  # images: where the last image data ends (a cut before it must be refused)


def _dicom_seeds(seed: int) -> list[Seed]:
    """pydicom's bundled test files, de-identified with a key derived from `seed` (deterministic)."""
    import pydicom.data

    from medcloud.deid.engine import Deidentifier
    from medcloud.deid.keys import SiteKey
    from medcloud.errors import MedcloudError

    deid = Deidentifier(SiteKey(hashlib.sha256(f"medcloud-fuzz-key-{seed}".encode()).digest()))
    out: list[Seed] = []
    root = Path(pydicom.data.DATA_ROOT, "test_files")
    for f in sorted(root.rglob("*")):
        if not f.is_file() or f.suffix in {".txt", ".json", ".dump", ".icc", ".gz"} or f.stat().st_size > MIB:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                outcome = deid.deidentify_bytes(f.read_bytes(), f.name)
        except (MedcloudError, Exception):  # noqa: S112 - a seed the de-identifier refuses is no seed
            continue
        if outcome.kind == "dicom" and outcome.data[128:132] == b"DICM" and walk(outcome.data) is not None:
            out.append(Seed(str(f.relative_to(root)), "dicom", outcome.data))
    return out


def _tiff_data_end(data: bytes) -> int:
    import tifffile

    with tifffile.TiffFile(io.BytesIO(data)) as tf:
        return max(int(o) + int(c) for p in tf.pages for o, c in zip(p.dataoffsets, p.databytecounts, strict=False))  # type: ignore[union-attr]


def _image_seeds() -> list[Seed]:
    """PNG, JPEG and TIFF files made here (no identifying metadata, small)."""
    import numpy as np
    import tifffile
    from PIL import Image, PngImagePlugin

    rng = np.random.default_rng(7)
    seeds: list[Seed] = []
    gray = (np.add.outer(np.arange(64), np.arange(48)) % 256).astype(np.uint8)
    rgb = rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)
    g16 = (np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 61).astype(np.uint16)

    def pil(img: Any, fmt: str, **kw: Any) -> bytes:
        buf = io.BytesIO()
        img.save(buf, fmt, **kw)
        return buf.getvalue()

    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "synthetic fuzz seed")
    seeds += [
        Seed("gray.png", "png", pil(Image.fromarray(gray), "PNG")),
        Seed("rgb.png", "png", pil(Image.fromarray(rgb), "PNG", pnginfo=info)),
        Seed("g16.png", "png", pil(Image.fromarray(g16), "PNG")),
        Seed("palette.png", "png", pil(Image.fromarray(rgb).convert("P"), "PNG")),
        Seed("rgb.jpg", "jpeg", pil(Image.fromarray(rgb), "JPEG", quality=80)),
        Seed("gray-progressive.jpg", "jpeg", pil(Image.fromarray(gray), "JPEG", progressive=True)),
    ]
    for name, make in (
        ("gray.tif", lambda b: tifffile.imwrite(b, gray)),
        ("rgb-tiled.tif", lambda b: tifffile.imwrite(b, np.zeros((64, 64, 3), np.uint8) + 9, tile=(32, 32))),
        (
            "rgb-planar.tif",
            lambda b: tifffile.imwrite(
                b, np.stack([gray, gray[::-1], gray[::-1, ::-1]]), photometric="rgb", planarconfig="separate"
            ),
        ),
        ("bigendian.tif", lambda b: tifffile.imwrite(b, g16, byteorder=">")),
        ("pil-rgb.tif", lambda b: Image.fromarray(rgb).save(b, "TIFF")),
    ):
        buf = io.BytesIO()
        make(buf)
        data = buf.getvalue()
        seeds.append(Seed(name, "tiff", data, _tiff_data_end(data)))
    return seeds


# -- a tolerant DICOM layout walker (for structure-aware mutations of valid seeds) -----------------
@dataclass(frozen=True)
class Elem:
    off: int  # header start
    tag: int
    vr: bytes | None
    hlen: int
    lfield: int  # offset of the length field
    lsize: int  # 2 or 4 bytes
    length: int
    end: int  # first byte after the element (after its delimiter when of undefined length)
    depth: int
    kind: str  # "el" | "item" | "idelim" | "sdelim" | "frag"


@dataclass
class Layout:
    meta_end: int
    ts: str
    explicit: bool
    little: bool
    deflated: bool
    elems: list[Elem]
    meta: list[Elem]
    complete: bool
    body_end: int  # start of pixel data / padding values (the interesting bytes lie before it)
    source: bytes = b""  # the bytes walked

    def top(self) -> list[Elem]:
        return [e for e in self.elems if e.depth == 0]

    def top_boundaries(self) -> set[int]:
        return {self.meta_end} | {e.end for e in self.top()}


class _Stop(Exception):
    pass


_SQ_TAGS: dict[int, bool] = {}


def _implicit_is_sq(tag: int) -> bool:
    if tag not in _SQ_TAGS:
        from pydicom.datadict import dictionary_VR

        try:
            _SQ_TAGS[tag] = dictionary_VR(tag) == "SQ"
        except KeyError:
            _SQ_TAGS[tag] = False
    return _SQ_TAGS[tag]


def walk(buf: bytes, max_depth: int = 64) -> Layout | None:
    """The element layout of a Part 10 file, as far as it parses; None without preamble or meta group."""
    n = len(buf)
    if n < 144 or buf[128:132] != b"DICM":
        return None
    meta: list[Elem] = []
    pos, ts = 132, ""
    while pos + 8 <= n:
        g, e = struct.unpack_from("<HH", buf, pos)
        if g != 2:
            break
        vr = buf[pos + 4 : pos + 6]
        if vr in LONG_VRS:
            if pos + 12 > n:
                return None
            length, hlen, lf, ls = struct.unpack_from("<I", buf, pos + 8)[0], 12, pos + 8, 4
        else:
            length, hlen, lf, ls = struct.unpack_from("<H", buf, pos + 6)[0], 8, pos + 6, 2
        end = pos + hlen + length
        if length == UNDEFINED or end > n:
            return None
        meta.append(Elem(pos, g << 16 | e, vr, hlen, lf, ls, length, end, 0, "el"))
        if e == 0x0010:
            ts = buf[pos + hlen : end].decode("latin-1").rstrip("\x00 ")
        pos = end
    if not meta:
        return None
    lay = Layout(pos, ts, ts != TS_IMPLICIT, ts != TS_BIG, ts == TS_DEFLATED, [], meta, False, n, buf)
    if lay.deflated:
        return lay
    end = "<" if lay.little else ">"
    hdr, u16, u32 = struct.Struct(end + "HH"), struct.Struct(end + "H"), struct.Struct(end + "I")

    def elements(pos: int, limit: int, depth: int) -> int:
        while pos < limit:
            if depth > max_depth or pos + 8 > limit:
                raise _Stop
            g, e = hdr.unpack_from(buf, pos)
            tag = g << 16 | e
            if g == 0xFFFE:
                if e == 0xE00D:  # item delimiter closes an undefined-length item
                    lay.elems.append(Elem(pos, tag, None, 8, pos + 4, 4, u32.unpack_from(buf, pos + 4)[0],
                                          pos + 8, depth, "idelim"))  # fmt: skip
                    return pos + 8
                raise _Stop
            vr: bytes | None = None
            if lay.explicit:
                vr = buf[pos + 4 : pos + 6]
                if vr in LONG_VRS:
                    if pos + 12 > limit:
                        raise _Stop
                    length, hlen, lf, ls = u32.unpack_from(buf, pos + 8)[0], 12, pos + 8, 4
                else:
                    length, hlen, lf, ls = u16.unpack_from(buf, pos + 6)[0], 8, pos + 6, 2
                is_sq = vr == b"SQ" or (vr == b"UN" and length == UNDEFINED)
            else:
                length, hlen, lf, ls = u32.unpack_from(buf, pos + 4)[0], 8, pos + 4, 4
                is_sq = length == UNDEFINED or _implicit_is_sq(tag)
            start = pos + hlen
            if tag in (0x7FE00010, 0xFFFCFFFC):
                lay.body_end = min(lay.body_end, start)
            if is_sq and tag != 0x7FE00010:
                stop = items(start, limit if length == UNDEFINED else start + length, depth + 1, length == UNDEFINED)
            elif length == UNDEFINED:  # encapsulated pixel data: fragments up to a sequence delimiter
                stop = fragments(start, limit, depth + 1)
            else:
                stop = start + length
                if stop > limit:
                    raise _Stop
            lay.elems.append(Elem(pos, tag, vr, hlen, lf, ls, length, stop, depth, "el"))
            pos = stop
        return pos

    def items(pos: int, limit: int, depth: int, undefined: bool) -> int:
        while pos < limit:
            if pos + 8 > limit:
                raise _Stop
            g, e = hdr.unpack_from(buf, pos)
            length = u32.unpack_from(buf, pos + 4)[0]
            if (g, e) == (0xFFFE, 0xE0DD):
                lay.elems.append(Elem(pos, 0xFFFEE0DD, None, 8, pos + 4, 4, length, pos + 8, depth, "sdelim"))
                return pos + 8
            if (g, e) != (0xFFFE, 0xE000):
                raise _Stop
            if length == UNDEFINED:
                stop = elements(pos + 8, limit, depth)
            else:
                stop = pos + 8 + length
                if stop > limit:
                    raise _Stop
                elements(pos + 8, stop, depth)
            lay.elems.append(Elem(pos, 0xFFFEE000, None, 8, pos + 4, 4, length, stop, depth, "item"))
            pos = stop
        if undefined:
            raise _Stop
        return pos

    def fragments(pos: int, limit: int, depth: int) -> int:
        while pos + 8 <= limit:
            g, e = hdr.unpack_from(buf, pos)
            length = u32.unpack_from(buf, pos + 4)[0]
            if (g, e) == (0xFFFE, 0xE0DD):
                lay.elems.append(Elem(pos, 0xFFFEE0DD, None, 8, pos + 4, 4, length, pos + 8, depth, "sdelim"))
                return pos + 8
            if (g, e) != (0xFFFE, 0xE000) or pos + 8 + length > limit:
                raise _Stop
            lay.elems.append(Elem(pos, 0xFFFEE000, None, 8, pos + 4, 4, length, pos + 8 + length, depth, "frag"))
            pos += 8 + length
        raise _Stop

    try:
        lay.complete = elements(lay.meta_end, n, 0) == n
    except (_Stop, struct.error):
        lay.complete = False
    lay.elems.sort(key=lambda el: el.off)
    return lay


# -- encoders --------------------------------------------------------------------------------------
def _enc(lay: Layout | None) -> tuple[str, bool]:
    if lay is None:
        return "<", True
    return ("<" if lay.little else ">"), lay.explicit


def element(
    tag: int, vr: bytes, value: bytes, endian: str = "<", explicit: bool = True, length: int | None = None
) -> bytes:
    """One encoded data element; `length` overrides the declared length (e.g. undefined)."""
    ln = len(value) if length is None else length
    g, e = tag >> 16, tag & 0xFFFF
    if not explicit:
        return struct.pack(endian + "HHI", g, e, ln) + value
    if vr in LONG_VRS:
        return struct.pack(endian + "HH", g, e) + vr + b"\x00\x00" + struct.pack(endian + "I", ln) + value
    return struct.pack(endian + "HH", g, e) + vr + struct.pack(endian + "H", ln & 0xFFFF) + value


def _item(endian: str, length: int) -> bytes:
    return struct.pack(endian + "HHI", 0xFFFE, 0xE000, length)


def _delim(endian: str, e: int) -> bytes:
    return struct.pack(endian + "HHI", 0xFFFE, e, 0)


def nested_sequence(depth: int, endian: str, explicit: bool, undefined: Callable[[int], bool]) -> bytes:
    """A ContentSequence nested `depth` levels deep; `undefined(level)` picks undefined lengths per level."""
    tag = 0x0040A730
    leaf = element(0x0040A160, b"UT", b"x ", endian, explicit)  # TextValue
    # Lengths from the inside out, pieces joined once (no quadratic copying at 10,000 levels).
    heads: list[bytes] = []
    tails: list[bytes] = []
    inner = len(leaf)
    for level in range(depth):
        und = undefined(level)
        item_len = UNDEFINED if und else inner
        item_size = 8 + inner + (8 if und else 0)
        sq_len = UNDEFINED if und else item_size
        sq_head = element(tag, b"SQ", b"", endian, explicit, length=sq_len)
        heads.append(sq_head + _item(endian, item_len))
        tails.append((_delim(endian, 0xE00D) + _delim(endian, 0xE0DD)) if und else b"")
        inner = len(sq_head) + item_size + (8 if und else 0)
    return b"".join(reversed(heads)) + leaf + b"".join(tails)


_BOMB_STREAMS: dict[int, bytes] = {}


def _zero_stream(size: int) -> bytes:
    """Raw deflate of `size` zero bytes, computed once per size (bombs are cheap to send, not to make)."""
    if size not in _BOMB_STREAMS:
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        chunk, parts, left = bytes(MIB), [], size
        while left:
            parts.append(c.compress(chunk[: min(MIB, left)]))
            left -= min(MIB, left)
        parts.append(c.flush())
        _BOMB_STREAMS[size] = b"".join(parts)
    return _BOMB_STREAMS[size]


def set_meta_ts(buf: bytes, lay: Layout, ts: str, fix_group_length: bool) -> bytes:
    """`buf` with (0002,0010) replaced by `ts` (even-padded), group length fixed or left stale."""
    value = ts.encode("latin-1")
    if len(value) % 2:
        value += b"\x00"
    pieces, delta = [], 0
    for el in lay.meta:
        if el.tag == 0x00020010:
            new = element(0x00020010, b"UI", value)
            delta = len(new) - (el.end - el.off)
            pieces.append(new)
        else:
            pieces.append(buf[el.off : el.end])
    meta = b"".join(pieces)
    gl = next((el for el in lay.meta if el.tag == 0x00020000 and el.length == 4), None)
    if gl is not None and fix_group_length:
        old = struct.unpack_from("<I", buf, gl.off + gl.hlen)[0]
        rel = gl.off - 132 + gl.hlen
        meta = meta[:rel] + struct.pack("<I", (old + delta) & 0xFFFFFFFF) + meta[rel + 4 :]
    return buf[:132] + meta + buf[lay.meta_end :]


# -- mutants ---------------------------------------------------------------------------------------
@dataclass
class FileMutant:
    seed: Seed
    data: bytes
    ops: list[dict[str, Any]] = field(default_factory=list)
    must_reject: bool = False
    why: str = ""

    def reject(self, why: str) -> None:
        self.must_reject, self.why = True, why


def _pos(rng: random.Random, m: FileMutant, lay: Layout | None) -> int:
    """A byte position, mostly in the interesting region (headers, not pixel values or padding)."""
    n = len(m.data)
    hi = lay.body_end if lay is not None and rng.random() < 0.85 else n
    return rng.randrange(0, max(1, min(hi, n)))


def _boundary(rng: random.Random, lay: Layout) -> tuple[int, bool]:
    """An element boundary (start or end of an element, item or delimiter) and whether it is top level."""
    tops = lay.top_boundaries()
    choices = sorted({e.off for e in lay.elems} | {e.end for e in lay.elems} | {lay.meta_end})
    b = rng.choice(choices)
    return b, b in tops


def op_bitflip(rng: random.Random, m: FileMutant, lay: Layout | None) -> None:
    buf = bytearray(m.data)
    flips = [(_pos(rng, m, lay), rng.randrange(8)) for _ in range(rng.choice((1, 1, 2, 4, 8)))]
    for p, b in flips:
        buf[p] ^= 1 << b
    m.data = bytes(buf)
    m.ops.append({"op": "bitflip", "at": flips})


def _interesting_bytes(rng: random.Random, k: int) -> bytes:
    pool = (b"\x00", b"\xff", b"\x7f", b"\x80", b"\xfe\xff\x00\xe0", b"\xfe\xff\xdd\xe0", b"\xff\xff\xff\xff")
    out = b"".join(rng.choice(pool) for _ in range(k)) if rng.random() < 0.5 else rng.randbytes(k)
    return out[: max(k, 1)]


def op_insert(rng: random.Random, m: FileMutant, lay: Layout | None) -> None:
    at = _boundary(rng, lay)[0] if lay is not None and rng.random() < 0.5 else _pos(rng, m, lay)
    blob = _interesting_bytes(rng, rng.choice((1, 2, 4, 8, 16, 64)))
    m.data = m.data[:at] + blob + m.data[at:]
    m.ops.append({"op": "insert", "at": at, "bytes": blob.hex()[:64]})


def op_delete(rng: random.Random, m: FileMutant, lay: Layout | None) -> None:
    at = _boundary(rng, lay)[0] if lay is not None and rng.random() < 0.5 else _pos(rng, m, lay)
    k = rng.choice((1, 2, 4, 8, 12, 64, 512))
    m.data = m.data[:at] + m.data[at + k :]
    m.ops.append({"op": "delete", "at": at, "n": k})


def op_truncate(rng: random.Random, m: FileMutant, lay: Layout | None) -> None:
    n = len(m.data)
    if n < 2:
        return
    cut = _pos(rng, m, lay) if rng.random() < 0.6 else rng.randrange(1, n)
    cut = max(1, cut)
    m.ops.append({"op": "truncate", "at": cut, "of": n})
    if m.seed.kind == "dicom" and lay is not None and lay.complete and not lay.deflated:
        tops = lay.top_boundaries()
        zero_tail = any(b < cut < b + 8 and not any(m.data[b:cut]) for b in tops)
        if cut not in tops and not zero_tail:
            m.reject("DICOM cut mid-element or inside a sequence")
    elif m.seed.kind in ("png", "jpeg") and m.data == m.seed.data:
        m.reject(f"{m.seed.kind} cut before its end marker")
    elif m.seed.kind == "tiff" and m.data == m.seed.data and cut < m.seed.data_end:
        m.reject("TIFF cut inside its image data")
    m.data = m.data[:cut]


def op_truncate_boundary(rng: random.Random, m: FileMutant, lay: Layout | None) -> None:
    if lay is None or not lay.elems:
        return op_truncate(rng, m, lay)
    tops = lay.top_boundaries()
    nested = sorted(({e.end for e in lay.elems if e.depth > 0} | {e.off for e in lay.elems if e.depth > 0}) - tops)
    inside = bool(nested) and rng.random() < 0.7
    cut = rng.choice(nested) if inside else rng.choice(sorted(tops - {len(m.data)}) or [lay.meta_end])
    m.ops.append({"op": "truncate_boundary", "at": cut, "nested": inside, "of": len(m.data)})
    if inside and lay.complete:
        m.reject("DICOM cut at an element boundary inside a sequence")
    m.data = m.data[:cut]


def _pick(rng: random.Random, lay: Layout, pred: Callable[[Elem], bool] = lambda e: True) -> Elem | None:
    cands = [e for e in lay.elems if pred(e)]
    return rng.choice(cands) if cands else None


def _write_len(m: FileMutant, lay: Layout, el: Elem, value: int) -> None:
    endian = "<" if lay.little else ">"
    fmt = endian + ("I" if el.lsize == 4 else "H")
    value &= 0xFFFFFFFF if el.lsize == 4 else 0xFFFF
    m.data = m.data[: el.lfield] + struct.pack(fmt, value) + m.data[el.lfield + el.lsize :]


def op_length(rng: random.Random, m: FileMutant, lay: Layout | None) -> None:
    if lay is None or not lay.elems:
        return op_bitflip(rng, m, lay)
    el = _pick(rng, lay)
    assert el is not None
    rest = len(m.data) - el.off
    L = el.length if el.length != UNDEFINED else 0
    value = rng.choice(
        (0, L - 1, L + 1, L + 2, L * 2, rest, rest + 1, UNDEFINED, 0xFFFFFFFE, 0x7FFFFFFF, 0x80000000,
         rng.getrandbits(32), L | 1, 8)
    )  # fmt: skip
    _write_len(m, lay, el, value)
    m.ops.append({"op": "length", "tag": f"{el.tag:08X}", "kind": el.kind, "at": el.lfield, "was": el.length,
                  "now": value & (0xFFFFFFFF if el.lsize == 4 else 0xFFFF)})  # fmt: skip


def op_huge_length(rng: random.Random, m: FileMutant, lay: Layout | None) -> None:
    if lay is None or not lay.elems:
        return op_bitflip(rng, m, lay)
    el = _pick(rng, lay, lambda e: e.lsize == 4) or _pick(rng, lay)
    assert el is not None
    value = rng.choice((0xFFFFFFF0, 0xFFFFFFFE, 0x7FFFFFFF, 0x40000000, len(m.data) * 64, 0x10000000))
    _write_len(m, lay, el, value)
    m.ops.append({"op": "huge_length", "tag": f"{el.tag:08X}", "kind": el.kind, "now": value & 0xFFFFFFFF})


def op_undefined(rng: random.Random, m: FileMutant, lay: Layout | None) -> None:
    """Undefined length where it does not belong, or a delimiter removed, duplicated or misplaced."""
    if lay is None or not lay.elems:
        return op_bitflip(rng, m, lay)
    endian = "<" if lay.little else ">"
    choice = rng.randrange(4)
    delims = [e for e in lay.elems if e.kind in ("idelim", "sdelim")]
    if choice == 0 or not delims:
        el = _pick(rng, lay, lambda e: e.lsize == 4 and e.length != UNDEFINED) or _pick(rng, lay)
        assert el is not None
        _write_len(m, lay, el, UNDEFINED)
        m.ops.append({"op": "undefined_length", "tag": f"{el.tag:08X}", "kind": el.kind})
    elif choice == 1:
        d = rng.choice(delims)
        m.data = m.data[: d.off] + m.data[d.end :]
        m.ops.append({"op": "drop_delimiter", "kind": d.kind, "at": d.off})
        if lay.complete:
            m.reject("a delimiter of an undefined-length sequence or item removed")
    elif choice == 2:
        d = rng.choice(delims)
        m.data = m.data[: d.end] + m.data[d.off : d.end] + m.data[d.end :]
        m.ops.append({"op": "dup_delimiter", "kind": d.kind, "at": d.off})
    else:
        at = rng.choice(sorted(lay.top_boundaries()))
        e = rng.choice((0xE00D, 0xE0DD, 0xE000))
        blob = struct.pack(endian + "HHI", 0xFFFE, e, rng.choice((0, 4, UNDEFINED)))
        m.data = m.data[:at] + blob + m.data[at:]
        m.ops.append({"op": "stray_delimiter", "elem": f"FFFE{e:04X}", "at": at})


def _insert_top(m: FileMutant, lay: Layout, tag: int, blob: bytes) -> int:
    """Insert `blob` at the top-level boundary that keeps tags ascending; returns the offset."""
    at = lay.meta_end
    for e in lay.top():
        if e.tag < tag and e.kind == "el":
            at = e.end
    m.data = m.data[:at] + blob + m.data[at:]
    return at


def op_deep_nesting(rng: random.Random, m: FileMutant, lay: Layout | None) -> None:
    if lay is None or lay.deflated:
        return op_bitflip(rng, m, lay)
    depth = rng.choice((20, 100, 500, 1000, 3000, 10000))
    style = rng.choice(("undefined", "defined", "mixed"))
    und: Callable[[int], bool] = {
        "undefined": lambda lv: True, "defined": lambda lv: False, "mixed": lambda lv: lv % 2 == 0
    }[style]  # fmt: skip
    endian, explicit = _enc(lay)
    blob = nested_sequence(depth, endian, explicit, und)
    at = _insert_top(m, lay, 0x0040A730, blob)
    m.ops.append({"op": "deep_nesting", "depth": depth, "lengths": style, "at": at, "bytes": len(blob)})


def op_vr_swap(rng: random.Random, m: FileMutant, lay: Layout | None) -> None:
    if lay is None or not lay.explicit or lay.deflated:
        return op_length(rng, m, lay)
    el = _pick(rng, lay, lambda e: e.kind == "el" and e.vr is not None)
    if el is None:
        return op_bitflip(rng, m, lay)
    vr = rng.choice(ALL_VRS) if rng.random() < 0.8 else rng.choice(BAD_VRS)
    m.data = m.data[: el.off + 4] + vr + m.data[el.off + 6 :]
    m.ops.append({"op": "vr_swap", "tag": f"{el.tag:08X}", "was": (el.vr or b"").decode("latin-1"),
                  "now": vr.decode("latin-1")})  # fmt: skip


def op_ts_swap(rng: random.Random, m: FileMutant, lay: Layout | None) -> None:
    if lay is None:
        return op_bitflip(rng, m, lay)
    ts = rng.choice(TS_CHOICES)
    fix = rng.random() < 0.7
    m.data = set_meta_ts(m.data, lay, ts, fix)
    m.ops.append({"op": "ts_swap", "was": lay.ts, "now": ts, "group_length_fixed": fix})


def op_deflate(rng: random.Random, m: FileMutant, lay: Layout | None) -> None:
    """Re-encode the data set deflated: valid, with a damaged stream, or as a bomb."""
    if lay is None or lay.deflated or not lay.explicit or not lay.little:
        return op_ts_swap(rng, m, lay)
    head = set_meta_ts(m.data, lay, TS_DEFLATED, True)
    lay2 = walk(head)
    if lay2 is None:
        return
    dataset = m.data[lay.meta_end :]
    variant = rng.choices(("valid", "damaged", "cut", "bomb"), weights=(4, 3, 2, 1))[0]
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    if variant == "bomb":
        size = rng.choice((256 * MIB, 768 * MIB))
        pad_head = element(0xFFFCFFFC, b"OB", b"", length=size)
        stream = c.compress(dataset + pad_head) + c.flush(zlib.Z_SYNC_FLUSH) + _zero_stream(size)
        m.ops.append({"op": "deflate_bomb", "inflated": len(dataset) + 12 + size})
        if len(dataset) + size > HUB_MAX_UPLOAD:
            m.reject("deflated data set inflates beyond the upload limit")
    else:
        stream = c.compress(dataset) + c.flush()
        if variant == "damaged":
            buf = bytearray(stream)
            for _ in range(rng.choice((1, 4))):
                buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
            stream = bytes(buf)
        elif variant == "cut":
            stream = stream[: rng.randrange(1, max(2, len(stream)))]
            m.reject("deflated stream cut short")
        m.ops.append({"op": "deflate", "variant": variant})
    m.data = head[: lay2.meta_end] + stream


def op_meta_group_length(rng: random.Random, m: FileMutant, lay: Layout | None) -> None:
    if lay is None:
        return op_bitflip(rng, m, lay)
    gl = next((el for el in lay.meta if el.tag == 0x00020000), None)
    if gl is None:
        return op_ts_swap(rng, m, lay)
    value = rng.choice((0, 3, 1, 0xFFFFFFFF, 0x7FFFFFFF, gl.length + 1))
    if rng.random() < 0.5:  # the group length's own length field
        m.data = m.data[: gl.lfield] + struct.pack("<H", value & 0xFFFF) + m.data[gl.lfield + 2 :]
        m.ops.append({"op": "meta_group_length", "field": "length", "now": value & 0xFFFF})
    else:
        m.data = m.data[: gl.off + gl.hlen] + struct.pack("<I", value) + m.data[gl.off + gl.hlen + 4 :]
        m.ops.append({"op": "meta_group_length", "field": "value", "now": value})


def op_charset(rng: random.Random, m: FileMutant, lay: Layout | None) -> None:
    if lay is None or lay.deflated:
        return op_bitflip(rng, m, lay)
    endian, explicit = _enc(lay)
    value = rng.choice(
        (b"ISO_IR 192", b"ISO 2022 IR 87\\ISO 2022 IR 159", b"\\\\\\", b"GARBAGE", b"ISO_IR 100\\" * 50,
         rng.randbytes(16).hex().upper().encode(), b"\xff\xfe", b"ISO_IR 13\\ISO 2022 IR 87 ")
    )  # fmt: skip
    if len(value) % 2:
        value += b" "
    old = next((e for e in lay.top() if e.tag == 0x00080005), None)
    blob = element(0x00080005, b"CS", value, endian, explicit)
    if old is not None:
        m.data = m.data[: old.off] + blob + m.data[old.end :]
    else:
        _insert_top(m, lay, 0x00080005, blob)
    m.ops.append({"op": "charset", "value": value.decode("latin-1")[:80]})


def op_dup_or_swap(rng: random.Random, m: FileMutant, lay: Layout | None) -> None:
    tops = [e for e in lay.top() if e.kind == "el"] if lay is not None else []
    if len(tops) < 2:
        return op_bitflip(rng, m, lay)
    i = rng.randrange(len(tops) - 1)
    a, b = tops[i], tops[i + 1]
    if rng.random() < 0.5:
        m.data = m.data[: a.end] + m.data[a.off : a.end] + m.data[a.end :]
        m.ops.append({"op": "dup_element", "tag": f"{a.tag:08X}"})
    else:
        m.data = m.data[: a.off] + m.data[b.off : b.end] + m.data[a.off : a.end] + m.data[b.end :]
        m.ops.append({"op": "swap_elements", "tags": [f"{a.tag:08X}", f"{b.tag:08X}"]})


def op_values(rng: random.Random, m: FileMutant, lay: Layout | None) -> None:
    """Extreme values in fields the hub indexes (UIDs, dates, numbers, sizes)."""
    if lay is None or lay.deflated:
        return op_bitflip(rng, m, lay)
    endian, explicit = _enc(lay)
    tag, vr, value = rng.choice(
        (
            (0x00080018, b"UI", rng.choice((b"", b"1." * 40, b"\xff\xfe\x00\x01", b"1.2.3.\x00"))),
            (0x00080020, b"DA", rng.choice((b"99999999", b"20241301", b"2024", b"00000000", b"\x00" * 8))),
            (0x00200011, b"IS", rng.choice((b"99999999999999999999", b"-1", b"1e9", b"NaN ", b""))),
            (0x00200013, b"IS", rng.choice((b"2147483648", b"  ", b"x"))),
            (0x00280008, b"IS", rng.choice((b"0", b"-5", b"999999999999"))),
            (0x00280010, b"US", struct.pack(endian + "H", rng.choice((0, 65535)))),
            (0x00280011, b"US", struct.pack(endian + "H", rng.choice((0, 65535)))),
            (0x00101010, b"AS", rng.choice((b"999Y", b"abcd", b""))),
            (0x0020000D, b"UI", rng.choice((b"", b"9" * 64, b"1.2.840.\x80\x81"))),
        )
    )
    if len(value) % 2:
        value += b"\x00" if vr == b"UI" else b" "
    old = next((e for e in lay.top() if e.tag == tag), None)
    blob = element(tag, vr, value, endian, explicit)
    if old is not None:
        m.data = m.data[: old.off] + blob + m.data[old.end :]
    else:
        _insert_top(m, lay, tag, blob)
    m.ops.append({"op": "value", "tag": f"{tag:08X}", "value": value.decode("latin-1")[:80]})


def op_un_flood(rng: random.Random, m: FileMutant, lay: Layout | None) -> None:
    """Thousands of distinct private tags of VR UN (tags unseen before, a cache keyed by tag grows)."""
    if lay is None or lay.deflated:
        return op_bitflip(rng, m, lay)
    endian, explicit = _enc(lay)
    k = rng.choice((1000, 5000, 20000))
    group = rng.randrange(0x0011, 0x7FDF, 2)
    base = rng.randrange(0x1000, 0xFF00 - k // 16)
    blob = b"".join(element(group << 16 | (base + i) % 0xFFFF, b"UN", b"ab", endian, explicit) for i in range(k))
    at = _insert_top(m, lay, group << 16 | base, blob)
    m.ops.append({"op": "un_flood", "tags": k, "group": f"{group:04X}", "at": at})


def op_splice(rng: random.Random, m: FileMutant, lay: Layout | None, donors: list[Seed]) -> None:
    donor = rng.choice(donors).data
    a = _pos(rng, m, lay)
    s = rng.randrange(0, max(1, len(donor) - 1))
    k = rng.choice((8, 64, 512, 4096))
    m.data = m.data[:a] + donor[s : s + k] + m.data[a + k :]
    m.ops.append({"op": "splice", "at": a, "donor_at": s, "n": k})


# image-specific operators
def _png_chunks(data: bytes) -> list[tuple[int, int, bytes]]:
    """(offset, length, type) of each PNG chunk, as far as they parse."""
    out, pos = [], 8
    while pos + 12 <= len(data):
        length = struct.unpack_from(">I", data, pos)[0]
        out.append((pos, length, data[pos + 4 : pos + 8]))
        if pos + 12 + length > len(data):
            break
        pos += 12 + length
    return out


def op_png(rng: random.Random, m: FileMutant) -> None:
    chunks = _png_chunks(m.data)
    if not chunks:
        return op_bitflip(rng, m, None)
    off, length, ctype = rng.choice(chunks)
    kind = rng.randrange(4)
    if kind == 0:
        value = rng.choice((0, length + 1, 0x7FFFFFFF, 0xFFFFFFFF, rng.getrandbits(31)))
        m.data = m.data[:off] + struct.pack(">I", value) + m.data[off + 4 :]
        m.ops.append({"op": "png_chunk_length", "chunk": ctype.decode("latin-1"), "now": value})
    elif kind == 1:
        w, h = rng.choice(((0, 0), (0xFFFFFFFF, 1), (1 << 30, 1 << 30), (65535, 65535)))
        m.data = m.data[:16] + struct.pack(">II", w, h) + m.data[24:]
        m.ops.append({"op": "png_ihdr_dims", "w": w, "h": h})
    elif kind == 2:
        iend = [c for c in chunks if c[2] == b"IEND"]
        if iend:
            m.data = m.data[: iend[0][0]]
            m.ops.append({"op": "png_drop_iend"})
            m.reject("PNG without IEND")
    else:
        blob = m.data[off : off + 12 + length]
        m.data = m.data[:off] + blob + m.data[off:]
        m.ops.append({"op": "png_dup_chunk", "chunk": ctype.decode("latin-1")})


def op_jpeg(rng: random.Random, m: FileMutant) -> None:
    segs, pos, d = [], 2, m.data
    while pos + 4 <= len(d) and d[pos] == 0xFF and d[pos + 1] not in (0xD9, 0xDA):
        segs.append((pos, d[pos + 1]))
        pos += 2 + struct.unpack_from(">H", d, pos + 2)[0]
    kind = rng.randrange(3)
    if kind == 0 and segs:
        off, marker = rng.choice(segs)
        value = rng.choice((0, 1, 2, 0xFFFF, rng.getrandbits(16)))
        m.data = d[: off + 2] + struct.pack(">H", value) + d[off + 4 :]
        m.ops.append({"op": "jpeg_segment_length", "marker": f"{marker:02X}", "now": value})
    elif kind == 1 and any(mk in (0xC0, 0xC2) for _, mk in segs):
        off = next(o for o, mk in segs if mk in (0xC0, 0xC2))
        h, w = rng.choice(((0, 0), (65535, 65535), (1, 65535)))
        m.data = d[: off + 5] + struct.pack(">HH", h, w) + d[off + 9 :]
        m.ops.append({"op": "jpeg_sof_dims", "h": h, "w": w})
    else:
        if m.data.endswith(b"\xff\xd9") and m.data == m.seed.data:
            m.reject("JPEG without end-of-image marker")
        m.data = m.data[:-2]
        m.ops.append({"op": "jpeg_drop_eoi"})


def _tiff_ifds(d: bytes) -> tuple[str, list[int]]:
    """Byte order and the offsets of the IFD chain (classic TIFF), stopping at a loop or the end."""
    if d[:4] not in (b"II*\x00", b"MM\x00*"):
        return "<", []
    e = "<" if d[:2] == b"II" else ">"
    offs: list[int] = []
    off = struct.unpack_from(e + "I", d, 4)[0]
    while 8 <= off < len(d) - 2 and off not in offs and len(offs) < 64:
        offs.append(off)
        n = struct.unpack_from(e + "H", d, off)[0]
        nxt = off + 2 + 12 * n
        if nxt + 4 > len(d):
            break
        off = struct.unpack_from(e + "I", d, nxt)[0]
    return e, offs


def op_tiff(rng: random.Random, m: FileMutant) -> None:
    e, ifds = _tiff_ifds(m.data)
    if not ifds:
        return op_bitflip(rng, m, None)
    d = m.data
    # A loop is a known hang (issue 10): rare, so each hit's restart does not eat the run.
    kind = 0 if rng.random() < 0.005 else rng.randrange(1, 4)
    if kind == 0:  # IFD chain loops back: onto itself or onto the first IFD
        last = ifds[-1]
        n = struct.unpack_from(e + "H", d, last)[0]
        target = rng.choice((last, ifds[0]))
        at = last + 2 + 12 * n
        m.data = d[:at] + struct.pack(e + "I", target) + d[at + 4 :]
        m.ops.append({"op": "tiff_ifd_loop", "ifd": last, "next": target, "pages": len(ifds)})
        return
    ifd = rng.choice(ifds)
    n = struct.unpack_from(e + "H", d, ifd)[0]
    if n == 0 or ifd + 2 + 12 * n > len(d):
        return op_bitflip(rng, m, None)
    ent = ifd + 2 + 12 * rng.randrange(n)
    tag = struct.unpack_from(e + "H", d, ent)[0]
    if kind == 1:
        count = rng.choice((0, 0xFFFFFFFF, 0x7FFFFFFF, 1 << 20))
        m.data = d[: ent + 4] + struct.pack(e + "I", count) + d[ent + 8 :]
        m.ops.append({"op": "tiff_count", "tag": tag, "now": count})
    elif kind == 2:
        value = rng.choice((0, len(d), len(d) + 1, 0xFFFFFFFF, 0x7FFFFFF0, ifd))
        m.data = d[: ent + 8] + struct.pack(e + "I", value) + d[ent + 12 :]
        m.ops.append({"op": "tiff_value", "tag": tag, "now": value})
    else:
        typ = rng.choice((0, 13, 16, 17, 18, 255, 2, 12))
        m.data = d[: ent + 2] + struct.pack(e + "H", typ) + d[ent + 4 :]
        m.ops.append({"op": "tiff_type", "tag": tag, "now": typ})


def op_format_confusion(rng: random.Random, m: FileMutant) -> None:
    magic = rng.choice((b"II*\x00", b"MM\x00*", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II+\x00"))
    if rng.random() < 0.5:
        m.data = magic + m.data[len(magic) :]
    else:
        m.data = (b"\x00" * 128 + b"DICM" + m.data[132:]) if len(m.data) > 132 else magic + m.data
    m.ops.append({"op": "format_confusion", "magic": magic.hex()})


DICOM_OPS: list[tuple[str, float]] = [
    ("bitflip", 14), ("insert", 6), ("delete", 6), ("truncate", 8), ("truncate_boundary", 10), ("length", 12),
    ("huge_length", 5), ("undefined", 8), ("deep_nesting", 4), ("vr_swap", 8), ("ts_swap", 5), ("deflate", 2),
    ("meta_group_length", 3), ("charset", 2), ("dup_or_swap", 3), ("values", 6), ("un_flood", 0.5),
    ("splice", 3),
]  # fmt: skip
IMAGE_OPS: list[tuple[str, float]] = [
    ("bitflip", 20), ("insert", 6), ("delete", 6), ("truncate", 10), ("specific", 30), ("splice", 4),
    ("format_confusion", 2),
]  # fmt: skip

_DICOM_FUNCS: dict[str, Callable[..., None]] = {
    "bitflip": op_bitflip, "insert": op_insert, "delete": op_delete, "truncate": op_truncate,
    "truncate_boundary": op_truncate_boundary, "length": op_length, "huge_length": op_huge_length,
    "undefined": op_undefined, "deep_nesting": op_deep_nesting, "vr_swap": op_vr_swap, "ts_swap": op_ts_swap,
    "deflate": op_deflate, "meta_group_length": op_meta_group_length, "charset": op_charset,
    "dup_or_swap": op_dup_or_swap, "values": op_values, "un_flood": op_un_flood,
}  # fmt: skip


def _weighted(rng: random.Random, table: list[tuple[str, float]]) -> str:
    return rng.choices([n for n, _ in table], weights=[w for _, w in table])[0]


def unique_sop_uid(data: bytes, lay: Layout, token: str) -> bytes:
    """`data` with SOP Instance UID (and the meta's copy) rewritten to a mutant's own, of the same length.

    `lay` is the layout of the file the UIDs come from; a UID that a mutation moved or changed is left.
    """
    digest = str(int(hashlib.sha256(token.encode()).hexdigest(), 16))
    for el in [*lay.meta, *lay.top()]:
        if el.tag in (0x00020003, 0x00080018) and 12 <= el.length < 128:
            old = lay_value = el.off + el.hlen
            old_uid = lay.source[lay_value : el.end]
            if data[old : el.end] != old_uid:
                continue
            keep = old_uid.rstrip(b"\x00 ")
            head = b"2.25." if len(keep) >= 24 else keep[: len(keep) // 2]
            tail = ("1" + digest * 3)[: len(keep) - len(head)].encode()
            new = (head + tail).ljust(len(old_uid), old_uid[len(keep) : len(keep) + 1] or b"\x00")
            data = data[:old] + new + data[el.end :]
    return data


def mutate_file(rng: random.Random, seed: Seed, donors: list[Seed], token: str, unique: bool = True) -> FileMutant:
    """One to three mutation operators applied to `seed`; `token` names the mutant (for its own UID)."""
    m = FileMutant(seed, seed.data)
    if seed.kind == "dicom" and unique:
        lay0 = walk(seed.data)
        if lay0 is not None:
            m.data = unique_sop_uid(seed.data, lay0, token)
            m.seed = Seed(seed.name, seed.kind, m.data)
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3))):
        lay = walk(m.data) if seed.kind == "dicom" else None
        if seed.kind == "dicom":
            name = _weighted(rng, DICOM_OPS)
            if name == "splice":
                op_splice(rng, m, lay, donors)
            else:
                _DICOM_FUNCS[name](rng, m, lay)
        else:
            name = _weighted(rng, IMAGE_OPS)
            if name == "specific":
                {"png": op_png, "jpeg": op_jpeg, "tiff": op_tiff}[seed.kind](rng, m)
            elif name == "splice":
                op_splice(rng, m, None, donors)
            elif name == "format_confusion":
                op_format_confusion(rng, m)
            else:
                _DICOM_FUNCS[name](rng, m, None)
        if m.must_reject and m.ops[-1]["op"] in ("truncate", "truncate_boundary"):
            break  # later operators could make the oracle's reason wrong
    if len(m.ops) > 1 and m.must_reject and m.ops[-1]["op"] not in ("truncate", "truncate_boundary", "png_drop_iend"):
        m.must_reject = False  # only trust the oracle when its operator came last or alone
    return m


def pad_for_pydicom(rng: random.Random, m: FileMutant, seed_meta_end: int) -> str:
    """Make `m` at least 4 MiB: a private OB element after the meta group, or trailing padding at the end."""
    lay = walk(m.seed.data)
    endian, explicit = _enc(lay)
    need = PYDICOM_THRESHOLD + rng.randrange(1, 64 * 1024) - len(m.data)
    need += need % 2
    if rng.random() < 0.5 and seed_meta_end <= len(m.data):
        creator = element(0x00090010, b"LO", b"MEDCLOUD FUZZ PAD", endian, explicit)
        pad = creator + element(0x00091000, b"OB", bytes(max(need - len(creator) - 12, 2)), endian, explicit)
        m.data = m.data[:seed_meta_end] + pad + m.data[seed_meta_end:]
        return "leading"
    m.data += element(0xFFFCFFFC, b"OB", bytes(max(need - 12, 2)), endian, explicit)
    return "trailing"


# -- requests --------------------------------------------------------------------------------------
@dataclass
class Request:
    mid: str  # "<path>:<index>"
    route: str
    body: bytes
    headers: dict[str, str | bytes]
    chunked: bool
    seeds: list[str]
    ops: list[dict[str, Any]]
    must_reject: bool = False  # the whole request must not succeed
    reject_parts: dict[int, str] = field(default_factory=dict)  # batch parts that must fail, and why
    why: str = ""


class Corpus:
    """Seeds and the deterministic mutant factory: a mutant is a function of (seed, path, index)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.dicom = _dicom_seeds(seed)
        self.images = _image_seeds()
        self.all = self.dicom + self.images
        self.small_dicom = [s for s in self.dicom if len(s.data) <= 256 * 1024]
        self.meta_end = {s.name: walk(s.data).meta_end for s in self.dicom}  # type: ignore[union-attr]

    def mutant(self, path: str, index: int) -> Request:
        rng = random.Random(f"medcloud-fuzz/{self.seed}/{path}/{index}")
        mid = f"{path}:{index}"
        return {"single": self._single, "batch": self._batch, "pydicom": self._pydicom}[path](rng, mid)

    def _single(self, rng: random.Random, mid: str) -> Request:
        seed = rng.choice(self.dicom) if rng.random() < 0.7 else rng.choice(self.images)
        m = mutate_file(rng, seed, self.all, mid)
        return self._single_request(rng, mid, m)

    def _single_request(self, rng: random.Random, mid: str, m: FileMutant) -> Request:
        headers: dict[str, str | bytes] = {}
        r = rng.random()
        ops = list(m.ops)
        must, why = m.must_reject, m.why
        if r < 0.1:
            headers["X-Content-SHA256"] = hashlib.sha256(m.data).hexdigest()
        elif r < 0.13:
            headers["X-Content-SHA256"] = hashlib.sha256(m.data + b"x").hexdigest()
            ops.append({"op": "wrong_sha256"})
            must, why = True, "X-Content-SHA256 does not match the body"
        elif r < 0.15:
            headers["X-Content-SHA256"] = rng.choice(("z" * 64, "abc", "0" * 63 + "g"))
            ops.append({"op": "malformed_sha256"})
        if rng.random() < 0.2:
            name = rng.choice(("../../etc/passwd", "a" * 4000, "x\\..\\y.dcm", "%00.dcm", "名前.dcm", "a b"))
            headers["X-Medcloud-Filename"] = name.encode("utf-8")
        chunked = rng.random() < 0.15
        return Request(mid, "/api/v1/ingest", m.data, headers, chunked, [m.seed.name], ops, must, {}, why)

    def _pydicom(self, rng: random.Random, mid: str) -> Request:
        seed = rng.choice(self.dicom)
        m = mutate_file(rng, seed, self.all, mid, unique=False)
        # Big mutants keep the seed's UID (an accepted one is then a 409, not 4 MiB more on disk), except
        # those the oracle judges (a broken file that is accepted must show as such) and a few others.
        if m.must_reject or rng.random() < 0.05:
            m.data = unique_sop_uid(m.data, walk(seed.data), mid)  # type: ignore[arg-type]
        placement = pad_for_pydicom(rng, m, self.meta_end[seed.name])
        m.ops.append({"op": "pad_4mib", "placement": placement, "size": len(m.data)})
        if placement == "trailing":
            m.must_reject = False  # padding after a cut changes what was cut
        if rng.random() < 0.15:
            parts = [(m.data, m.must_reject, m.why)]
            return self._encode_batch(rng, mid, parts, m.ops, [seed.name], structural=False)
        return self._single_request(rng, mid, m)

    def _batch(self, rng: random.Random, mid: str) -> Request:
        parts: list[tuple[bytes, bool, str]] = []
        ops: list[dict[str, Any]] = []
        names: list[str] = []
        for k in range(rng.choice((1, 2, 2, 3, 4, 6))):
            pool = self.small_dicom if rng.random() < 0.7 else self.images
            seed = rng.choice(pool)
            names.append(seed.name)
            if rng.random() < 0.5:
                m = mutate_file(rng, seed, self.all, f"{mid}/{k}")
                parts.append((m.data, m.must_reject, m.why))
                ops.append({"part": k, "ops": m.ops})
            else:
                lay = walk(seed.data) if seed.kind == "dicom" else None
                data = unique_sop_uid(seed.data, lay, f"{mid}/{k}") if lay is not None else seed.data
                parts.append((data, False, ""))
        return self._encode_batch(rng, mid, parts, ops, names, structural=rng.random() < 0.6)

    def _encode_batch(
        self, rng: random.Random, mid: str, parts: list[tuple[bytes, bool, str]], ops: list[dict[str, Any]],
        names: list[str], structural: bool,
    ) -> Request:  # fmt: skip
        boundary = "fuzz-" + rng.randbytes(12).hex()
        heads: list[bytes] = []
        reject: dict[int, str] = {i: why for i, (_, must, why) in enumerate(parts) if must}
        for i, (data, _, _) in enumerate(parts):
            sha = hashlib.sha256(data).hexdigest()
            heads.append(
                f"Content-Type: application/octet-stream\r\nX-Content-SHA256: {sha}\r\n"
                f"X-Medcloud-Filename: part{i}.bin\r\n".encode()
            )
        datas = [d for d, _, _ in parts]
        ctype = f'multipart/related; type="application/octet-stream"; boundary={boundary}'
        closing = f"--{boundary}--\r\n".encode()
        preamble = b""
        must, why = False, ""
        if structural:
            kind = rng.choice(
                ("no_close", "no_close", "bad_header", "bad_sha", "dup_part", "boundary", "preamble", "lookalike",
                 "empty", "too_many", "content_type", "part_cut")
            )  # fmt: skip
            sop: dict[str, Any] = {"op": f"multipart_{kind}"}
            if kind == "no_close":
                closing = rng.choice((b"", f"--{boundary}".encode(), f"--{boundary}-".encode(), b"\r\n"))
                sop["tail"] = closing.decode()
                reject[len(datas) - 1] = "batch without its closing boundary (the last part may be cut)"
            elif kind == "bad_header":
                i = rng.randrange(len(heads))
                bad = rng.choice(
                    (b"no colon here\r\n", b"X-Big: " + b"a" * 20000 + b"\r\n", b"\xff\xfe: \x80\r\n",
                     b"Content-Type: text/plain\r\nContent-Type: x\r\n", b": empty-name\r\n")
                )  # fmt: skip
                heads[i] = bad + heads[i] if rng.random() < 0.5 else heads[i] + bad
                sop.update(part=i, header=bad[:40].decode("latin-1"))
            elif kind == "bad_sha":
                i = rng.randrange(len(heads))
                sha = hashlib.sha256(datas[i] + b"!").hexdigest() if rng.random() < 0.6 else "nothex"
                heads[i] = heads[i].replace(hashlib.sha256(datas[i]).hexdigest().encode(), sha.encode())
                sop.update(part=i, sha=sha)
                if sha != "nothex":
                    reject[i] = "part's X-Content-SHA256 does not match"
            elif kind == "dup_part":
                i = rng.randrange(len(datas))
                datas.insert(i, datas[i])
                heads.insert(i, heads[i])
                reject = {(j + 1 if j >= i else j): w for j, w in reject.items()}
                sop["part"] = i
            elif kind == "boundary":
                variant = rng.randrange(4)
                if variant == 0:
                    ctype = f'multipart/related; boundary="{boundary}"'
                elif variant == 1:
                    ctype = "multipart/related"
                    must, why = True, "no boundary parameter"
                elif variant == 2:
                    ctype = f"multipart/related; boundary={boundary}x"
                    must, why = True, "Content-Type's boundary never appears in the body"
                else:
                    ctype = f"multipart/related; boundary={boundary}; boundary=other"
                sop["variant"] = variant
            elif kind == "preamble":
                preamble = rng.choice((b"garbage preamble\r\n", b"\r\n\r\n", rng.randbytes(100) + b"\r\n"))
                closing += rng.choice((b"", b"epilogue", rng.randbytes(50)))
            elif kind == "lookalike":
                i = rng.randrange(len(datas))
                datas[i] = datas[i] + f"\r\n--{boundary}x".encode()
                heads[i] = heads[i].replace(hashlib.sha256(parts[i][0]).hexdigest().encode(),
                                            hashlib.sha256(datas[i]).hexdigest().encode())  # fmt: skip
                sop["part"] = i
            elif kind == "empty":
                datas, heads, reject = [], [], {}
                must, why = True, "a batch without parts"
            elif kind == "too_many":
                datas = [b"x"] * 1001
                heads = [b"Content-Type: application/octet-stream\r\n"] * 1001
                reject = {}
                must, why = True, "more parts than the hub's limit (1000)"
            elif kind == "content_type":
                ctype = rng.choice(("text/plain", f"multipart/form-data; boundary={boundary}", "application/json"))
                sop["content_type"] = ctype
            elif kind == "part_cut":
                i = rng.randrange(len(datas))
                cut = rng.randrange(0, max(1, len(datas[i])))
                datas[i] = datas[i][:cut]
                sop.update(part=i, at=cut)
                reject[i] = "part shorter than its X-Content-SHA256 says"
            ops = [*ops, sop]
        body = (
            preamble
            + b"".join(
                f"--{boundary}\r\n".encode() + h + b"\r\n" + d + b"\r\n" for h, d in zip(heads, datas, strict=True)
            )
            + closing
        )
        chunked = rng.random() < 0.3
        return Request(mid, "/api/v1/ingest/batch", body, {"Content-Type": ctype}, chunked, names, ops, must, reject,
                       why)  # fmt: skip


# -- the hub ---------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    for k in [k for k in env if k.startswith("MEDCLOUD_")]:
        env.pop(k)
    env.update(extra)
    return env


def _rss_bytes(pid: int) -> int:
    """Resident set of `pid` and its children (Linux /proc), 0 once gone."""
    total = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except (OSError, ValueError):
            continue
        todo += [int(c) for c in children]
    return total


def _cpu_seconds(pid: int) -> float:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Hub:
    """A real `medcloud hub serve` on 127.0.0.1 with a site token; restartable in place."""

    def __init__(self, root: Path, workers: int = 1) -> None:
        self.root = root
        self.data = root / "hub"
        self.log = root / "hub.log"
        self.port = _free_port()
        self.workers = workers
        self.proc: subprocess.Popen[bytes] | None = None
        self.env = _env({"MEDCLOUD_MAX_UPLOAD_BYTES": str(HUB_MAX_UPLOAD)})
        self.cpu_before = 0.0  # CPU of earlier incarnations
        self.restarts = 0
        cmd = [sys.executable, "-m", "medcloud.cli", "hub", "token", "create", "--data", str(self.data),
               "--role", "site", "--site", "fuzz", "--project", "P1"]  # fmt: skip
        out = subprocess.run(cmd, env=self.env, capture_output=True, check=True, timeout=120)
        self.token = out.stdout.decode().strip()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self) -> None:
        import httpx

        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "medcloud.cli", "hub", "serve", "--data", str(self.data), "--host",
                 "127.0.0.1", "--port", str(self.port), "--workers", str(self.workers)],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hub exited with {self.proc.returncode}; log {self.log}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"hub did not answer within 60 s; log {self.log}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None:
            return
        self.cpu_before += _cpu_seconds(self.proc.pid)
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)  # a hung worker thread ignores SIGTERM's grace
            self.proc.wait(30)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.restarts += 1
        self.start()

    def cpu(self) -> float:
        return self.cpu_before + (_cpu_seconds(self.proc.pid) if self.proc is not None else 0.0)


# -- running ---------------------------------------------------------------------------------------
@dataclass
class Outcome:
    mid: str
    outcome: str
    status: int | None
    detail: str
    seconds: float


def classify(req: Request, status: int | None, body: bytes, error: str | None) -> tuple[str, str]:
    """(outcome, detail) of one answer; findings are the outcomes in FINDINGS."""
    if error is not None:
        return error, ""
    assert status is not None
    text = body[:400].decode("utf-8", "replace")
    if status >= 500:
        return "server_error", text
    if status >= 400:
        return "4xx", text
    if req.must_reject:
        return "accepted_invalid", f"{req.why}; hub said {status}: {text[:200]}"
    if req.reject_parts:
        try:
            items = {int(it["index"]): it for it in json.loads(body)["items"]}
        except (ValueError, KeyError, TypeError):
            return "2xx", text
        bad = [(i, w) for i, w in req.reject_parts.items() if items.get(i, {}).get("status") in ("stored", "duplicate")]
        if bad:
            return "accepted_invalid", "; ".join(f"part {i} {items[i]['status']}: {w}" for i, w in bad)
    return "2xx", ""


class Supervisor:
    """Lets requests through, and pauses them all while the hub restarts after a hang or a crash."""

    def __init__(self, hub: Hub | None, on_start: Callable[[], None] | None = None) -> None:
        self.hub = hub
        self.on_start = on_start
        self.cv = threading.Condition()
        self.active = 0
        self.paused = False
        self.generation = 0

    @contextlib.contextmanager
    def request(self) -> Iterator[int]:
        with self.cv:
            while self.paused:
                self.cv.wait()
            self.active += 1
            gen = self.generation
        try:
            yield gen
        finally:
            with self.cv:
                self.active -= 1
                self.cv.notify_all()

    def restart(self, gen: int, only_if_busy: bool = False) -> None:
        """Restart the hub once all requests are out; with `only_if_busy`, only if it burns CPU while idle
        (a worker thread stuck in a loop), not when a timed-out request was just slow or starved."""
        if self.hub is None:
            return
        with self.cv:
            if gen != self.generation or self.paused:
                while self.paused:
                    self.cv.wait()
                return
            self.paused = True
            while self.active:
                self.cv.wait()
        try:
            if only_if_busy and self.hub.alive():
                before = self.hub.cpu()
                time.sleep(1.0)
                if self.hub.cpu() - before < 0.3:
                    return
            self.hub.restart()
            if self.on_start is not None:
                self.on_start()
        finally:
            with self.cv:
                self.generation += 1
                self.paused = False
                self.cv.notify_all()


def send(client: Any, base: str, req: Request, timeout: float) -> tuple[int | None, bytes, str | None]:
    """(status, body, error) where error is 'timeout' or 'connection_error'."""
    import httpx

    content: Any = req.body
    if req.chunked:
        body = req.body

        def chunks() -> Iterator[bytes]:
            for i in range(0, len(body), 256 * 1024):
                yield body[i : i + 256 * 1024]

        content = chunks()
    try:
        r = client.post(base + req.route, content=content, headers=req.headers, timeout=timeout)
        return r.status_code, r.content, None
    except httpx.TimeoutException:
        return None, b"", "timeout"
    except httpx.LocalProtocolError:  # the client refused to send it: a harness problem, not the hub's
        return None, b"", "client_error"
    except httpx.TransportError:
        return None, b"", "connection_error"


@dataclass
class Config:
    count: int = 30000
    seed: int = 1
    paths: tuple[str, ...] = PATHS
    workers: int = 2
    timeout: float = 20.0
    rss_limit_mb: float = 1024.0
    out: Path = BENCH / "out" / "fuzz"
    hub_workers: int = 1
    confirm_max: int = 60
    url: str | None = None  # an already running target (tests); no hub is started then
    warm_up: bool = True  # one big DICOM alone after each (re)start, before concurrent requests
    max_seconds: float | None = None  # stop sending new mutants after this long (then summarize as usual)
    seed_check: bool = True  # send every unmutated seed once first (a baseline, and stored originals)
    token: str = ""
    progress: bool = True
    weights: dict[str, float] = field(default_factory=lambda: {"single": 0.4, "batch": 0.3, "pydicom": 0.3})


def plan(cfg: Config) -> list[tuple[str, int]]:
    """(path, index) in an interleaved order, `cfg.count` in all, split by `cfg.weights`."""
    total_w = sum(cfg.weights[p] for p in cfg.paths)
    per = {p: int(cfg.count * cfg.weights[p] / total_w) for p in cfg.paths}
    per[cfg.paths[0]] += cfg.count - sum(per.values())
    order: list[tuple[str, int]] = []
    idx = dict.fromkeys(cfg.paths, 0)
    while len(order) < cfg.count:
        for p in cfg.paths:
            if idx[p] < per[p]:
                order.append((p, idx[p]))
                idx[p] += 1
    return order


def run(cfg: Config, corpus: Corpus | None = None) -> dict[str, Any]:
    """Fuzz the target; returns the JSON summary."""
    import httpx

    t0, c0 = time.perf_counter(), time.process_time()
    corpus = corpus or Corpus(cfg.seed)
    t_seeds = time.perf_counter() - t0
    tmp = Path(tempfile.mkdtemp(prefix="medcloud-fuzz-"))
    hub: Hub | None = None
    base, token = cfg.url or "", cfg.token
    if cfg.url is None:
        hub = Hub(tmp, cfg.hub_workers)
        hub.start()
        base, token = hub.url, hub.token
    headers = {"Authorization": f"Bearer {token}"}

    def warm_up() -> None:
        """One >= 4 MiB DICOM alone: the hub imports pydicom lazily, and concurrent first imports race
        (a finding of its own, see --no-warm-up); warming keeps that one defect from masking others."""
        if not cfg.warm_up or not corpus.dicom:
            return
        m = FileMutant(corpus.dicom[0], corpus.dicom[0].data)
        pad_for_pydicom(random.Random(0), m, corpus.meta_end[m.seed.name])
        with httpx.Client(headers=headers) as client:
            send(client, base, Request("warm-up", "/api/v1/ingest", m.data, {}, False, [], []), 60)

    warm_up()
    sup = Supervisor(hub, warm_up)
    results: dict[str, Outcome] = {}
    statuses: dict[str, Counter[str]] = defaultdict(Counter)
    lock = threading.Lock()
    in_flight: set[str] = set()
    rss = {"peak": 0, "baseline": 0, "over": set()}  # type: dict[str, Any]
    stop = threading.Event()

    def sample() -> None:
        # Blame the requests in flight while the RSS climbs to a new high above the limit, not every one
        # that happens to run while the allocator keeps freed memory (RSS stays high long after a bomb).
        high, high_pid = 0, None
        while not stop.is_set():
            pid = hub.pid if hub is not None else None
            if pid:
                now = _rss_bytes(pid)
                if pid != high_pid:
                    high, high_pid = 0, pid
                with lock:
                    rss["peak"] = max(rss["peak"], now)
                    if now > cfg.rss_limit_mb * MIB and now > high + 32 * MIB:
                        rss["over"] |= in_flight
                high = max(high, now)
            stop.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    if hub is not None and hub.pid:
        rss["baseline"] = _rss_bytes(hub.pid)

    # The unmutated seeds once, so stored originals make later mutants meet the catalog's conflict paths.
    seed_check: Counter[str] = Counter()
    seed_refusals: Counter[str] = Counter()
    with httpx.Client(headers=headers) as client:
        for s in corpus.all if cfg.seed_check else []:
            st, body, err = send(client, base, Request("seed", "/api/v1/ingest", s.data, {}, False, [s.name], []),
                              cfg.timeout)  # fmt: skip
            seed_check[err or f"{s.kind}:{(st or 0) // 100}xx"] += 1
            if st and st >= 400:
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    seed_refusals[f"{st} {json.loads(body)['detail'][:50]}"] += 1

    todo = iter(plan(cfg))
    done, retries = [0], [0]
    t_fuzz = time.perf_counter()
    halt = threading.Event()  # SIGTERM/SIGINT or --max-minutes: finish what is in flight, then report

    def on_signal(signum: int, frame: object) -> None:
        halt.set()

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, on_signal)

    def worker() -> None:
        client = httpx.Client(headers=headers)
        seen_gen = 0
        try:
            while True:
                if cfg.max_seconds is not None and time.perf_counter() - t_fuzz > cfg.max_seconds:
                    halt.set()
                with lock:
                    nxt = None if halt.is_set() else next(todo, None)
                if nxt is None:
                    return
                req = corpus.mutant(*nxt)
                with sup.request() as gen:
                    if gen != seen_gen:  # the hub restarted: its old keep-alive connections are dead
                        client.close()
                        client = httpx.Client(headers=headers)
                        seen_gen = gen
                    with lock:
                        in_flight.add(req.mid)
                    t = time.perf_counter()
                    st, body, err = send(client, base, req, cfg.timeout)
                    if err == "connection_error" and (hub is None or hub.alive()):
                        # A keep-alive connection the server closed (uvicorn does after a 500) fails the next
                        # request sent on it; once more on a fresh connection tells that from a real reset.
                        client.close()
                        client = httpx.Client(headers=headers)
                        with lock:
                            retries[0] += 1
                        t = time.perf_counter()
                        st, body, err = send(client, base, req, cfg.timeout)
                    secs = time.perf_counter() - t
                    with lock:
                        in_flight.discard(req.mid)
                if err == "connection_error" and hub is not None and not hub.alive():
                    err = "crash"
                outcome, detail = classify(req, st, body, err)
                with lock:
                    results[req.mid] = Outcome(req.mid, outcome, st, detail, secs)
                    statuses[nxt[0]][str(st) if st else outcome] += 1
                    done[0] += 1
                    if cfg.progress and done[0] % 1000 == 0:
                        rate = done[0] / (time.perf_counter() - t_fuzz)
                        print(f"fuzz: {done[0]}/{cfg.count} ({rate:.0f}/s), peak RSS {rss['peak'] / MIB:.0f} MiB",
                              file=sys.stderr, flush=True)  # fmt: skip
                if st is not None and st >= 500:
                    client.close()  # the hub may close this connection after a 500
                    client = httpx.Client(headers=headers)
                if err in ("timeout", "crash", "connection_error"):
                    if err == "connection_error":
                        client.close()
                        client = httpx.Client(headers=headers)
                    if err != "connection_error" or (hub is not None and not hub.alive()):
                        sup.restart(gen, only_if_busy=err == "timeout")
        finally:
            client.close()

    threads = [threading.Thread(target=worker) for _ in range(cfg.workers)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        for t in threads:
            t.join(0.5)  # short joins, so a signal reaches the handler while the workers run
    fuzz_wall = time.perf_counter() - t_fuzz
    with lock:
        for mid in rss["over"]:
            if mid in results and results[mid].outcome not in FINDINGS:
                results[mid].outcome = "memory"
                results[mid].detail = f"hub RSS over {cfg.rss_limit_mb:.0f} MiB while in flight"

    summary = summarize(cfg, corpus, results, statuses)
    summary["finding_classes"] = confirm(cfg, corpus, results, hub, base, headers, sup)
    stop.set()
    sampler.join()
    summary["connection_retries"] = retries[0]
    summary["seed_check"] = {**seed_check, "refusals": dict(seed_refusals.most_common(8))}
    summary["seeds"] = {"dicom": len(corpus.dicom), "image": len(corpus.images), "prepare_s": round(t_seeds, 1)}
    summary["hub"] = {
        "peak_rss_mib": round(rss["peak"] / MIB, 1),
        "baseline_rss_mib": round(rss["baseline"] / MIB, 1),
        "rss_limit_mib": cfg.rss_limit_mb,
        "restarts": hub.restarts if hub else 0,
        "cpu_s": round(hub.cpu(), 1) if hub else None,
        "max_upload_bytes": HUB_MAX_UPLOAD,
    }
    summary["wall_s"] = round(time.perf_counter() - t0, 1)
    summary["fuzz_wall_s"] = round(fuzz_wall, 1)
    summary["mutants_per_s"] = round(len(results) / fuzz_wall, 1) if fuzz_wall else None
    summary["client_cpu_s"] = round(time.process_time() - c0, 1)
    if hub is not None:
        hub.stop()
        with contextlib.suppress(OSError):
            cfg.out.mkdir(parents=True, exist_ok=True)
            shutil.copy(hub.log, cfg.out / "hub.log")
    shutil.rmtree(tmp, ignore_errors=True)
    return summary


def summarize(
    cfg: Config, corpus: Corpus, results: dict[str, Outcome], statuses: dict[str, Counter[str]]
) -> dict[str, Any]:
    per_path: dict[str, Counter[str]] = defaultdict(Counter)
    for o in results.values():
        per_path[o.mid.split(":")[0]][o.outcome] += 1
    findings = [o for o in results.values() if o.outcome in FINDINGS]
    secs: dict[str, list[float]] = defaultdict(list)
    for o in results.values():
        if o.outcome in ("2xx", "4xx"):
            secs[o.mid.split(":")[0]].append(o.seconds)
    latency = {
        p: {"median_s": round(sorted(v)[len(v) // 2], 3), "p99_s": round(sorted(v)[int(len(v) * 0.99)], 3),
            "max_s": round(max(v), 3)}
        for p, v in sorted(secs.items())
    }  # fmt: skip
    slow = sorted(results.values(), key=lambda o: -o.seconds)[:5]
    return {
        "request_seconds": latency,
        "slowest": [[o.mid, round(o.seconds, 2), o.outcome] for o in slow],
        "seed": cfg.seed,
        "count": len(results),
        "count_asked": cfg.count,
        "workers": cfg.workers,
        "timeout_s": cfg.timeout,
        "outcomes": {p: dict(c) for p, c in sorted(per_path.items())},
        "totals": dict(sum(per_path.values(), Counter())),
        "status_codes": {p: dict(c) for p, c in sorted(statuses.items())},
        "warm_up": cfg.warm_up,
        "findings_total": len(findings),
        "findings": {k: sorted(o.mid for o in findings if o.outcome == k) for k in FINDINGS},
    }


def _op_signature(req: Request) -> str:
    names: list[str] = []
    for op in req.ops:
        if "ops" in op:
            names += [o["op"] for o in op["ops"]]
        elif op.get("op") != "pad_4mib":
            names.append(op["op"])
    return "+".join(sorted(set(names))) or "none"


# The operator that most likely made a mutant fail, most suspicious first: findings are grouped by it.
_KEY_OPS = (
    "deep_nesting", "deflate_bomb", "tiff_ifd_loop", "un_flood", "deflate", "meta_group_length", "ts_swap",
    "multipart_no_close", "multipart_too_many", "multipart_part_cut", "multipart_bad_sha", "truncate_boundary",
    "truncate", "drop_delimiter", "dup_delimiter", "stray_delimiter", "undefined_length", "huge_length", "length",
    "vr_swap", "charset", "value", "png_ihdr_dims", "png_chunk_length", "jpeg_sof_dims", "jpeg_segment_length",
    "tiff_count", "tiff_value", "tiff_type", "wrong_sha256",
)  # fmt: skip


def _key_op(req: Request) -> str:
    names = set(_op_signature(req).split("+"))
    return next((k for k in _KEY_OPS if k in names), _op_signature(req))


def _traceback(text: str) -> tuple[str, str]:
    """(excerpt, signature) of the last traceback in a log excerpt; the signature is the exception line
    and the innermost medcloud frame, which names a finding class."""
    at = text.rfind("Traceback (most recent call last)")
    if at < 0:
        return "", ""
    lines = text[at:].splitlines()
    end = next((i for i, ln in enumerate(lines[1:], 1) if ln and not ln[0].isspace()), len(lines) - 1)
    exc_line = lines[end] if end < len(lines) else ""
    frames = [ln.strip() for ln in lines[:end] if ln.strip().startswith("File ") and "/medcloud/" in ln]
    where = frames[-1].split("/medcloud/", 1)[1].replace('"', "") if frames else ""
    block = lines[: end + 1]
    excerpt = "\n".join([*block[:2], "  ...", *block[-10:]]) if len(block) > 14 else "\n".join(block)
    return excerpt, f"{exc_line[:160]} @ medcloud/{where}" if where else exc_line[:160]


def confirm(
    cfg: Config, corpus: Corpus, results: dict[str, Outcome], hub: Hub | None, base: str,
    headers: dict[str, str], sup: Supervisor,
) -> list[dict[str, Any]]:  # fmt: skip
    """Group findings, replay a few of each group alone, and write their inputs and the hub's words."""
    groups: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    reqs: dict[str, Request] = {}
    for o in sorted(results.values(), key=lambda o: (o.mid.split(":")[0], int(o.mid.split(":")[1]))):
        if o.outcome in FINDINGS:
            req = corpus.mutant(*_split(o.mid))
            reqs[o.mid] = req
            key = o.detail.split(";")[0].split(": ", 1)[-1][:80] if o.outcome == "accepted_invalid" else _key_op(req)
            groups[(o.mid.split(":")[0], o.outcome, key)].append(o.mid)
    classes: list[dict[str, Any]] = []
    budget = cfg.confirm_max
    if groups:
        cfg.out.mkdir(parents=True, exist_ok=True)
    # Server faults first (replays are capped), then the biggest groups.
    order = {k: i for i, k in enumerate(("crash", "server_error", "timeout", "connection_error", "memory"))}
    for (path, outcome, sig), mids in sorted(groups.items(), key=lambda kv: (order.get(kv[0][1], 9), -len(kv[1]))):
        entry: dict[str, Any] = {
            "path": path, "outcome": outcome, "key": sig, "count": len(mids), "examples": mids[:10],
            "repro": f"python bench/fuzz_ingest.py --seed {cfg.seed} --replay {mids[0]}",
        }  # fmt: skip
        replays = []
        for mid in mids[: 2 if budget > 0 else 0]:
            budget -= 1
            req = reqs[mid]
            replays.append(replay_one(cfg, req, results[mid], hub, base, headers, sup))
        if replays:
            entry["replayed"] = replays
            entry["reproduced"] = any(r["reproduced"] for r in replays)
        classes.append(entry)
        if budget <= 0 and not replays:
            entry["note"] = "not replayed (--confirm-max reached); --replay reproduces it"
    return classes


def _split(mid: str) -> tuple[str, int]:
    p, i = mid.split(":")
    return p, int(i)


def replay_one(
    cfg: Config, req: Request, first: Outcome, hub: Hub | None, base: str, headers: dict[str, str], sup: Supervisor,
) -> dict[str, Any]:  # fmt: skip
    """Send `req` alone, with the hub's log around it; write the input and what came back."""
    import httpx

    if hub is not None and not hub.alive():
        sup.restart(sup.generation)
    off = hub.log.stat().st_size if hub is not None else 0
    before = _rss_bytes(hub.pid) if hub is not None and hub.pid else 0
    peak, done = [before], threading.Event()

    def sample() -> None:
        while not done.is_set():
            if hub is not None and hub.pid:
                peak[0] = max(peak[0], _rss_bytes(hub.pid))
            done.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    with httpx.Client(headers=headers) as client, sup.request() as gen:
        st, body, err = send(client, base, req, cfg.timeout)
    done.set()
    sampler.join()
    if err == "connection_error" and hub is not None and not hub.alive():
        err = "crash"
    outcome, detail = classify(req, st, body, err)
    if outcome not in FINDINGS and peak[0] > cfg.rss_limit_mb * MIB and peak[0] - before > 128 * MIB:
        # Grown by this request: after an earlier bomb the allocator may hold the RSS above the limit.
        outcome, detail = "memory", f"hub RSS grew from {before / MIB:.0f} to {peak[0] / MIB:.0f} MiB"
    log = ""
    if hub is not None:
        time.sleep(0.3)
        with hub.log.open("rb") as fh:
            fh.seek(off)
            log = fh.read(64 * MIB).decode("utf-8", "replace")
        if err is not None:
            sup.restart(gen)
    stem = req.mid.replace(":", "-")
    info = {
        "mid": req.mid, "route": req.route, "chunked": req.chunked, "seeds": req.seeds, "ops": req.ops,
        "headers": {k: (v.decode("latin-1") if isinstance(v, bytes) else v) for k, v in req.headers.items()},
        "body_bytes": len(req.body), "sha256": hashlib.sha256(req.body).hexdigest(),
        "first": {"outcome": first.outcome, "status": first.status, "detail": first.detail[:400],
                  "seconds": round(first.seconds, 2)},
        "replay": {"outcome": outcome, "status": st, "detail": detail[:400]},
        "hub_traceback": _traceback(log)[0],
        "signature": _traceback(log)[1],
        "hub_peak_rss_mib": round(peak[0] / MIB, 1),
    }  # fmt: skip
    with contextlib.suppress(OSError):
        (cfg.out / f"{stem}.bin").write_bytes(req.body)
        (cfg.out / f"{stem}.json").write_text(json.dumps(info, indent=2, default=str))
    return {
        "mid": req.mid, "reproduced": outcome == first.outcome, "outcome": outcome, "status": st,
        "hub_said": detail[:300], "signature": info["signature"], "traceback": info["hub_traceback"],
        "hub_peak_rss_mib": info["hub_peak_rss_mib"], "file": str(cfg.out / f"{stem}.bin"),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--count", type=int, default=30000, help="mutants in all, split over --paths")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--paths", default=",".join(PATHS))
    ap.add_argument("--workers", type=int, default=2, help="concurrent client connections")
    ap.add_argument("--timeout", type=float, default=20.0, help="seconds per request before it counts as a hang")
    ap.add_argument("--rss-limit-mb", type=float, default=1024.0)
    ap.add_argument("--hub-workers", type=int, default=1)
    ap.add_argument("--confirm-max", type=int, default=60, help="findings replayed alone for the hub's traceback")
    ap.add_argument("--out", type=Path, default=BENCH / "out" / "fuzz")
    ap.add_argument("--replay", help="PATH:INDEX: send that one mutant to a fresh hub and show what happens")
    ap.add_argument("--max-minutes", type=float, help="stop sending new mutants after this long, then report")
    ap.add_argument("--no-warm-up", action="store_true", help="no lone big DICOM after each hub (re)start")
    ap.add_argument("--write", help="PATH:INDEX: only write that mutant's bytes to --out")
    a = ap.parse_args(argv)
    paths = tuple(p for p in a.paths.split(",") if p)
    if not set(paths) <= set(PATHS):
        ap.error(f"--paths takes {', '.join(PATHS)}")
    cfg = Config(a.count, a.seed, paths, a.workers, a.timeout, a.rss_limit_mb, a.out, a.hub_workers, a.confirm_max)
    cfg.warm_up = not a.no_warm_up
    cfg.max_seconds = a.max_minutes * 60 if a.max_minutes else None
    if a.write or a.replay:
        corpus = Corpus(a.seed)
        req = corpus.mutant(*_split(a.write or a.replay))
        cfg.out.mkdir(parents=True, exist_ok=True)
        stem = cfg.out / req.mid.replace(":", "-")
        stem.with_suffix(".bin").write_bytes(req.body)
        info: dict[str, Any] = {"mid": req.mid, "route": req.route, "ops": req.ops, "seeds": req.seeds,
                                "file": str(stem.with_suffix(".bin")), "bytes": len(req.body)}  # fmt: skip
        if a.replay:
            tmp = Path(tempfile.mkdtemp(prefix="medcloud-fuzz-"))
            hub = Hub(tmp, a.hub_workers)
            try:
                hub.start()
                info["replay"] = replay_one(cfg, req, Outcome(req.mid, "?", None, "", 0.0), hub, hub.url,
                                            {"Authorization": f"Bearer {hub.token}"}, Supervisor(hub))  # fmt: skip
            finally:
                hub.stop()
                shutil.rmtree(tmp, ignore_errors=True)
        print(json.dumps(info, indent=2, default=str))
        return 0
    print(json.dumps(run(cfg), indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
