"""Whole-slide images served as tiles: Aperio SVS (read with tiffslide) and DICOM VL Whole Slide
Microscopy series (read with wsidicom), as DeepZoom tiles, native-level tiles and thumbnails.

`geometry` is the DeepZoom arithmetic (pure), `readers` opens one slide of either kind behind one small
interface, `service` keeps open slides in a bounded LRU and renders tiles. Nothing here touches the
catalog: the hub hands in where a slide's bytes are.
"""
