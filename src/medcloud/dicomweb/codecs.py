"""Pixel decoding for rendering and transcoding: pydicom's decoders, plus imagecodecs where pydicom has none.

pydicom 3 decodes JPEG baseline and JPEG 2000 with Pillow, JPEG-LS with pyjpegls and RLE itself, but
lossless JPEG (process 14, the usual CT/MR archive syntax), 12-bit JPEG and HTJ2K only through
pylibjpeg (whose libjpeg binding is GPL-3) or GDCM, and JPEG-LS only through pyjpegls (not a
dependency of ours). `imagecodecs`, already a dependency for TIFF and
slides (BSD), decodes all of them with libjpeg-turbo 3 and OpenJPEG, so it is added here as a pydicom
decoder plugin: one decoding path for everything, with pydicom's own handling of signedness, colour and
frame layout.
"""

from __future__ import annotations

import threading
from typing import Any

from pydicom import uid

__all__ = ["DECODER_DEPENDENCIES", "can_decode", "ensure_plugins", "is_available"]

_JPEG = (uid.JPEGLossless, uid.JPEGLosslessSV1, uid.JPEGExtended12Bit, uid.JPEGBaseline8Bit)
_JPEGLS = (uid.JPEGLSLossless, uid.JPEGLSNearLossless)
_HTJ2K = (uid.HTJ2KLossless, uid.HTJ2KLosslessRPCL, uid.HTJ2K)
DECODER_DEPENDENCIES: dict[str, tuple[str, ...]] = {ts: ("numpy", "imagecodecs") for ts in (*_JPEG, *_JPEGLS, *_HTJ2K)}
_LABEL = "medcloud-imagecodecs"
_lock = threading.Lock()
_registered = False


def is_available(transfer_syntax: str) -> bool:
    """pydicom's plugin hook: whether imagecodecs can decode `transfer_syntax` here."""
    try:
        import imagecodecs
    except ImportError:
        return False
    if transfer_syntax in _JPEG:
        return bool(imagecodecs.JPEG8.available)
    if transfer_syntax in _JPEGLS:
        return bool(imagecodecs.JPEGLS.available)
    return transfer_syntax in _HTJ2K and bool(imagecodecs.JPEG2K.available)


def decode_frame(src: bytes, runner: Any) -> bytes:
    """pydicom's plugin hook: one encoded frame to its native bytes (pixel-interleaved)."""
    import imagecodecs

    if runner.transfer_syntax in _HTJ2K:
        arr = imagecodecs.jpeg2k_decode(src)
    elif runner.transfer_syntax in _JPEGLS:
        arr = imagecodecs.jpegls_decode(src)
    else:
        arr = imagecodecs.jpeg8_decode(src)
    if arr.ndim == 3:
        runner.set_option("planar_configuration", 0)
    runner.set_option("bits_allocated", arr.dtype.itemsize * 8)
    data: bytes = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
    return data


def ensure_plugins() -> None:
    """Add the imagecodecs plugin to pydicom's decoders once, after pydicom's own (tried first)."""
    global _registered
    if _registered:
        return
    from pydicom.pixels.decoders.base import get_decoder

    with _lock:
        if _registered:
            return
        for ts in DECODER_DEPENDENCIES:
            decoder = get_decoder(ts)
            if _LABEL not in decoder._available and _LABEL not in decoder._unavailable:
                decoder.add_plugin(_LABEL, (__name__, "decode_frame"))
        _registered = True


def can_decode(transfer_syntax: str) -> bool:
    """Whether pixel data in `transfer_syntax` can be decoded here (native syntaxes always can)."""
    from pydicom.pixels.decoders.base import get_decoder

    ensure_plugins()
    try:
        return bool(get_decoder(transfer_syntax).is_available)
    except NotImplementedError:  # a syntax pydicom has no decoder class for
        return False
