"""Test slides (bench/wsi_data.py makes them): skipped, with the reason, where a tool is not installed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import wsi_data


def deidentified_svs() -> bytes:
    try:
        return wsi_data.deidentified_svs()
    except wsi_data.Missing as exc:
        pytest.skip(str(exc))


def dicom_wsi(dst: Path) -> list[Path]:
    try:
        return wsi_data.dicom_wsi(dst)
    except wsi_data.Missing as exc:
        pytest.skip(str(exc))
