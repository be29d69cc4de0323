"""The platform's rate limit: ``api/ratelimit.py`` with the province's clients and error shape.

- A signed request claims its enterprise key (``X-Icswatch-Key-Id``), a staff request its bearer
  token (checked first, as ``auth.py`` does). Requests that authenticated spend their credential's
  bucket (``rate_limit`` / ``rate_burst``); the others spend their address's
  (``anonymous_rate_limit`` / ``anonymous_rate_burst``), so nobody can use up an enterprise's
  allowance by sending its (public) key id with made-up signatures.
- The address is the one the audit log records: the peer, or ``X-Forwarded-For`` read from the
  right past the ``trusted_proxies`` (api/client_address.py).
- A refusal is ``429 {"error": {"code": "rate_limited", ...}}`` with ``Retry-After`` and the request
  id, and, since this layer runs inside the audit middleware, an audit entry with the result
  ``throttled`` and the key id or ``bearer`` the caller claimed. The enterprise forwarder honours
  ``Retry-After`` (alerts/forwarder.py) and delivers the rest later.

Health probes, the dashboard page and static files are not limited.
"""

from __future__ import annotations

from typing import Any

from alerts.forwarder import HEADER_KEY_ID
from api.asgi import send_json
from api.client_address import ClientAddress
from api.province.settings import ProvinceSettings
from api.ratelimit import (
    ASGIApp,
    Credential,
    Limits,
    RateLimiter,
    RateLimitMiddleware,
    Receive,
    Scope,
    Send,
    credential,
)

UNLIMITED = ("/api/v1/health",)
KEY_ID_HEADER = HEADER_KEY_ID.lower().encode()


def claimed_credential(scope: Scope) -> Credential | None:
    """A staff bearer token (a secret) or an enterprise key id (public: it is in every signed request)."""
    key_id = None
    for k, v in scope.get("headers") or ():
        if k == b"authorization" and v[:7].lower() == b"bearer ":
            return credential("token", v[7:].strip(), secret=True)
        if k == KEY_ID_HEADER:
            key_id = v
    return credential("key", key_id[:64], secret=False) if key_id else None


def _claimed_actor(scope: Scope) -> str:
    for k, v in scope.get("headers") or ():
        if k == b"authorization" and v[:7].lower() == b"bearer ":
            return "bearer"
    for k, v in scope.get("headers") or ():
        if k == KEY_ID_HEADER:
            return v.decode("latin-1")[:64]
    return ""


class ProvinceRateLimit:
    def __init__(self, app: ASGIApp, settings: ProvinceSettings) -> None:
        limits = Limits(settings.rate_limit, settings.rate_burst, settings.anonymous_rate_limit, settings.anonymous_rate_burst)
        self.limiter = RateLimiter(limits)
        self.layer = RateLimitMiddleware(
            app,
            self.limiter,
            applies=lambda scope: scope["path"].startswith("/api/") and scope["path"] not in UNLIMITED,
            credential_of=claimed_credential,
            address_of=ClientAddress(settings.trusted_proxies),
            refuse=self._refuse,
        )

    @staticmethod
    async def _refuse(scope: Scope, send: Send, retry_after: int, which: str) -> None:
        state = scope.setdefault("state", {})
        state["audit_detail"] = "rate_limited"
        actor = _claimed_actor(scope)
        if actor:
            state.setdefault("claimed_actor", actor)
        whose = "this key or token" if which == "credential" else "this address"
        error: dict[str, Any] = {
            "code": "rate_limited",
            "message": f"too many requests from {whose}; retry in {retry_after} s",
        }
        if state.get("request_id"):
            error["request_id"] = state["request_id"]
        await send_json(send, 429, {"error": error}, [(b"retry-after", str(retry_after).encode())])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.layer(scope, receive, send)
