"""Warnings down (预警通报): the province issues advisories to all, a city, an industry or named
enterprises; each enterprise fetches its own (signed) and acknowledges; the province sees who did."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from api.province.auth import ANY_ROLE, ENTERPRISE, STAFF, Principal
from api.province.errors import ApiError
from api.province.models import AckIn, AdvisoryIn
from api.province.routers.deps import ERRORS, service, touch

router = APIRouter(prefix="/api/v1/advisories", tags=["advisories"], responses=ERRORS)
ADV_PATTERN = r"^adv_[0-9]{8}_[0-9a-f]{8}$"


@router.post("", status_code=201, summary="Issue an advisory; recipients are resolved now")
def issue(request: Request, data: AdvisoryIn, principal: Principal = Depends(STAFF)) -> JSONResponse:
    out = service(request).issue_advisory(principal, data)
    touch(request, f"advisory:{out['id']}")
    return JSONResponse(out, status_code=201)


@router.get("", summary="Advisories: an enterprise gets those addressed to it, staff get all with ack counts")
def list_advisories(
    request: Request,
    principal: Principal = Depends(ANY_ROLE),
    limit: int = Query(100, ge=1, le=1000),
    cursor: str | None = Query(None, max_length=200),
    since: str | None = Query(
        None, max_length=40, description="accepted for clients that send it; the list is newest first"
    ),
) -> dict:
    touch(request, "advisories")
    return service(request).list_advisories(principal, limit, cursor)


@router.get("/{advisory_id}", summary="One advisory (an enterprise: only if addressed to it)")
def get_advisory(
    request: Request, advisory_id: str = Path(pattern=ADV_PATTERN), principal: Principal = Depends(ANY_ROLE)
) -> dict:
    touch(request, f"advisory:{advisory_id}")
    svc = service(request)
    adv, rcpt = svc.advisory_for(principal, advisory_id)
    return svc.advisory_view(adv, rcpt)


@router.post("/{advisory_id}/ack", summary="Acknowledge an advisory (idempotent)")
async def acknowledge(
    request: Request, advisory_id: str = Path(pattern=ADV_PATTERN), principal: Principal = Depends(ENTERPRISE)
) -> dict:
    touch(request, f"advisory:{advisory_id}")
    body = await request.body()
    try:
        note = AckIn.model_validate_json(body or b"{}").note
    except Exception as exc:  # noqa: BLE001 - pydantic's error, mapped to 400/422
        from pydantic import ValidationError

        from api.province.errors import from_validation

        if isinstance(exc, ValidationError):
            raise from_validation(exc, "acknowledgement") from None
        raise ApiError(400, "malformed_json", "the body is not valid JSON") from None
    return await run_in_threadpool(service(request).acknowledge, principal, advisory_id, note)


@router.get("/{advisory_id}/acks", summary="Who acknowledged (province staff)")
def acknowledgements(
    request: Request, advisory_id: str = Path(pattern=ADV_PATTERN), principal: Principal = Depends(STAFF)
) -> dict:
    touch(request, f"advisory:{advisory_id}")
    return service(request).acknowledgements(advisory_id)
