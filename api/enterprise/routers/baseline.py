"""/api/v1/baseline: the learned baseline (``api.baseline``, detectors/baseline) and the deviations
analysts accepted into it (through ``POST /api/v1/alerts/{id}/false-positive`` with action=baseline,
or ``icswatch baseline accept``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request

from api.enterprise import auth
from api.enterprise.auth import Principal
from api.enterprise.models import AcceptedOut, BaselineOut
from api.enterprise.routers.deps import ctx, errors, threaded

router = APIRouter(prefix="/api/v1/baseline", tags=["baseline"])


def _view(c: Any, limit: int) -> dict[str, Any]:
    b = c.baseline.load()
    out = c.baseline.summary(b)
    out["assets"] = out["assets"][:limit]
    out["pairs"] = out["pairs"][:limit]
    return out


@router.get("", response_model=BaselineOut, summary="What the baseline holds (assets, talker pairs, functions, polls)",
            responses=errors(404, 409))
async def view(request: Request, limit: int = Query(1000, ge=1, le=10_000, description="assets and pairs at most"),
               _: Principal = Depends(auth.viewer)) -> dict[str, Any]:
    return await threaded(_view, ctx(request), limit)


def _accepted(c: Any) -> dict[str, Any]:
    b = c.baseline.load()
    items = [dict(a) for a in b.accepted]
    return {"items": items, "total": len(items)}


@router.get("/accepted", response_model=AcceptedOut, summary="Deviations accepted into the baseline (who, why, when, what)",
            responses=errors(404, 409))
async def accepted(request: Request, _: Principal = Depends(auth.viewer)) -> dict[str, Any]:
    return await threaded(_accepted, ctx(request))
