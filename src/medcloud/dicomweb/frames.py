"""Frames of stored instances (WADO-RS `.../frames/{list}`): native pixel data sliced per frame,
compressed frames as stored or decoded, and whole instances re-encoded as Explicit VR Little Endian."""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO

import pydicom

from medcloud.dicomweb.json import NATIVE_SYNTAXES
from medcloud.dicomweb.media import MediaRange, NotAcceptable, Offer, negotiate
from medcloud.errors import InvalidInput, NotFound

__all__ = [
    "EXPLICIT_LE",
    "FRAME_MEDIA_TYPES",
    "FramePlan",
    "NotTranscodable",
    "check_decodable",
    "decoded_frames",
    "encapsulated_frames",
    "explicit_le_file",
    "native_frames",
    "parse_frame_list",
    "plan_frames",
    "read_frames",
]

EXPLICIT_LE = "1.2.840.10008.1.2.1"
_BIG_ENDIAN = "1.2.840.10008.1.2.2"
MAX_FRAMES_PER_REQUEST = 10_000


class NotTranscodable(NotAcceptable):
    """Pixel data that cannot be decoded here (no decoder for its syntax, or damaged)."""


def parse_frame_list(text: str) -> list[int]:
    """`1,3,5` to [1, 3, 5]; frame numbers start at 1 (InvalidInput otherwise)."""
    numbers: list[int] = []
    for item in text.split(","):
        item = item.strip()
        if not item.isdigit() or int(item) < 1:
            raise InvalidInput(f"frame numbers are integers from 1, comma separated; not {item[:20]!r}")
        numbers.append(int(item))
    if len(numbers) > MAX_FRAMES_PER_REQUEST:
        raise InvalidInput(f"at most {MAX_FRAMES_PER_REQUEST} frames per request")
    return numbers


def native_frames(fh: BinaryIO, transfer_syntax: str, numbers: list[int]) -> list[bytes]:
    """The requested frames of a native (uncompressed) file, little endian; NotFound past the last frame."""
    if transfer_syntax not in NATIVE_SYNTAXES:
        raise InvalidInput("frames of compressed pixel data are not served yet")  # callers check first
    ds = pydicom.dcmread(fh, force=True)
    if "PixelData" not in ds:
        raise NotFound("this instance has no pixel data")
    rows, columns = int(ds.Rows), int(ds.Columns)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    bits = int(ds.get("BitsAllocated", 8) or 8)
    count = int(ds.get("NumberOfFrames", 1) or 1)
    if bits % 8:
        raise InvalidInput(f"frames of {bits}-bit pixel data are not served yet")
    size = rows * columns * samples * bits // 8
    pixels: bytes = ds.PixelData
    out: list[bytes] = []
    for n in numbers:
        if n > count:
            raise NotFound(f"frame {n} does not exist (the instance has {count})")
        frame = pixels[(n - 1) * size : n * size]
        if len(frame) != size:
            raise NotFound(f"frame {n} is cut short in the stored file")
        if transfer_syntax == _BIG_ENDIAN and bits > 8:
            import numpy as np

            frame = np.frombuffer(frame, dtype=f">u{bits // 8}").astype(f"<u{bits // 8}").tobytes()
        out.append(frame)
    return out


def encapsulated_frames(fh: BinaryIO, numbers: list[int]) -> list[bytes]:
    """The requested frames of a compressed file, as stored (no transcoding); NotFound past the last."""
    from pydicom.encaps import generate_frames

    ds = pydicom.dcmread(fh, force=True)
    if "PixelData" not in ds:
        raise NotFound("this instance has no pixel data")
    count = int(ds.get("NumberOfFrames", 1) or 1)
    wanted = set(numbers)
    for n in numbers:
        if n > count:
            raise NotFound(f"frame {n} does not exist (the instance has {count})")
    found: dict[int, bytes] = {}
    for index, frame in enumerate(generate_frames(ds.PixelData, number_of_frames=count), start=1):
        if index in wanted:
            found[index] = frame
        if index >= max(wanted):
            break
    return [found[n] for n in numbers]


def decoded_frames(fh: BinaryIO, numbers: list[int]) -> list[bytes]:
    """The requested frames of a compressed file, decoded to native little-endian bytes (pixel-interleaved).

    Colour frames stored as YBR (JPEG baseline) come out as RGB, as a decoder delivers them.
    """
    from pydicom import Dataset
    from pydicom.pixels.utils import pixel_array

    from medcloud.dicomweb.codecs import ensure_plugins

    ensure_plugins()
    head = pydicom.dcmread(fh, force=True, stop_before_pixels=True)
    count = int(head.get("NumberOfFrames", 1) or 1)
    out: list[bytes] = []
    for n in numbers:
        if n > count:
            raise NotFound(f"frame {n} does not exist (the instance has {count})")
        fh.seek(0)
        try:
            arr = pixel_array(fh, ds_out=Dataset(), index=n - 1)
        except (ValueError, NotImplementedError, RuntimeError, OSError) as exc:
            raise NotTranscodable(f"frame {n} cannot be decoded: {str(exc)[:200]}") from None
        out.append(arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes())
    return out


def explicit_le_file(fh: BinaryIO) -> bytes:
    """A stored Part 10 file re-encoded as Explicit VR Little Endian, pixel data decoded if compressed.

    The SOP Instance UID stays: the instance is the same, only its encoding changes.
    """
    import io

    from medcloud.dicomweb.codecs import ensure_plugins

    ensure_plugins()
    ds = pydicom.dcmread(fh, force=True)
    ts = str(ds.file_meta.get("TransferSyntaxUID", EXPLICIT_LE))
    try:
        if "PixelData" in ds and ts not in NATIVE_SYNTAXES:
            ds.decompress(generate_instance_uid=False)
        elif ts == _BIG_ENDIAN:
            for _ in ds.iterall():  # every element parsed with the file's byte order before it changes
                pass
            if "PixelData" in ds:
                arr = ds.pixel_array
                ds.PixelData = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
            ds.set_original_encoding(False, True, ds.original_character_set)
    except (ValueError, NotImplementedError, RuntimeError, OSError) as exc:
        raise NotTranscodable(f"the pixel data cannot be decoded: {str(exc)[:200]}") from None
    ds.file_meta.TransferSyntaxUID = pydicom.uid.UID(EXPLICIT_LE)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True, implicit_vr=False, little_endian=True)
    return buf.getvalue()


# PS3.18 Table 8.7.3-5: the media type that carries one compressed frame of each syntax as it is stored.
FRAME_MEDIA_TYPES = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
}
OCTET = "application/octet-stream"


@dataclass(frozen=True)
class FramePlan:
    """How a frames request is answered: `native` slices, `stored` encapsulated frames, or `decode`d ones."""

    mode: str
    part_type: str
    transfer_syntax: str


def plan_frames(stored_ts: str, accept: list[MediaRange]) -> FramePlan:
    """Negotiate a frames answer for an instance stored in `stored_ts` (NotAcceptable if none fits).

    Native data goes out as Explicit VR Little Endian. Compressed data goes out as stored to a client
    that accepts `transfer-syntax=*` or names the stored syntax, or asks for the stored syntax's own
    media type (`multipart/related; type="image/jpeg"` for JPEG); asked for no syntax (PS3.18's default
    for octet-stream) or Explicit VR Little Endian, it is decoded.
    """
    from medcloud.dicomweb.codecs import can_decode

    multipart = "multipart/related"
    if stored_ts in NATIVE_SYNTAXES:
        negotiate(accept, [Offer(multipart, OCTET, frozenset({EXPLICIT_LE}))], what="frames")
        return FramePlan("native", OCTET, EXPLICIT_LE)
    decodable = can_decode(stored_ts)
    offers = [Offer(multipart, OCTET, frozenset({stored_ts, EXPLICIT_LE} if decodable else {stored_ts}))]
    media = FRAME_MEDIA_TYPES.get(stored_ts)
    if media is not None:
        offers.append(Offer(multipart, media, frozenset({stored_ts})))
    offer, chosen = negotiate(accept, offers, what="frames")
    asked = chosen.params.get("transfer-syntax")
    if offer.part_type != OCTET or asked in ("*", stored_ts):
        return FramePlan("stored", offer.part_type or OCTET, stored_ts)
    if not decodable:
        raise NotTranscodable(f"this instance is stored in {stored_ts}, which cannot be decoded here: "
                              "accept transfer-syntax=* or that transfer syntax")  # fmt: skip
    return FramePlan("decode", OCTET, EXPLICIT_LE)


def read_frames(fh: BinaryIO, stored_ts: str, numbers: list[int], plan: FramePlan) -> list[bytes]:
    """The requested frames of a stored file, as `plan` says."""
    if plan.mode == "native":
        return native_frames(fh, stored_ts, numbers)
    if plan.mode == "stored":
        return encapsulated_frames(fh, numbers)
    return decoded_frames(fh, numbers)


def check_decodable(syntaxes: set[str]) -> None:
    """NotTranscodable unless pixel data in each of `syntaxes` can be decoded here."""
    from medcloud.dicomweb.codecs import can_decode

    stuck = sorted(ts for ts in syntaxes if ts not in NATIVE_SYNTAXES and not can_decode(ts))
    if stuck:
        raise NotTranscodable(f"instances stored in {', '.join(stuck)} cannot be decoded here: "
                              "accept transfer-syntax=* to receive them as stored")  # fmt: skip
