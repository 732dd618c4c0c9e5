"""A job's or researcher's client for `POST /api/v1/results`: plain functions over httpx, with the caller's token."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from medcloud.errors import InvalidInput
from medcloud.hubclient import HubClient, raise_for

if TYPE_CHECKING:
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


class ResultsClient(HubClient):
    """Results on one hub: `push` posts a body as `POST /api/v1/results` takes it and returns the reply."""

    agent = "medcloud-results"
    timeout_s = 120.0

    def push(self, body: dict[str, Any]) -> dict[str, Any]:
        """Store a result; the hub's reply (new series and SOP UIDs, blob hash) or the hub's error."""
        r = self._client.post("/api/v1/results", json=body, headers=self._headers)
        raise_for(r)
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
