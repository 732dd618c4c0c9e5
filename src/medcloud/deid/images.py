"""Metadata scrubbing for JPEG, PNG and TIFF (Aperio SVS included) without re-encoding pixels.

Each format is edited at its own container level: JPEG segments, PNG chunks, TIFF directory entries.
Pixel bytes are never decoded, so a scrubbed photo or slide is bit-identical where it matters.
"""

from __future__ import annotations

import hashlib
import re
import struct

from medcloud.errors import InvalidInput


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def strip_metadata(
    data: bytes, kind: str, *, filename: str, retain_device_identity: bool = False, allow_burned_in: bool = False
) -> tuple[bytes, str | None]:
    """Scrubbed bytes and a quarantine reason (None when the file may be forwarded)."""
    try:
        if kind == "jpeg":
            return strip_jpeg(data), None
        if kind == "png":
            return strip_png(data), None
        return strip_tiff(data, retain_device_identity=retain_device_identity), None
    except (struct.error, IndexError, ValueError) as exc:
        raise InvalidInput(f"{filename}: malformed {kind.upper()} ({exc})") from None


# ---- JPEG -------------------------------------------------------------------------------------
def _keep_jpeg_segment(marker: int, payload: bytes) -> bool:
    if marker == 0xFE:  # COM
        return False
    if 0xE0 <= marker <= 0xEF:
        # APP0 JFIF is needed by decoders, APP2 ICC for colour, APP14 Adobe for the colour transform.
        # Everything else (EXIF, XMP, IPTC/Photoshop, vendor blocks) can name people, places, devices.
        if marker == 0xE0:
            return payload.startswith((b"JFIF\x00", b"JFXX\x00"))
        if marker == 0xE2:
            return payload.startswith(b"ICC_PROFILE\x00")
        if marker == 0xEE:
            return payload.startswith(b"Adobe")
        return False
    return True


def strip_jpeg(data: bytes) -> bytes:
    if data[:2] != b"\xff\xd8":
        raise ValueError("no SOI marker")
    out = [b"\xff\xd8"]
    pos, n = 2, len(data)
    scan = False
    while pos < n:
        if data[pos] != 0xFF:
            raise ValueError(f"expected a marker at byte {pos}")
        while pos < n and data[pos] == 0xFF:
            pos += 1
        if pos >= n:
            raise ValueError("truncated marker")
        marker = data[pos]
        pos += 1
        if marker == 0xD9:  # EOI
            out.append(b"\xff\xd9")
            break
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            out.append(bytes((0xFF, marker)))
            continue
        if pos + 2 > n:
            raise ValueError("truncated segment length")
        length = struct.unpack_from(">H", data, pos)[0]
        if length < 2 or pos + length > n:
            raise ValueError(f"segment at byte {pos} overruns the file")
        payload = data[pos + 2 : pos + length]
        if marker == 0xDA:  # SOS: the entropy-coded rest is pixels, copied verbatim
            out.append(data[pos - 2 :])
            scan = True
            break
        if _keep_jpeg_segment(marker, payload):
            out.append(data[pos - 2 : pos + length])
        pos += length
    if not scan:  # segments only (or EOI first): what is left after scrubbing is no image
        raise ValueError("no image scan (SOS) in the file")
    return b"".join(out)


# ---- PNG --------------------------------------------------------------------------------------
_PNG_DROP = {b"tEXt", b"zTXt", b"iTXt", b"tIME", b"eXIf"}


def strip_png(data: bytes) -> bytes:
    sig = data[:8]
    out = [sig]
    pos, n = 8, len(data)
    while pos < n:
        if pos + 12 > n:
            raise ValueError("truncated chunk")
        length = struct.unpack_from(">I", data, pos)[0]
        ctype = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > n:
            raise ValueError(f"chunk {ctype!r} overruns the file")
        if ctype not in _PNG_DROP:
            out.append(data[pos:end])
        pos = end
        if ctype == b"IEND":
            break
    return b"".join(out)


# ---- TIFF / SVS -------------------------------------------------------------------------------
_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8, 17: 8, 18: 8}
T_DESCRIPTION = 270
# Tags that can hold names, dates, places, hosts or free text; sub-IFD pointers are removed with
# the directory they point to.
_TIFF_DROP = {
    269,
    270,
    285,
    306,
    315,
    316,
    700,
    33432,
    33723,
    34377,
    37724,
    42016,
    50341,
    40091,
    40092,
    40093,
    40094,
    40095,
    37510,
    36867,
    36868,
}
_SUB_IFDS = {34665, 34853, 40965}  # Exif, GPS, Interoperability
_STRIP_OFFSETS, _STRIP_COUNTS, _TILE_OFFSETS, _TILE_COUNTS = 273, 279, 324, 325
# Aperio ImageDescription keys that describe the scan, not the patient or operator.
_SVS_KEEP = {
    "AppMag",
    "MPP",
    "StripeWidth",
    "Exposure Time",
    "Exposure Scale",
    "Gamma",
    "Focus Offset",
    "LineCameraSkew",
    "LineAreaXOffset",
    "LineAreaYOffset",
    "Left",
    "Top",
    "OriginalWidth",
    "OriginalHeight",
    "Originalheight",
    "Filtered",
    "Parmset",
    "ICC Profile",
    "Compression Quality",
}
_SVS_DEVICE = {"ScanScope ID"}


class _Tiff:
    def __init__(self, buf: bytearray) -> None:
        self.buf = buf
        order = bytes(buf[:2])
        if order not in (b"II", b"MM"):
            raise ValueError("not a TIFF byte order mark")
        self.p = "<" if order == b"II" else ">"
        magic = struct.unpack_from(self.p + "H", buf, 2)[0]
        self.big = magic == 43
        if magic not in (42, 43):
            raise ValueError("not a TIFF magic number")
        self.entry = 20 if self.big else 12
        self.cnt_fmt = self.p + ("Q" if self.big else "H")
        self.off_fmt = self.p + ("Q" if self.big else "I")
        self.inline = 8 if self.big else 4

    def first_ifd_ptr(self) -> int:
        return 8 if self.big else 4

    def read_off(self, pos: int) -> int:
        return int(struct.unpack_from(self.off_fmt, self.buf, pos)[0])

    def entries(self, ifd: int) -> tuple[int, list[tuple[int, int, int, int, int]]]:
        """(count, [(entry position, tag, type, count, value position)])."""
        count = int(struct.unpack_from(self.cnt_fmt, self.buf, ifd)[0])
        start = ifd + struct.calcsize(self.cnt_fmt)
        if count > 10_000 or start + count * self.entry > len(self.buf):
            raise ValueError(f"TIFF directory at {ifd} overruns the file")
        out = []
        for i in range(count):
            epos = start + i * self.entry
            tag, typ = struct.unpack_from(self.p + "HH", self.buf, epos)
            n = int(struct.unpack_from(self.p + ("Q" if self.big else "I"), self.buf, epos + 4)[0])
            size = _TYPE_SIZES.get(typ, 1) * n
            vpos = epos + (12 if self.big else 8)
            if size > self.inline:
                vpos = self.read_off(vpos)
                if vpos + size > len(self.buf):
                    raise ValueError(f"TIFF tag {tag} value overruns the file")
            out.append((epos, tag, typ, n, vpos))
        return count, out

    def next_ptr_pos(self, ifd: int, count: int) -> int:
        return ifd + struct.calcsize(self.cnt_fmt) + count * self.entry

    def values(self, typ: int, n: int, vpos: int) -> list[int]:
        fmt = {3: "H", 4: "I", 16: "Q", 13: "I", 18: "Q"}.get(typ)
        if fmt is None:
            return []
        return list(struct.unpack_from(self.p + fmt * n, self.buf, vpos))

    def zero(self, pos: int, size: int) -> None:
        self.buf[pos : pos + size] = b"\x00" * size

    def zero_value(self, typ: int, n: int, vpos: int) -> None:
        self.zero(vpos, _TYPE_SIZES.get(typ, 1) * n)

    def zero_ifd(self, ifd: int) -> None:
        """Erase a whole sub-directory: its entries' out-of-line values and the directory itself."""
        count, ents = self.entries(ifd)
        for _, _, typ, n, vpos in ents:
            self.zero_value(typ, n, vpos)
        self.zero(ifd, self.next_ptr_pos(ifd, count) + struct.calcsize(self.off_fmt) - ifd)

    def rewrite_entries(self, ifd: int, keep: list[bytes], count: int) -> None:
        """Compact the directory to `keep` entries; the next-IFD pointer moves up behind them."""
        nxt = self.read_off(self.next_ptr_pos(ifd, count))
        old_size = self.next_ptr_pos(ifd, count) + struct.calcsize(self.off_fmt) - ifd
        body = struct.pack(self.cnt_fmt, len(keep)) + b"".join(keep) + struct.pack(self.off_fmt, nxt)
        self.buf[ifd : ifd + old_size] = body + b"\x00" * (old_size - len(body))


# The head's structural lines: the library line and the image geometry ("2220x2967 [0,100 ...] JPEG/RGB Q=30",
# "label 387x463"). Anything else a scanner or a person wrote there is free text.
_SVS_HEAD_LINE = re.compile(
    r"^(?:Aperio [A-Za-z ]*v?[\d.]+|(?:label |macro |thumbnail )?\d+x\d+(?:\s*\[\d+,\s*\d+\s+\d+x\d+\])?"
    r"(?:\s*\(\d+x\d+\))?(?:\s*(?:->\s*\d+x\d+|[A-Z0-9]+(?:/[A-Z0-9]+)*|[QR]=\d+))*)\s*$"
)


def _clean_svs_head(head: str) -> str:
    from medcloud.deid import freetext

    out = []
    for line in re.split(r"(?<=\n)", head):
        body = line.rstrip("\r\n")
        if not body.strip() or _SVS_HEAD_LINE.match(body.strip()):
            out.append(line)
            continue
        got = freetext.clean(body)
        if got.text is not None:
            out.append(got.text + line[len(body) :])
    return "".join(out)


def clean_svs_description(text: str, retain_device_identity: bool = False) -> str:
    """Keep the Aperio header and the scan parameters; drop date, time, user, file name, IDs."""
    head, *fields = text.split("|")
    kept = [_clean_svs_head(head)]
    for f in fields:
        key = f.split("=", 1)[0].strip()
        if key in _SVS_KEEP or (retain_device_identity and key in _SVS_DEVICE):
            kept.append(f)
    return "|".join(kept)


def strip_tiff(data: bytes, *, retain_device_identity: bool = False) -> bytes:
    t = _Tiff(bytearray(data))
    buf = t.buf
    ifds: list[int] = []
    ptr_pos = t.first_ifd_ptr()
    seen: set[int] = set()
    spans: list[tuple[int, int]] = []  # [start, end) of each directory read so far
    is_svs = False
    while True:
        ifd = t.read_off(ptr_pos)
        if ifd == 0:
            break
        if ifd in seen or ifd >= len(buf):
            raise ValueError("TIFF directory chain loops or points outside the file")
        seen.add(ifd)
        count, ents = t.entries(ifd)
        end = t.next_ptr_pos(ifd, count) + struct.calcsize(t.off_fmt)
        if ifd < 2 * t.first_ifd_ptr() or any(ifd < b and a < end for a, b in spans):
            # Rewriting one directory would rewrite the other (or the header) under the reader's feet.
            raise ValueError(f"TIFF directory at {ifd} overlaps the header or another directory")
        spans.append((ifd, end))
        desc = ""
        for _, tag, typ, n, vpos in ents:
            if tag == T_DESCRIPTION and typ == 2:
                desc = bytes(buf[vpos : vpos + n]).split(b"\x00", 1)[0].decode("latin_1")
        if not ifds and desc.startswith("Aperio"):
            is_svs = True
        # Aperio label and macro images photograph the slide label: names, barcodes, dates.
        lines = desc.splitlines()
        if is_svs and ifds and len(lines) > 1 and lines[1].split(" ")[0] in ("label", "macro"):
            for _, tag, typ, n, vpos in ents:
                if tag in (_STRIP_OFFSETS, _TILE_OFFSETS):
                    counts_tag = _STRIP_COUNTS if tag == _STRIP_OFFSETS else _TILE_COUNTS
                    sizes = next((t.values(ty, nn, vp) for _, tg, ty, nn, vp in ents if tg == counts_tag), [])
                    for off, size in zip(t.values(typ, n, vpos), sizes, strict=False):
                        t.zero(off, size)
            nxt = t.read_off(t.next_ptr_pos(ifd, count))
            for _, _, typ, n, vpos in ents:
                if _TYPE_SIZES.get(typ, 1) * n > t.inline:
                    t.zero_value(typ, n, vpos)
            t.zero(ifd, t.next_ptr_pos(ifd, count) + struct.calcsize(t.off_fmt) - ifd)
            buf[ptr_pos : ptr_pos + struct.calcsize(t.off_fmt)] = struct.pack(t.off_fmt, nxt)
            continue
        keep: list[bytes] = []
        for epos, tag, typ, n, vpos in ents:
            entry = bytes(buf[epos : epos + t.entry])
            if tag == T_DESCRIPTION and is_svs and typ == 2:
                keep.append(_rewrite_description(t, epos, n, vpos, desc, retain_device_identity))
                continue
            if tag in _SUB_IFDS:
                for sub in t.values(typ, n, vpos):
                    if 0 < sub < len(buf):
                        t.zero_ifd(sub)
                continue
            if tag in _TIFF_DROP or (tag >= 65000):
                if _TYPE_SIZES.get(typ, 1) * n > t.inline:
                    t.zero_value(typ, n, vpos)
                continue
            keep.append(entry)
        if len(keep) != count:
            t.rewrite_entries(ifd, keep, count)
            count = len(keep)
        ifds.append(ifd)
        ptr_pos = t.next_ptr_pos(ifd, count)
    try:
        _check_chain(buf)
    except (ValueError, struct.error) as exc:
        # A dropped value or sub-directory that lay over the header or a directory was zeroed with it.
        raise ValueError(f"TIFF metadata overlaps its own structure ({exc})") from None
    return bytes(buf)


def _check_chain(buf: bytearray) -> None:
    """Walk the header and directory chain of a scrubbed TIFF as a reader would; raise if it is broken."""
    t = _Tiff(buf)
    ptr_pos, seen = t.first_ifd_ptr(), set()
    while ifd := t.read_off(ptr_pos):
        if ifd in seen or ifd >= len(buf):
            raise ValueError("directory chain loops or points outside the file")
        seen.add(ifd)
        count, _ = t.entries(ifd)
        ptr_pos = t.next_ptr_pos(ifd, count)


def _rewrite_description(t: _Tiff, epos: int, n: int, vpos: int, desc: str, retain_device: bool) -> bytes:
    """Clean an SVS description in place (it only shrinks) and return the updated entry."""
    new = clean_svs_description(desc, retain_device).encode("latin_1") + b"\x00"
    if len(new) > n:  # cannot happen (we only drop fields) but never write past the old value
        new = new[: n - 1] + b"\x00"
    if n > t.inline and len(new) <= t.inline:
        # Readers place short values inline; keep it long enough to stay where the offset points.
        new = new.ljust(t.inline + 1, b"\x00")
    if n > t.inline:
        t.buf[vpos : vpos + n] = new + b"\x00" * (n - len(new))
    count_fmt = t.p + ("Q" if t.big else "I")
    entry = bytearray(t.buf[epos : epos + t.entry])
    struct.pack_into(count_fmt, entry, 4, len(new))
    if n <= t.inline:
        vstart = 12 if t.big else 8
        entry[vstart : vstart + t.inline] = new.ljust(t.inline, b"\x00")
    return bytes(entry)
