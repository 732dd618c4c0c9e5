"""A job's or researcher's client for `POST /api/v1/results`: plain functions over httpx, with the caller's token."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from medcloud.errors import InvalidInput

if TYPE_CHECKING:
    import httpx
    import numpy as np

__all__ = ["ResultsClient", "mask_png", "push_boxes", "push_mask"]


def mask_png(mask: np.ndarray) -> str:
    """A 2-D mask as base64 PNG: bool -> 0/255, float in [0, 1] -> 0-255, integers as they are (8-bit)."""
    import numpy as np
    from PIL import Image

    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise InvalidInput("a mask is 2-D (rows, columns)")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif np.issubdtype(arr.dtype, np.floating):
        arr = (arr.clip(0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    else:
        arr = arr.clip(0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, mode="L").save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


class ResultsClient:
    """Results on one hub: `push` posts a body as `POST /api/v1/results` takes it and returns the reply."""

    def __init__(self, base_url: str = "", token: str = "", *, client: httpx.Client | None = None) -> None:
        if client is None:
            import httpx

            if not base_url:
                raise InvalidInput("no hub URL: pass --hub or set MEDCLOUD_HUB_URL")
            if not token:
                raise InvalidInput("no token: pass --token or set MEDCLOUD_TOKEN")
            client = httpx.Client(base_url=base_url.rstrip("/"), timeout=httpx.Timeout(120.0, connect=10.0))
        self._client = client
        self._headers = {"Authorization": f"Bearer {token}", "User-Agent": "medcloud-results"} if token else {}

    def close(self) -> None:
        self._client.close()

    def push(self, body: dict[str, Any]) -> dict[str, Any]:
        """Store a result; the hub's reply (new series and SOP UIDs, blob hash) or the hub's error."""
        from medcloud.datasets.client import _raise_for

        r = self._client.post("/api/v1/results", json=body, headers=self._headers)
        _raise_for(r)
        out: dict[str, Any] = r.json()
        return out


def push_boxes(
    client: ResultsClient,
    sources: Sequence[str],
    boxes: Sequence[dict[str, Any]],
    *,
    algorithm: str,
    version: str,
    series_description: str = "",
) -> dict[str, Any]:
    """Post detections `[{x, y, w, h, label, score?, code?, sop_uid?}]` (pixels) as an SR beside the sources."""
    return client.push(
        {"kind": "boxes", "sources": list(sources), "boxes": list(boxes), "algorithm": algorithm,
         "algorithm_version": version, "series_description": series_description}
    )  # fmt: skip


def push_mask(
    client: ResultsClient,
    masks: dict[str, np.ndarray],
    *,
    label: str,
    algorithm: str,
    version: str,
    fractional: bool = False,
    code: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Post one mask per source SOP Instance UID (`{uid: array}`) as a SEG with one segment `label`."""
    return client.push(
        {"kind": "mask", "sources": list(masks), "algorithm": algorithm, "algorithm_version": version,
         "label": label, "code": code, "fractional": fractional,
         "masks": [{"sop_uid": uid, "png": mask_png(m)} for uid, m in masks.items()]}
    )  # fmt: skip
