"""Bearer tokens of province staff (analyst, admin): issue, list, revoke. Admin only. Stored as SHA-256."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse

from api.province import auth
from api.province.auth import ADMIN, Principal
from api.province.errors import ApiError
from api.province.models import TokenIn, iso
from api.province.routers.deps import ERRORS, service, touch

router = APIRouter(prefix="/api/v1/tokens", tags=["tokens"], responses=ERRORS)


@router.post("", status_code=201, summary="Issue a token (shown once)")
def issue(request: Request, data: TokenIn, principal: Principal = Depends(ADMIN)) -> JSONResponse:
    token_id, token = auth.issue_token(service(request).store, data.name, data.role, data.days)
    touch(request, f"token:{token_id}")
    return JSONResponse({"token_id": token_id, "token": token, "role": data.role}, status_code=201)


@router.get("", summary="List tokens (never the tokens themselves)")
def list_tokens(request: Request, principal: Principal = Depends(ADMIN)) -> dict:
    touch(request, "tokens")
    return {
        "items": [
            {
                "token_id": t.token_id,
                "name": t.name,
                "role": t.role,
                "created_at": iso(t.created_at),
                "expires_at": iso(t.expires_at),
                "revoked_at": iso(t.revoked_at),
                "last_used_at": iso(t.last_used_at),
            }
            for t in service(request).store.list_tokens()
        ]
    }


@router.post("/{token_id}/revoke", summary="Revoke a token")
def revoke(
    request: Request, token_id: str = Path(pattern=r"^tok_[0-9a-f]{12}$"), principal: Principal = Depends(ADMIN)
) -> dict:
    touch(request, f"token:{token_id}")
    svc = service(request)
    if not any(t.token_id == token_id for t in svc.store.list_tokens()):
        raise ApiError(404, "not_found", "no such token")
    svc.store.revoke_token(token_id, svc.clock())
    return {"token_id": token_id, "revoked": True}
