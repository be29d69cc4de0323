"""/api/v1/tokens (admin): issue (the token is in the answer once), list, revoke."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request

from api.enterprise import auth
from api.enterprise.auth import Principal, issue_token
from api.enterprise.errors import ApiError, not_found
from api.enterprise.models import TokenIn, TokenInfo, TokenIssued, TokenList
from api.enterprise.routers.deps import ctx, errors, threaded

router = APIRouter(prefix="/api/v1/tokens", tags=["tokens"])
TokenId = Annotated[str, Path(pattern=r"^tok_[0-9a-f]{12}$")]


@router.get("", response_model=TokenList, summary="Every token (never the token itself)", responses=errors())
async def list_tokens(request: Request, _: Principal = Depends(auth.admin)) -> dict[str, Any]:
    toks = await threaded(ctx(request).state.tokens)
    return {"items": [t.public() for t in toks]}


def _issue(c: Any, body: TokenIn, who: Principal) -> dict[str, Any]:
    try:
        token_id, token = issue_token(c.state, body.name, body.role, by=who.actor, days=body.days)
    except ValueError as exc:
        raise ApiError(422, "invalid_token_request", str(exc)) from None
    rec = c.state.token(token_id)
    return {**rec.public(), "token": token}


@router.post("", response_model=TokenIssued, status_code=201, summary="Issue a token (shown once)", responses=errors())
async def issue(request: Request, body: TokenIn, who: Principal = Depends(auth.admin)) -> dict[str, Any]:
    out = await threaded(_issue, ctx(request), body, who)
    request.state.audit_detail = f"issued {out['id']} role {out['role']} for {out['name']}"
    return out


@router.delete("/{token_id}", response_model=TokenInfo, summary="Revoke a token (at once, in every worker)", responses=errors(404))
async def revoke(request: Request, token_id: TokenId, _: Principal = Depends(auth.admin)) -> dict[str, Any]:
    c = ctx(request)
    rec = await threaded(c.state.token, token_id)
    if rec is None:
        raise not_found("token", token_id)
    await threaded(c.state.revoke_token, token_id)
    return c.state.token(token_id).public()
