"""The audit log (every API access and change: who, what, when, result) and the body size limit.

Both are plain ASGI middlewares (no per-request task or body copy, which matters at a thousand
reports a second). ``AuditMiddleware`` is the outermost layer, so it records every answer, including
the refusals raised before any route runs (413 for an oversized body, 401 from authentication):
the actor is then the key id the caller *claimed*, marked ``role: none``.

Entries go through ``AuditWriter``: a bounded queue and one thread committing a batch at least every
``audit_flush_seconds`` (one transaction per batch rather than one per request). The trade-off: a
crash of the platform process can lose the last fraction of a second of access records, never a
change (the change itself is committed by the request before it answers). The queue is bounded; when
full, requests wait for the writer rather than go unrecorded. A batch the store refuses (the
Elasticsearch cluster unreachable, the disk full) is kept and tried again, backing off up to
``MAX_RETRY_SECONDS``, with the entries that arrive meanwhile (at most ``MAX_UNWRITTEN`` of them are
kept: beyond, the oldest are dropped, counted and logged).
"""

from __future__ import annotations

import logging
import queue
import secrets
import threading
import time
from typing import Any, Callable

from api.asgi import ASGIApp, Message, Receive, Scope, Send, send_json
from api.body_limit import declared_over, run_limited
from api.client_address import ClientAddress
from api.province.store import AuditEntry, AuditStore

log = logging.getLogger(__name__)

MAX_QUEUE = 50_000
MAX_BATCH = 1000
MAX_UNWRITTEN = 50_000  # entries kept for a retry while the store refuses them
MAX_RETRY_SECONDS = 5.0
UNAUDITED = ("/api/v1/health",)  # load balancer probes: no data, and they would drown the log


class AuditWriter:
    def __init__(self, store: AuditStore, flush_seconds: float = 0.2) -> None:
        self.store = store
        self.flush_seconds = flush_seconds
        self._q: queue.Queue[AuditEntry | threading.Event | None] = queue.Queue(MAX_QUEUE)
        self._thread = threading.Thread(target=self._run, name="province-audit", daemon=True)
        self.written = 0
        self.failed = 0  # entries dropped after the store refused them for too long
        self._unwritten: list[AuditEntry] = []
        self._retry_in = flush_seconds
        self._thread.start()

    def put(self, entry: AuditEntry) -> None:
        self._q.put(entry)  # blocks when the writer is behind by MAX_QUEUE entries: backpressure, not loss

    def _run(self) -> None:
        while True:
            try:
                item = self._q.get(timeout=self._retry_in if self._unwritten else None)
            except queue.Empty:
                self._write([])  # nothing new: try the refused entries again
                continue
            batch: list[AuditEntry] = []
            markers: list[threading.Event] = []
            deadline = time.monotonic() + self.flush_seconds
            stop = False
            while True:
                if item is None:
                    stop = True
                    break
                if isinstance(item, threading.Event):
                    markers.append(item)  # flush() waits for it: write what came before, now
                    break
                batch.append(item)
                if len(batch) >= MAX_BATCH:
                    break
                try:
                    item = self._q.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
            self._write(batch)
            for m in markers:
                m.set()
            if stop:
                return

    def _write(self, batch: list[AuditEntry]) -> None:
        entries = self._unwritten + batch
        done = 0
        try:
            while done < len(entries):
                chunk = entries[done : done + MAX_BATCH]
                self.store.write_audit(chunk)  # idempotent per entry: a retried chunk is not doubled
                done += len(chunk)
                self.written += len(chunk)
        except Exception:  # noqa: BLE001 - loud, kept for a retry; the platform keeps answering
            left = entries[done:]
            self._unwritten = left[-MAX_UNWRITTEN:]
            dropped = len(left) - len(self._unwritten)
            self.failed += dropped
            log.exception(
                "audit: could not write %d entries (retry in %.1f s; %d dropped)", len(left), self._retry_in, dropped
            )
            self._retry_in = min(MAX_RETRY_SECONDS, self._retry_in * 2)
            return
        self._unwritten = []
        self._retry_in = self.flush_seconds

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything queued so far is committed (the audit route, tests, shutdown)."""
        if not self._thread.is_alive():
            return False
        marker = threading.Event()
        self._q.put(marker)
        return marker.wait(timeout) and not self._unwritten

    def close(self) -> None:
        if self._thread.is_alive():
            self._q.put(None)
            self._thread.join(10)


def _result(status: int) -> str:
    if status < 400:
        return "ok"
    if status in (401, 403):
        return "denied"
    if status == 429:
        return "throttled"
    if status >= 500:
        return "error"
    return "invalid"


class AuditMiddleware:
    def __init__(self, app: ASGIApp, writer_of: Callable[[], AuditWriter | None], trusted_proxies: list[str]) -> None:
        self.app = app
        self.writer_of = writer_of
        self._client_address = ClientAddress(trusted_proxies)

    def _client(self, scope: Scope) -> str:
        # X-Forwarded-For read from the right past the trusted proxies: its left end is the client's to write.
        return self._client_address(scope)[:64]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/api/") or scope["path"] in UNAUDITED:
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        request_id = secrets.token_hex(8)
        state["request_id"] = request_id
        status_box = [500]

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_box[0] = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self._record(scope, state, status_box[0], request_id)

    def _record(self, scope: Scope, state: dict[str, Any], status: int, request_id: str) -> None:
        writer = self.writer_of()
        if writer is None:
            return
        principal = state.get("principal")
        if principal is not None:
            actor, role, ent = principal.actor, principal.role, principal.enterprise_id
        else:
            actor, role, ent = (state.get("claimed_actor") or "anonymous"), "none", ""
        route = scope.get("route")
        action = f"{scope['method']} {getattr(route, 'path', scope['path'])}"
        writer.put(
            AuditEntry(
                ts=time.time(),
                actor=str(actor)[:100],
                role=role,
                enterprise_id=ent,
                method=scope["method"],
                path=scope["path"][:300],
                action=action[:300],
                resource=str(state.get("resource", ""))[:300],
                status=status,
                result=_result(status),
                detail=str(state.get("audit_detail", ""))[:300],
                client=self._client(scope),
                request_id=request_id,
            )
        )


class BodyLimitMiddleware:
    """413 for a body over ``max_body``: at once from Content-Length, or as soon as a streamed
    (chunked) body passes the limit. Nothing beyond the limit is read."""

    def __init__(self, app: ASGIApp, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def _refuse(self, scope: Scope, send: Send) -> None:
        state = scope.setdefault("state", {})
        state["audit_detail"] = "body_too_large"
        for k, v in scope.get("headers") or ():
            if k == b"x-icswatch-key-id":
                state.setdefault("claimed_actor", v.decode("latin-1")[:64])
        body = {"error": {"code": "body_too_large", "message": f"the body is over the {self.max_body}-byte limit"}}
        if state.get("request_id"):
            body["error"]["request_id"] = state["request_id"]
        await send_json(send, 413, body, [(b"connection", b"close")])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if declared_over(scope, self.max_body):
            await self._refuse(scope, send)
            return
        await run_limited(self.app, scope, receive, send, self.max_body, lambda: self._refuse(scope, send))
