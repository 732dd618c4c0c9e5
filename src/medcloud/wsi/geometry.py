"""DeepZoom arithmetic: levels, tile bounds, and which native pyramid level a tile is read from.

DeepZoom numbers levels from 0 (one pixel) up to `max_level = ceil(log2(max(W, H)))` (full resolution);
level k is `ceil(W / 2**(max_level - k))` by `ceil(H / 2**(max_level - k))` pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from medcloud.errors import NotFound

__all__ = ["Region", "dz_level_count", "dz_level_size", "dz_tile", "nearest_native_level"]

# A native level counts as fine enough for a zoom when its downsample is within 1% of the zoom's:
# scanners write downsamples such as 4.0003 for a nominal 4.
_TOLERANCE = 1.01


@dataclass(frozen=True)
class Region:
    """A rectangle to read at one native level, and the size the tile has after scaling."""

    level: int  # native level index (0 = full resolution)
    x: int
    y: int
    width: int
    height: int
    out_width: int
    out_height: int


def dz_level_count(width: int, height: int) -> int:
    """Number of DeepZoom levels (max level + 1)."""
    return math.ceil(math.log2(max(width, height, 1))) + 1


def dz_level_size(width: int, height: int, level: int) -> tuple[int, int]:
    """Pixel size of DeepZoom `level`; NotFound outside 0..max."""
    count = dz_level_count(width, height)
    if not 0 <= level < count:
        raise NotFound(f"DeepZoom level {level} does not exist (levels 0..{count - 1})")
    scale = 2 ** (count - 1 - level)
    return math.ceil(width / scale), math.ceil(height / scale)


def nearest_native_level(downsamples: list[float], scale: float) -> int:
    """The coarsest native level still at least as fine as `scale` (level-0 pixels per output pixel)."""
    best = 0
    for i, ds in enumerate(downsamples):
        if ds <= scale * _TOLERANCE and ds >= downsamples[best]:
            best = i
    return best


def dz_tile(
    width: int,
    height: int,
    levels: list[tuple[int, int, float]],
    level: int,
    col: int,
    row: int,
    tile_size: int,
) -> Region:
    """Where DeepZoom tile (`level`, `col`, `row`) lies in the nearest native level; NotFound if outside.

    `levels` are the native levels' (width, height, downsample), level 0 being (`width`, `height`, 1).
    """
    lw, lh = dz_level_size(width, height, level)
    cols, rows = math.ceil(lw / tile_size), math.ceil(lh / tile_size)
    if not (0 <= col < cols and 0 <= row < rows):
        raise NotFound(f"tile {col}_{row} is outside DeepZoom level {level} ({cols} x {rows} tiles)")
    scale = 2 ** (dz_level_count(width, height) - 1 - level)
    x0, y0 = col * tile_size, row * tile_size
    out_w, out_h = min(tile_size, lw - x0), min(tile_size, lh - y0)
    n = nearest_native_level([ds for _, _, ds in levels], scale)
    nw, nh, ds = levels[n]
    # Native pixels per DeepZoom pixel. A level whose downsample is the zoom's (2.0003 for 2) maps one to one:
    # both were rounded from the same full-resolution size, so no resampling is needed.
    f = scale / ds
    if abs(f - 1) < 1e-3:
        f = 1.0
    nx0, ny0 = min(nw - 1, math.floor(x0 * f)), min(nh - 1, math.floor(y0 * f))
    nx1 = min(nw, max(nx0 + 1, math.ceil((x0 + out_w) * f - 1e-9)))
    ny1 = min(nh, max(ny0 + 1, math.ceil((y0 + out_h) * f - 1e-9)))
    return Region(n, nx0, ny0, nx1 - nx0, ny1 - ny0, out_w, out_h)
