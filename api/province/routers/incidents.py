"""Incident reports: intake (signed, idempotent), follow-ups and the final report, reading."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from api.province.auth import ANY_ROLE, Principal, authenticate_body
from api.province.models import ID_PATTERN, STATUSES, IncidentReport, IncidentUpdate
from api.province.routers.deps import ERRORS, epoch, service, touch
from api.province.store import IncidentFilter

router = APIRouter(prefix="/api/v1/incidents", tags=["incidents"], responses=ERRORS)


def _body_schema(model: type) -> dict:
    # The handlers read the raw bytes (they were signed), so the body is declared for OpenAPI by hand.
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}},
        }
    }


@router.post(
    "",
    summary="Report an incident (首报); idempotent on incident_id",
    status_code=201,
    openapi_extra=_body_schema(IncidentReport),
    responses={200: {"description": "already received: the stored receipt, with duplicate: true"}},
)
async def report_incident(request: Request) -> JSONResponse:
    # The hot path: checks on the event loop, the write in a group commit (api/province/intake.py).
    status, reply = await request.app.state.intake.report(request)
    touch(request, f"incident:{reply['enterprise_id']}/{reply['incident_id']}")
    return JSONResponse(reply, status_code=status)


@router.patch(
    "/{incident_id}",
    summary="Follow-up (续报) or final report (终报); idempotent on update_id",
    openapi_extra=_body_schema(IncidentUpdate),
)
async def update_incident(request: Request, incident_id: str = Path(pattern=ID_PATTERN)) -> JSONResponse:
    body = await request.body()

    def work() -> tuple[int, dict]:
        principal = authenticate_body(request, body, "enterprise")
        touch(request, f"incident:{principal.enterprise_id}/{incident_id}")
        return service(request).update(principal, incident_id, body)

    status, reply = await run_in_threadpool(work)
    return JSONResponse(reply, status_code=status)


@router.get("", summary="List incidents (an enterprise sees its own only)")
def list_incidents(
    request: Request,
    principal: Principal = Depends(ANY_ROLE),
    city: list[str] = Query([]),
    industry: list[str] = Query([]),
    level: list[int] = Query([], description="1..4"),
    status: list[str] = Query([], description=" / ".join(STATUSES)),
    late: bool | None = None,
    since: datetime | None = Query(None, description="received at or after (ISO 8601 with zone)"),
    until: datetime | None = None,
    q: str | None = Query(None, max_length=200, description="text search"),
    limit: int = Query(50, ge=1, le=1000),
    cursor: str | None = Query(None, max_length=500),
) -> dict:
    touch(request, "incidents")
    for lv in level:
        if not 1 <= lv <= 4:
            from api.province.errors import ApiError

            raise ApiError(422, "invalid_query", "level is 1 (特别重大) to 4 (一般)")
    f = IncidentFilter(None, city, industry, level, status, late, epoch(since), epoch(until), q, limit, cursor)
    return service(request).search(principal, f)


@router.get("/{incident_id}", summary="One incident: the current report and what the platform derived")
def get_incident(
    request: Request,
    incident_id: str = Path(pattern=ID_PATTERN),
    enterprise_id: str | None = Query(None, max_length=64),
    principal: Principal = Depends(ANY_ROLE),
) -> dict:
    touch(request, f"incident:{enterprise_id or principal.enterprise_id or '*'}/{incident_id}")
    svc = service(request)
    return svc.view(svc.find(principal, incident_id, enterprise_id))


@router.get("/{incident_id}/history", summary="The updates an incident received, in order")
def incident_history(
    request: Request,
    incident_id: str = Path(pattern=ID_PATTERN),
    enterprise_id: str | None = Query(None, max_length=64),
    principal: Principal = Depends(ANY_ROLE),
) -> dict:
    touch(request, f"incident:{enterprise_id or principal.enterprise_id or '*'}/{incident_id}")
    svc = service(request)
    rec = svc.find(principal, incident_id, enterprise_id)
    return {"incident_id": rec.incident_id, "enterprise_id": rec.enterprise_id, "items": svc.history(rec)}
