"""API tokens and roles.

A token is ``icsw_`` + 43 random URL-safe characters (256 bits from ``secrets``); it is shown once when
issued (``icswatch token issue`` or ``POST /api/v1/tokens``) and only its SHA-256 is stored. A
random 256-bit secret needs no salt or slow hash: nobody can search its space, and a stolen state
file gives only hashes that open nothing. Clients send ``Authorization: Bearer <token>``; tokens
are never accepted in the query string (it ends up in proxy and browser logs).

Roles, each including the one before:

- ``viewer``: read everything (alerts, incidents, assets, baseline, rules, stats, sensors, metrics);
- ``analyst``: the alert and incident workflow (acknowledge, assign, comment, close, false positive,
  report to the province) and pcap upload and replay;
- ``admin``: rule switches and reloads, suppressions, tokens, the audit log.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from api.enterprise.errors import ApiError
from api.enterprise.state import StateStore

ROLES = ("viewer", "analyst", "admin")
RANK = {r: i for i, r in enumerate(ROLES)}
TOKEN_PREFIX = "icsw_"
TOUCH_SECONDS = 60.0
MAX_TOUCH_CACHE = 10_000


@dataclass(frozen=True)
class Principal:
    token_id: str
    name: str
    role: str

    @property
    def actor(self) -> str:
        """What the audit log and the activity trail record: the token's name and id."""
        return f"{self.name} ({self.token_id})"

    def can(self, role: str) -> bool:
        return RANK[self.role] >= RANK[role]


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def issue_token(state: StateStore, name: str, role: str, by: str = "cli", days: float | None = None) -> tuple[str, str]:
    """(token id, token). The token is returned once and never stored."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r} (one of {', '.join(ROLES)})")
    name = name.strip()
    if not name or len(name) > 100:
        raise ValueError("a token needs a name of 1-100 characters (who or what uses it)")
    token_id = "tok_" + secrets.token_hex(6)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    state.add_token(token_id, token_hash(token), name, role, by, time.time() + days * 86400 if days else None)
    return token_id, token


def _unauthorized(code: str, message: str) -> ApiError:
    return ApiError(401, code, message, headers={"WWW-Authenticate": 'Bearer realm="icswatch"'})


class Authenticator:
    def __init__(self, state: StateStore, clock: Callable[[], float] = time.time) -> None:
        self.state = state
        self.clock = clock
        self._touched: dict[str, float] = {}

    def verify(self, authorization: str | None) -> Principal:
        if not authorization:
            raise _unauthorized("missing_token", "send an API token: Authorization: Bearer <token> (icswatch token issue)")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthorized("bad_authorization", "the Authorization header must be: Bearer <token>")
        token = token.strip()
        if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            raise _unauthorized("bad_token", "unknown token")
        rec = self.state.token_by_hash(token_hash(token))
        if rec is None:
            raise _unauthorized("bad_token", "unknown token")
        now = self.clock()
        if rec.revoked_at is not None:
            raise _unauthorized("revoked_token", "this token was revoked")
        if rec.expires_at is not None and now >= rec.expires_at:
            raise _unauthorized("expired_token", "this token has expired")
        last = self._touched.get(rec.id)
        if last is None or now - last >= TOUCH_SECONDS:
            if len(self._touched) >= MAX_TOUCH_CACHE:
                self._touched.clear()
            self._touched[rec.id] = now
            self.state.touch_token(rec.id, now)
        return Principal(rec.id, rec.name, rec.role)


async def authenticate(request: Request) -> Principal:
    auth: Authenticator = request.app.state.auth
    principal = await run_in_threadpool(auth.verify, request.headers.get("authorization"))
    request.scope.setdefault("state", {})["principal"] = principal
    return principal


# Declares the scheme in the OpenAPI document (Swagger UI's "Authorize", schemathesis); the header is
# checked by ``authenticate`` itself, with this API's error shape.
bearer_scheme = HTTPBearer(auto_error=False, description="an API token: icswatch token issue --role viewer --name NAME")


def require(role: str) -> Callable[..., Any]:
    """FastAPI dependency: the caller, holding at least ``role`` (401 without a valid token, 403 below)."""

    async def dependency(request: Request, _: HTTPAuthorizationCredentials | None = Depends(bearer_scheme)) -> Principal:
        principal = await authenticate(request)
        if not principal.can(role):
            raise ApiError(403, "forbidden", f"this needs the {role} role; the token {principal.name!r} is {principal.role}")
        return principal

    dependency.__name__ = f"require_{role}"
    return dependency


viewer = require("viewer")
analyst = require("analyst")
admin = require("admin")
