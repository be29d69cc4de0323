"""One error shape for every refusal, never a 5xx for bad input::

    {"error": {"code": "not_found", "message": "no alert 5e0c...", "details": [...]}}

``code`` is stable (clients and tests match on it), ``message`` is for people. Validation details
name the field and the problem, never echo the submitted value.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)
MAX_DETAILS = 20


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers


def not_found(what: str, ident: str) -> ApiError:
    return ApiError(404, "not_found", f"no {what} {ident!r}")


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message}
    if details:
        body["details"] = details
    return {"error": body}


def error_response(request: Request | None, status: int, code: str, message: str, details: Any = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    if request is not None:
        request.scope.setdefault("state", {})["audit_detail"] = code
    return JSONResponse(error_body(code, message, details), status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    from alerts.sqlite_store import StoreError

    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(request, exc.status, exc.code, exc.message, exc.details, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        if any(e.get("type") == "json_invalid" for e in errors):
            return error_response(request, 400, "malformed_json", "the body is not valid JSON")
        details = []
        for e in errors[:MAX_DETAILS]:
            loc = [str(p) for p in e.get("loc", ()) if p != "body"]
            details.append({"field": ".".join(loc) or "(body)", "problem": e.get("msg", ""), "type": e.get("type", "")})
        return error_response(request, 422, "invalid_request", "the request does not match the schema", details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}
        return error_response(request, exc.status_code, codes.get(exc.status_code, f"http_{exc.status_code}"),
                              str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(StoreError)
    async def _store(request: Request, exc: StoreError) -> JSONResponse:
        return error_response(request, 400, "bad_query", str(exc))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(request, 500, "internal_error", "the API failed to handle this request; it was logged")
