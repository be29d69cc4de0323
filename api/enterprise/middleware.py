"""The plain ASGI layers around every request (outermost first):

- ``SecurityHeaders``: CSP (scripts and connections to this origin only, no framing), nosniff,
  no referrer, HSTS over HTTPS, ``Cache-Control: no-store`` on API answers (they carry plant data);
- ``Audit``: every write (POST/PUT/PATCH/DELETE under /api/) is recorded with who, what, when and the
  answer's status, including the refused ones (401, 403, 413, 429); read requests are counted in
  the metrics, not written to the log;
- ``RateLimit``: per-client token buckets (api/ratelimit.py): requests that authenticated spend
  their token's bucket (``api.rate_limit`` per second, bursts of ``api.rate_burst``), the others
  (no token, a made-up or revoked one) their address's (``api.anonymous_rate_limit`` /
  ``anonymous_rate_burst``, by default the same); 429 with ``Retry-After`` beyond. At most
  ``MAX_BUCKETS`` clients per table (least recently seen dropped), per process;
- ``BodyLimit``: request bodies over ``api.max_body_bytes`` are refused with 413 before they are
  read (from Content-Length, or as soon as a chunked body passes the limit). The upload route has
  its own, larger limit (``api.upload_max_bytes``) and streams to disk itself.

Plain ASGI rather than ``BaseHTTPMiddleware``: no extra task per request and streaming bodies stay
streams (the upload route reads 50 MB without holding it in memory).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool

from api.asgi import ASGIApp, Message, Receive, Scope, Send, send_json
from api.body_limit import declared_over, run_limited
from api.client_address import peer_address
from api.enterprise.errors import error_body
from api.ratelimit import Limits, RateLimiter, RateLimitMiddleware, bearer_credential

WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MAX_BUCKETS = 10_000
UPLOAD_PATH = "/api/v1/jobs"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        https = scope.get("scheme") == "https"
        api = scope["path"].startswith("/api/") or scope["path"] in ("/metrics", "/openapi.json")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                h = message.setdefault("headers", [])
                present = {k.lower() for k, _ in h}
                h.extend(
                    [
                        (b"x-content-type-options", b"nosniff"),
                        (b"x-frame-options", b"DENY"),
                        (b"referrer-policy", b"no-referrer"),
                        (b"cross-origin-opener-policy", b"same-origin"),
                        (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
                        (b"content-security-policy", CSP.encode()),
                    ]
                )
                if api and b"cache-control" not in present:
                    h.append((b"cache-control", b"no-store"))
                if https:
                    h.append((b"strict-transport-security", b"max-age=31536000"))
            await send(message)

        await self.app(scope, receive, with_headers)


class Metrics:
    """Request counters for /metrics (per process): by method, route template and status class."""

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str, str]] = Counter()
        self.seconds: dict[tuple[str, str], float] = {}
        self.rate_limited = 0
        self.too_large = 0
        self.started = time.time()

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        if len(self.requests) < 5000:
            self.requests[(method, route, f"{status // 100}xx")] += 1
            self.seconds[(method, route)] = self.seconds.get((method, route), 0.0) + seconds


class Audit:
    def __init__(self, app: ASGIApp, state_of: Callable[[], Any], metrics: Metrics) -> None:
        self.app = app
        self.state_of = state_of
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = [500]
        recorded = [False]
        t0 = time.perf_counter()
        audited = scope["method"] in WRITES and scope["path"].startswith("/api/")

        def template() -> str:
            route = scope.get("route")
            return getattr(route, "path", None) or ("static" if not scope["path"].startswith("/api/") else "unmatched")

        async def tracking(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                if audited:
                    # Recorded before the client has the answer: a client's writes are logged in its order.
                    recorded[0] = True
                    await self._record(scope, status[0], template())
            await send(message)

        try:
            await self.app(scope, receive, tracking)
        finally:
            self.metrics.observe(scope["method"], template(), status[0], time.perf_counter() - t0)
            if audited and not recorded[0]:
                await self._record(scope, status[0], template())

    async def _record(self, scope: Scope, status: int, template: str) -> None:
        state = scope.get("state") or {}
        principal = state.get("principal")
        actor, role = (principal.actor, principal.role) if principal is not None else ("anonymous", "none")
        detail = state.get("audit_detail") or ""
        store = self.state_of()
        if store is None:
            return
        await run_in_threadpool(
            store.audit, actor, role, scope["method"], scope["path"], f"{scope['method']} {template}", status, str(detail),
            peer_address(scope),
        )


class RateLimit:
    """The enterprise side of ``api/ratelimit.py``: a bucket per API token for requests that
    authenticated, one per client address for those that did not (no token, a made-up or revoked
    one); 429 ``rate_limited`` with ``Retry-After`` beyond. Health and the static files are not limited."""

    def __init__(self, app: ASGIApp, rate: float, burst: int, metrics: Metrics, anonymous_rate: float | None = None,
                 anonymous_burst: int | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.metrics = metrics
        self.rate = rate
        limits = Limits(rate, burst, rate if anonymous_rate is None else anonymous_rate,
                        burst if anonymous_burst is None else anonymous_burst)
        self.limiter = RateLimiter(limits, MAX_BUCKETS, clock)
        self.layer = RateLimitMiddleware(app, self.limiter, applies=self._applies, credential_of=bearer_credential,
                                         address_of=peer_address, refuse=self._refuse)

    @staticmethod
    def _applies(scope: Scope) -> bool:
        path = scope["path"]
        return path != "/api/v1/health" and (path.startswith("/api/") or path == "/metrics")

    async def _refuse(self, scope: Scope, send: Send, retry_after: int, which: str) -> None:
        self.metrics.rate_limited += 1
        scope.setdefault("state", {})["audit_detail"] = "rate_limited"
        whose = "this token" if which == "credential" else "this address"
        await send_json(
            send, 429, error_body("rate_limited", f"too many requests from {whose}; retry in {retry_after} s"),
            [(b"retry-after", str(retry_after).encode())],
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.layer(scope, receive, send)


class BodyLimit:
    def __init__(self, app: ASGIApp, max_body: int, upload_max: int, metrics: Metrics) -> None:
        self.app = app
        self.max_body = max_body
        self.upload_max = upload_max
        self.metrics = metrics

    async def _refuse(self, scope: Scope, send: Send, limit: int) -> None:
        self.metrics.too_large += 1
        scope.setdefault("state", {})["audit_detail"] = "body_too_large"
        await send_json(
            send, 413, error_body("body_too_large", f"the request body is over the {limit:,}-byte limit"), [(b"connection", b"close")]
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        upload = scope["method"] == "POST" and scope["path"] == UPLOAD_PATH
        limit = self.upload_max if upload else self.max_body
        if declared_over(scope, limit):
            await self._refuse(scope, send, limit)
            return
        if upload:
            await self.app(scope, receive, send)  # the route counts and stops a chunked upload itself
            return
        await run_limited(self.app, scope, receive, send, limit, lambda: self._refuse(scope, send, limit))
