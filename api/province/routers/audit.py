"""The audit log, for admins: every access and change, refusals included."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends, Query, Request

from api.province.auth import ADMIN, Principal
from api.province.models import iso
from api.province.routers.deps import ERRORS, epoch, service, touch
from api.province.store import AuditFilter

router = APIRouter(prefix="/api/v1/audit", tags=["audit"], responses=ERRORS)


@router.get("", summary="Audit entries, newest first")
def audit_log(
    request: Request,
    principal: Principal = Depends(ADMIN),
    actor: str | None = Query(None, max_length=100),
    enterprise_id: str | None = Query(None, max_length=64),
    result: str | None = Query(None, pattern="^(ok|denied|invalid|throttled|error)$"),
    action: str | None = Query(None, max_length=300),
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = Query(100, ge=1, le=1000),
    cursor: str | None = Query(None, max_length=200),
) -> dict:
    touch(request, "audit")
    writer = request.app.state.audit
    if writer is not None:
        writer.flush(timeout=1.0)  # what happened just before this read is in the answer
    page = service(request).store.search_audit(
        AuditFilter(actor, enterprise_id, result, action, epoch(since), epoch(until), limit, cursor)
    )
    for e in page.items:
        e["time"] = iso(e["ts"])
    return {"items": page.items, "next_cursor": page.next_cursor, "total": page.total}
