"""What a rendered or thumbnail request asks for (PS3.18 8.3.5.1): media type, window, viewport, quality.

Parsing only; `render` makes the image. Malformed values are InvalidInput (400), media types other than
JPEG and PNG NotAcceptable (406).
"""

from __future__ import annotations

import math
import re
from collections.abc import Hashable, Iterable
from dataclasses import dataclass

from medcloud.dicomweb.media import MediaRange, Offer, negotiate, parse_accept
from medcloud.errors import InvalidInput

__all__ = [
    "JPEG",
    "MAX_VIEWPORT",
    "PNG",
    "THUMBNAIL_SIZE",
    "WINDOW_FUNCTIONS",
    "RenderSpec",
    "Viewport",
    "Window",
    "parse_render_query",
    "parse_viewport",
    "parse_window",
]

JPEG, PNG = "image/jpeg", "image/png"
# Single images first; a client that names multipart/related gets the same images as parts.
OFFERS = [Offer(JPEG), Offer(PNG), Offer("multipart/related", JPEG), Offer("multipart/related", PNG)]
WINDOW_FUNCTIONS = ("linear", "linear-exact", "sigmoid")
MAX_VIEWPORT = 4096
THUMBNAIL_SIZE = 128
# Query parameters PS3.18 defines for rendered resources that are accepted and not acted on.
_IGNORED = frozenset({"annotation", "charset", "iccprofile"})


@dataclass(frozen=True)
class Window:
    """A VOI window on modality values (PS3.3 C.11.2.1.2): centre, width and function."""

    center: float
    width: float
    function: str = "linear"


@dataclass(frozen=True)
class Viewport:
    """The output box (`width` x `height`) and an optional source region `(sx, sy, sw, sh)`.

    Region members left empty are None (`viewport=256,256,,,100,100`); a negative width or height flips.
    """

    width: int
    height: int
    region: tuple[float | None, float | None, float | None, float | None] | None = None


@dataclass(frozen=True)
class RenderSpec:
    """What to make: media type, window, viewport, JPEG quality; `multipart` when parts were asked for."""

    media_type: str = JPEG
    window: Window | None = None
    viewport: Viewport | None = None
    quality: int = 90
    multipart: bool = False
    ignored: tuple[str, ...] = ()

    def key(self) -> Hashable:
        """What distinguishes two renderings of one frame (for the cache)."""
        return (self.media_type, self.window, self.viewport, self.quality if self.media_type == JPEG else 0)


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InvalidInput(f"{what} must be a number, not {text[:30]!r}") from None
    if not math.isfinite(value):
        raise InvalidInput(f"{what} must be a finite number, not {text[:30]!r}")
    return value


def parse_window(text: str) -> Window:
    """`center,width[,function]`; InvalidInput for anything else."""
    items = [t.strip() for t in text.split(",")]
    if len(items) not in (2, 3):
        raise InvalidInput("window is center,width[,function] (function: linear, linear-exact, sigmoid)")
    center, width = _number(items[0], "window center"), _number(items[1], "window width")
    function = items[2].lower().replace("_", "-") if len(items) == 3 and items[2] else "linear"
    if function not in WINDOW_FUNCTIONS:
        raise InvalidInput(f"window function {items[2][:30]!r} is not one of {', '.join(WINDOW_FUNCTIONS)}")
    if (function == "linear" and width < 1) or width <= 0:
        raise InvalidInput(f"window width {items[1][:30]!r} is too small (linear needs >= 1, others > 0)")
    return Window(center, width, function)


def parse_viewport(text: str) -> Viewport:
    """`vw,vh[,sx,sy,sw,sh]`, region members may be empty; InvalidInput for anything else."""
    items = [t.strip() for t in text.split(",")]
    if len(items) not in (2, 6):
        raise InvalidInput("viewport is vw,vh or vw,vh,sx,sy,sw,sh")
    size: list[int] = []
    for item, what in zip(items[:2], ("width", "height"), strict=True):
        if not item.isdigit() or not 1 <= int(item) <= MAX_VIEWPORT:
            raise InvalidInput(f"viewport {what} must be an integer from 1 to {MAX_VIEWPORT}, not {item[:30]!r}")
        size.append(int(item))
    if len(items) == 2:
        return Viewport(size[0], size[1])
    sx, sy, sw, sh = (None if not t else _number(t, f"viewport {n}") for t, n in zip(items[2:], "xywh", strict=True))
    if (sx is not None and sx < 0) or (sy is not None and sy < 0) or sw == 0 or sh == 0:
        raise InvalidInput("viewport sx, sy must be >= 0 and sw, sh non-zero")
    return Viewport(size[0], size[1], (sx, sy, sw, sh))


def parse_render_query(
    items: Iterable[tuple[str, str]], accept_header: str | None, *, thumbnail: bool = False, many: bool = False
) -> RenderSpec:
    """The rendering a request asks for: query parameters, and `accept=` (which wins) or the Accept header.

    A thumbnail is one image; a resource of `many` images prefers multipart/related when the client
    leaves the choice to us (`*/*`).
    """
    params: dict[str, str] = {}
    accept_params: list[str] = []
    ignored: list[str] = []
    for name, value in items:
        if name == "accept":
            accept_params.append(value)
        elif name in ("window", "viewport", "quality"):
            if name in params:
                raise InvalidInput(f"{name} is given more than once")
            params[name] = value
        else:  # named in a Warning header: nothing but plain characters
            ignored.append(re.sub(r"[^A-Za-z0-9_.\-]", "?", name[:40]))
    accept: list[MediaRange] = parse_accept(",".join(accept_params) if accept_params else accept_header)
    offers = OFFERS[:2] if thumbnail else OFFERS[2:] + OFFERS[:2] if many else OFFERS
    offer, _ = negotiate(accept, offers, what="a thumbnail" if thumbnail else "a rendered image")
    quality = 75 if thumbnail else 90
    if "quality" in params:
        text = params["quality"].strip()
        if not text.isdigit() or not 1 <= int(text) <= 100:
            raise InvalidInput(f"quality is an integer from 1 to 100, not {text[:30]!r}")
        quality = int(text)
    window = parse_window(params["window"]) if "window" in params else None
    viewport = parse_viewport(params["viewport"]) if "viewport" in params else None
    if viewport is None and thumbnail:
        viewport = Viewport(THUMBNAIL_SIZE, THUMBNAIL_SIZE)
    media = offer.part_type or offer.media_type
    return RenderSpec(media, window, viewport, quality, offer.part_type is not None, tuple(sorted(set(ignored))))
