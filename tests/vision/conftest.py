"""Fixtures for vision tests: a real hub with a clinician token, and SYNTHETIC smears as PNG bytes."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from medcloud.config import load_settings
from medcloud.hub.app import create_app
from medcloud.hub.state import HubState
from medcloud.security.tokens import issue_token
from medcloud.vision.registry import resolve
from medcloud.vision.synth import Smear, render_smear


@dataclass
class VisionHub:
    client: TestClient
    state: HubState
    tokens: dict[str, str]
    data_dir: Path

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[VisionHub]:
    settings = load_settings(data_dir=tmp_path / "hub", max_upload_bytes=5_000_000)
    state = HubState.open(settings)
    tokens = {
        role: issue_token(state.catalog, role=role, **extra).token  # type: ignore[arg-type]
        for role, extra in {
            "clinician": {},
            "researcher": {"projects": ["lung"]},
            "site": {"site": "site-a"},
            "auditor": {},
            "admin": {},
        }.items()
    }
    app = create_app(settings, state=state)
    with TestClient(app, client=("127.0.0.1", 50001)) as client:
        yield VisionHub(client, state, tokens, tmp_path / "hub")
    state.close()


def png_bytes(smear: Smear, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(smear.image).save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture(scope="session")
def smear() -> Smear:
    return render_smear(424242, "site-a", (640, 640), 1.0, species=["s_aureus"] * 6)


@pytest.fixture(scope="session")
def packaged_model_dir() -> Path:
    return resolve(None).path
