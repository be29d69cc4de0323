"""Every refusal is a 4xx with the same JSON body, never a 5xx for bad input::

    {"error": {"code": "bad_signature", "message": "the signature does not match ...",
               "request_id": "5f0c...", "details": [...]}}

``code`` is stable (clients and tests match on it); ``message`` is for people. Validation details
name the field and the problem but never echo the submitted values (they could be secrets or process
data). The handler also records the code on the request for the audit log.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)
MAX_DETAILS = 20


class ApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers


def error_response(
    request: Request | None,
    status: int,
    code: str,
    message: str,
    details: Any = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message}
    if request is not None:
        state = request.scope.setdefault("state", {})
        state["audit_detail"] = code
        if state.get("request_id"):
            body["request_id"] = state["request_id"]
    if details:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def validation_details(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for e in errors[:MAX_DETAILS]:
        loc = [str(p) for p in e.get("loc", ()) if p not in ("body",)]
        out.append({"field": ".".join(loc) or "(body)", "problem": e.get("msg", ""), "type": e.get("type", "")})
    return out


def from_validation(exc: ValidationError | RequestValidationError, what: str = "request") -> ApiError:
    errors = exc.errors(include_input=False) if isinstance(exc, ValidationError) else list(exc.errors())
    if any(e.get("type") == "json_invalid" for e in errors):
        return ApiError(400, "malformed_json", "the body is not valid JSON")
    return ApiError(422, f"invalid_{what}", f"the {what} does not match the schema", validation_details(errors))


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(request, exc.status, exc.code, exc.message, exc.details, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        e = from_validation(exc)
        return error_response(request, e.status, e.code, e.message, e.details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}
        return error_response(
            request,
            exc.status_code,
            codes.get(exc.status_code, f"http_{exc.status_code}"),
            str(exc.detail),
            headers=getattr(exc, "headers", None),
        )

    from api.province.store import StoreError

    @app.exception_handler(StoreError)
    async def _store(request: Request, exc: StoreError) -> JSONResponse:
        return error_response(request, 400, "bad_query", str(exc))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # A bug, not bad input: logged with its traceback, answered without internals.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(
            request, 500, "internal_error", "the platform failed to handle this request; it was logged"
        )
