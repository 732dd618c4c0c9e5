"""The gateway's de-identifier inherits the gateway's own limits."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.formats.dicom_builders import deflate_bomb

from medcloud.deid import SiteKey
from medcloud.errors import InvalidInput
from medcloud.gateway.cli import _load_deidentifier


def test_gateway_deidentifier_caps_inflation_at_its_max_file_bytes(tmp_path: Path) -> None:
    """The gateway's own size limit bounds what a deflated file may inflate to (not the 2 GiB default)."""
    key_file = tmp_path / "site.key"
    SiteKey.generate(key_file)
    deid = _load_deidentifier(key_file, [], False, 16 * 1024**2)
    with pytest.raises(InvalidInput, match="inflates to more than"):
        deid.deidentify_bytes(deflate_bomb(64 * 1024**2), "bomb.dcm")
