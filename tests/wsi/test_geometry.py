"""DeepZoom arithmetic (pure): level sizes, tile bounds, and the native level a tile is read from."""

from __future__ import annotations

import pytest

from medcloud.errors import NotFound
from medcloud.wsi.geometry import Region, dz_level_count, dz_level_size, dz_tile, nearest_native_level

W, H = 2220, 2967
PYRAMID = [(2220, 2967, 1.0), (1110, 1484, 2.0), (555, 742, 4.0), (278, 371, 7.99), (139, 186, 15.97)]


def test_level_sizes_follow_deepzoom() -> None:
    assert dz_level_count(W, H) == 13  # 2**12 = 4096 >= 2967
    assert dz_level_size(W, H, 12) == (2220, 2967)
    assert dz_level_size(W, H, 11) == (1110, 1484)
    assert dz_level_size(W, H, 0) == (1, 1)
    assert dz_level_count(1, 1) == 1 and dz_level_count(512, 512) == 10
    for bad in (-1, 13):
        with pytest.raises(NotFound):
            dz_level_size(W, H, bad)


def test_nearest_native_level_is_the_coarsest_fine_enough() -> None:
    ds = [lv[2] for lv in PYRAMID]
    assert nearest_native_level(ds, 1) == 0
    assert nearest_native_level(ds, 2) == 1
    assert nearest_native_level(ds, 3.9) == 1
    assert nearest_native_level(ds, 4) == 2
    assert nearest_native_level(ds, 8) == 3  # 7.99 is within tolerance
    assert nearest_native_level(ds, 4096) == 4
    assert nearest_native_level([1.0, 4.0003, 16.001], 4) == 1  # scanners' "4"


def test_full_resolution_tiles_map_one_to_one() -> None:
    assert dz_tile(W, H, PYRAMID, 12, 1, 2, 512) == Region(0, 512, 1024, 512, 512, 512, 512)
    assert dz_tile(W, H, PYRAMID, 12, 4, 5, 512) == Region(0, 2048, 2560, 172, 407, 172, 407)


def test_zoomed_out_tiles_read_the_nearest_native_level_never_level_0() -> None:
    # Level 11 (scale 2) is native level 1 one to one, although 2967 / 1484 is not exactly 2.
    assert dz_tile(W, H, PYRAMID, 11, 1, 2, 512) == Region(1, 512, 1024, 512, 460, 512, 460)
    # Level 10 (scale 4): native level 2; level 9 (scale 8): native level 3 (7.99), one tile.
    assert dz_tile(W, H, PYRAMID, 10, 0, 0, 512).level == 2
    r = dz_tile(W, H, PYRAMID, 9, 0, 0, 512)
    assert r.level == 3 and (r.out_width, r.out_height) == (278, 371)
    # Level 7 (scale 32) has no native match: the coarsest level (16) is read and halved.
    r = dz_tile(W, H, PYRAMID, 7, 0, 0, 512)
    assert r.level == 4 and (r.width, r.height) == (139, 186) and (r.out_width, r.out_height) == (70, 93)
    # A slide with one level reads level 0 and scales down.
    r = dz_tile(W, H, PYRAMID[:1], 10, 0, 0, 512)
    assert r == Region(0, 0, 0, 2048, 2048, 512, 512)


def test_tiles_outside_a_level_are_not_found() -> None:
    for level, col, row in ((12, 5, 0), (12, 0, 6), (12, -1, 0), (0, 1, 0), (13, 0, 0)):
        with pytest.raises(NotFound):
            dz_tile(W, H, PYRAMID, level, col, row, 512)
