"""The enterprise registry: admins write it, analysts read it, an enterprise reads its own entry."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse

from api.province.auth import ADMIN, ENTERPRISE, STAFF, Principal
from api.province.errors import ApiError
from api.province.models import ENTERPRISE_ID_PATTERN, SECURITY_CLASSES, EnterpriseIn, EnterprisePatch, iso
from api.province.routers.deps import ERRORS, service, touch
from api.province.store import Enterprise

router = APIRouter(prefix="/api/v1/enterprises", tags=["enterprises"], responses=ERRORS)


def view(e: Enterprise) -> dict:
    d = asdict(e)
    d["security_class_name"] = SECURITY_CLASSES.get(e.security_class, "")
    d["created_at"], d["updated_at"] = iso(e.created_at), iso(e.updated_at)
    return d


@router.post("", status_code=201, summary="Register an enterprise (the credit code is checked)")
def add_enterprise(request: Request, data: EnterpriseIn, principal: Principal = Depends(ADMIN)) -> JSONResponse:
    touch(request, f"enterprise:{data.id}")
    return JSONResponse(view(service(request).add_enterprise(data)), status_code=201)


@router.get("", summary="List enterprises")
def list_enterprises(
    request: Request,
    principal: Principal = Depends(STAFF),
    city: str | None = Query(None, max_length=50),
    industry: str | None = Query(None, max_length=80),
    limit: int = Query(100, ge=1, le=1000),
    cursor: str | None = Query(None, max_length=200),
) -> dict:
    touch(request, "enterprises")
    page = service(request).store.list_enterprises(city, industry, limit, cursor)
    return {"items": [view(e) for e in page.items], "next_cursor": page.next_cursor, "total": page.total}


@router.get("/me", summary="The calling enterprise's own registry entry")
def me(request: Request, principal: Principal = Depends(ENTERPRISE)) -> dict:
    touch(request, f"enterprise:{principal.enterprise_id}")
    assert principal.enterprise is not None
    return view(principal.enterprise)


@router.get("/{enterprise_id}", summary="One enterprise")
def get_enterprise(
    request: Request, enterprise_id: str = Path(pattern=ENTERPRISE_ID_PATTERN), principal: Principal = Depends(STAFF)
) -> dict:
    touch(request, f"enterprise:{enterprise_id}")
    e = service(request).store.get_enterprise(enterprise_id)
    if e is None:
        raise ApiError(404, "not_found", "no such enterprise")
    return view(e)


@router.patch("/{enterprise_id}", summary="Change an enterprise's registry entry")
def patch_enterprise(
    request: Request,
    data: EnterprisePatch,
    enterprise_id: str = Path(pattern=ENTERPRISE_ID_PATTERN),
    principal: Principal = Depends(ADMIN),
) -> dict:
    touch(request, f"enterprise:{enterprise_id}")
    svc = service(request)
    fields = data.model_dump(exclude_none=True)
    if "contacts" in fields:
        fields["contacts"] = [c for c in fields["contacts"]]
    e = svc.store.update_enterprise(enterprise_id, fields, svc.clock())
    if e is None:
        raise ApiError(404, "not_found", "no such enterprise")
    return view(e)
