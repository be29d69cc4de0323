"""/api/v1/audit (admin): every write request, newest first: who, what, when, the answer."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request

from api.enterprise import auth
from api.enterprise.auth import Principal
from api.enterprise.models import AuditPage
from api.enterprise.routers.deps import ctx, errors, threaded

router = APIRouter(prefix="/api/v1/audit", tags=["audit"])


@router.get("", response_model=AuditPage, summary="The audit log of writes (newest first)", responses=errors())
async def audit_log(
    request: Request,
    limit: int = Query(100, ge=1, le=1000),
    before: int | None = Query(None, ge=1, le=2**62, description="next_before of the previous page"),
    actor: str | None = Query(None, max_length=200, description="only this actor (as shown in the log)"),
    _: Principal = Depends(auth.admin),
) -> dict[str, Any]:
    items = await threaded(ctx(request).state.audit_entries, limit, before, actor)
    nxt = items[-1]["seq"] if len(items) == limit else None
    return {"items": items, "next_before": nxt}
