"""Enterprise credentials (key id + secret): issue, list, rotate with overlap, revoke. Admin only.
The secret is in the reply to issue/rotate and nowhere else, ever."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse

from api.province import auth
from api.province.auth import ADMIN, Principal
from api.province.errors import ApiError
from api.province.models import ENTERPRISE_ID_PATTERN, CredentialIn, RotateIn, iso
from api.province.routers.deps import ERRORS, service, touch
from api.province.store import Credential

router = APIRouter(prefix="/api/v1", tags=["credentials"], responses=ERRORS)
KEY_PATTERN = r"^ik_[0-9a-f]{16}$"


def view(c: Credential, now: float) -> dict:
    state = (
        "revoked"
        if c.revoked_at
        else ("expired" if c.expires_at and now >= c.expires_at else "rotating" if c.expires_at else "active")
    )
    return {
        "key_id": c.key_id,
        "enterprise_id": c.enterprise_id,
        "state": state,
        "created_at": iso(c.created_at),
        "expires_at": iso(c.expires_at),
        "revoked_at": iso(c.revoked_at),
        "last_used_at": iso(c.last_used_at),
        "note": c.note,
    }


@router.post("/enterprises/{enterprise_id}/credentials", status_code=201, summary="Issue a key id and secret")
def issue(
    request: Request,
    data: CredentialIn | None = None,
    enterprise_id: str = Path(pattern=ENTERPRISE_ID_PATTERN),
    principal: Principal = Depends(ADMIN),
) -> JSONResponse:
    touch(request, f"enterprise:{enterprise_id}")
    app = request.app.state
    key_id, secret = auth.issue_credential(app.store, app.box, enterprise_id, (data.note if data else ""))
    touch(request, f"credential:{key_id}")
    return JSONResponse(
        {
            "key_id": key_id,
            "secret": secret,
            "enterprise_id": enterprise_id,
            "warning": "the secret is shown once: store it in the sensor's secret file",
        },
        status_code=201,
    )


@router.get("/enterprises/{enterprise_id}/credentials", summary="An enterprise's keys (never the secrets)")
def list_credentials(
    request: Request, enterprise_id: str = Path(pattern=ENTERPRISE_ID_PATTERN), principal: Principal = Depends(ADMIN)
) -> dict:
    touch(request, f"enterprise:{enterprise_id}")
    svc = service(request)
    if svc.store.get_enterprise(enterprise_id) is None:
        raise ApiError(404, "not_found", "no such enterprise")
    now = svc.clock()
    return {"items": [view(c, now) for c in svc.store.list_credentials(enterprise_id)]}


@router.post(
    "/credentials/{key_id}/rotate", status_code=201, summary="Issue a successor; the old key works for the overlap"
)
def rotate(
    request: Request,
    data: RotateIn | None = None,
    key_id: str = Path(pattern=KEY_PATTERN),
    principal: Principal = Depends(ADMIN),
) -> JSONResponse:
    touch(request, f"credential:{key_id}")
    app = request.app.state
    overlap = (data or RotateIn()).overlap_hours * 3600
    new_id, secret, ends = auth.rotate_credential(app.store, app.box, key_id, overlap)
    return JSONResponse(
        {"key_id": new_id, "secret": secret, "previous_key_id": key_id, "previous_expires_at": iso(ends)},
        status_code=201,
    )


@router.post("/credentials/{key_id}/revoke", summary="Revoke a key at once")
def revoke(request: Request, key_id: str = Path(pattern=KEY_PATTERN), principal: Principal = Depends(ADMIN)) -> dict:
    touch(request, f"credential:{key_id}")
    changed = auth.revoke_credential(service(request).store, key_id)
    return {"key_id": key_id, "revoked": True, "already_revoked": not changed}
