"""GET /api/v1/models: the model registry (packaged SYNTHETIC demo model plus versions under the data dir)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path, Request
from starlette.concurrency import run_in_threadpool

from medcloud.hub.deps import hub_state, require
from medcloud.security.policy import Permission, Principal

router = APIRouter(tags=["models"])
_NAME = r"^[A-Za-z0-9._-]{1,64}$"


@router.get("/api/v1/models", summary="List registered models with their cards' summaries")
async def list_models(request: Request, _: Principal = Depends(require(Permission.MODELS_READ))) -> dict[str, Any]:
    from medcloud.vision.registry import list_models as registry_list

    data_dir = hub_state(request).settings.data_dir
    models = await run_in_threadpool(registry_list, data_dir)
    return {"models": [m.summary() for m in models]}


@router.get(
    "/api/v1/models/{name}/{version}",
    summary="One model's full card, led by its worst never-seen site and robustness warning",
)
async def model_card(
    request: Request,
    name: str = Path(pattern=_NAME),
    version: str = Path(pattern=_NAME),
    _: Principal = Depends(require(Permission.MODELS_READ)),
) -> dict[str, Any]:
    from medcloud.vision.registry import resolve

    found = await run_in_threadpool(resolve, hub_state(request).settings.data_dir, name, version)
    # The summary's `headline` / `robustness_warning` first (derived from the card's own per-site figures
    # where an older card does not state them), then the card as written.
    return found.summary() | found.card
