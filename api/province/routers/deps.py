"""Small shared helpers for the routers."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from api.province.errors import ApiError
from api.province.service import ProvinceService

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "malformed request (e.g. the body is not JSON)"},
    401: {
        "description": "not authenticated: missing/bad signature or token, stale timestamp, replayed nonce, "
        "unknown or revoked key"
    },
    403: {"description": "authenticated but not allowed (role, or another enterprise's data)"},
    404: {"description": "no such resource (or not visible to the caller)"},
    413: {"description": "body over the size limit"},
    422: {"description": "the body or the query does not match the schema"},
}


def service(request: Request) -> ProvinceService:
    return request.app.state.service


def touch(request: Request, resource: str) -> None:
    """Name the resource a request is about, for the audit log."""
    request.state.resource = resource


def json(status: int, body: Any) -> JSONResponse:
    return JSONResponse(body, status_code=status)


def epoch(dt: datetime | None) -> float | None:
    if dt is None:
        return None
    if dt.tzinfo is None:
        raise ApiError(422, "invalid_query", "times need a zone, e.g. 2024-05-01T00:00:00Z")
    return dt.timestamp()
