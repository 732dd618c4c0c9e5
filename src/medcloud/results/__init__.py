"""Inference results back as DICOM: boxes as a TID 1500 Measurement Report (Comprehensive 3D SR), masks as SEG.

`build_sr` and `build_seg` are plain functions a job script can call on pydicom datasets it holds;
`ResultsClient.push` (or `POST /api/v1/results`) has the hub build and store them next to their source
study, through the ordinary ingest path (blob, catalog rows, audit). Both are built with highdicom, and
both inherit the source's patient and study modules and its de-identification markers, so the hub's
ingest accepts them like any gateway output.
"""

from __future__ import annotations

from medcloud.results.model import Box, FindingCode, MaskInput, ResultSpec

__all__ = ["Box", "FindingCode", "MaskInput", "ResultSpec", "build_seg", "build_sr"]


def __getattr__(name: str) -> object:
    # highdicom and numpy load only when a result is built (the CLI imports this package for `--help`).
    if name in ("build_sr", "build_seg"):
        from medcloud.results import dicom

        return getattr(dicom, name)
    raise AttributeError(name)
