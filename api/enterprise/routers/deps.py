"""Small helpers shared by the routers: the app context, the dataset parameter, error docs."""

from __future__ import annotations

from typing import Any

from fastapi import Query, Request
from starlette.concurrency import run_in_threadpool

from api.enterprise.models import ErrorBody

ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "a bad query (e.g. a cursor from another sort order)"},
    401: {"model": ErrorBody, "description": "no token, or an unknown, revoked or expired one"},
    403: {"model": ErrorBody, "description": "the token's role does not allow this"},
    404: {"model": ErrorBody, "description": "no such resource"},
    409: {"model": ErrorBody, "description": "not possible in the resource's current state"},
    413: {"model": ErrorBody, "description": "the body is over the size limit"},
    422: {"model": ErrorBody, "description": "the query or body does not match the schema"},
    429: {"model": ErrorBody, "description": "too many requests; see Retry-After"},
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {c: ERRORS[c] for c in sorted({400, 401, 403, 422, 429, *codes})}


def json_errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The same for routes whose success is not JSON (CSV, Prometheus text): errors are still JSON."""
    ref = {"$ref": "#/components/schemas/ErrorBody"}
    return {c: {"description": ERRORS[c]["description"], "content": {"application/json": {"schema": ref}}}
            for c in sorted({400, 401, 403, 422, 429, *codes})}


def ctx(request: Request) -> Any:
    return request.app.state.ctx


DatasetQuery = Query(
    "live",
    pattern=r"^(live|job_[0-9a-f]{16})$",
    description="`live` (the sensors' alert store) or a replay job's id (its own dataset)",
)


async def threaded(fn: Any, *args: Any, **kw: Any) -> Any:
    """Store calls are blocking SQLite: run them off the event loop."""
    return await run_in_threadpool(fn, *args, **kw)
