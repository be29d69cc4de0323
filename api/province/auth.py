"""Who is calling: enterprises sign each request with HMAC-SHA256 (their key id + secret), province
analysts and admins send a bearer token. Protocol and canonical form: docs/linkage.md (the signing
functions themselves are in alerts/forwarder.py, shared with the enterprise side).

Checks on a signed request, in this order (each failure is a 401 with its own code, and audited):
headers present -> timestamp within ``clock_skew`` of now -> nonce well formed -> key id known ->
body digest matches the header -> signature matches (constant-time) -> key neither revoked nor past
its rotation overlap -> enterprise active (403) -> nonce never seen for this key (persisted, so a
restart does not reopen a replay window). The nonce is consumed only after the signature checked out,
so nobody without the secret can fill the replay cache. The report intake runs the same checks in
two steps (``check_signature``, then the nonce in the intake's group commit with the report itself:
api/province/intake.py), so a report and its nonce are committed together.

Roles: ``enterprise`` (its own incidents and advisories only), ``analyst`` (every enterprise's data,
issues advisories), ``admin`` (analyst + registry, credentials, tokens, audit log).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from alerts.forwarder import (
    HEADER_DIGEST,
    HEADER_KEY_ID,
    HEADER_NONCE,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    NONCE_RE,
    body_digest,
    canonical_string,
    sign,
)
from api.province.errors import ApiError
from api.province.keys import MasterKeyError, SecretBox
from api.province.settings import ProvinceSettings
from api.province.store import Credential, Enterprise, ProvinceStore, Token

ROLES = ("enterprise", "analyst", "admin")
TOKEN_PREFIX = "ipt_"
SECRET_PREFIX = "isk_"
KEY_PREFIX = "ik_"
MAX_TOUCH_CACHE = 10_000


@dataclass(frozen=True)
class NonceClaim:
    """The nonce of a request whose signature checked out, still to be consumed."""

    key_id: str
    nonce: str
    ts: float


@dataclass(frozen=True)
class Principal:
    kind: str  # "enterprise" (signed) or "token" (bearer)
    actor: str  # key id or token id: what the audit log records
    role: str
    enterprise_id: str = ""
    enterprise: Enterprise | None = None


def _unauthorized(code: str, message: str) -> ApiError:
    return ApiError(401, code, message, headers={"WWW-Authenticate": 'ICSWATCH-HMAC-SHA256, Bearer realm="icswatch"'})


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# -- issuing ----------------------------------------------------------------------------------------


def issue_credential(
    store: ProvinceStore, box: SecretBox, enterprise_id: str, note: str = "", now: float | None = None
) -> tuple[str, str]:
    """A new key id and secret for an enterprise; the secret is returned once and kept only sealed."""
    now = time.time() if now is None else now
    if store.get_enterprise(enterprise_id) is None:
        raise ApiError(404, "unknown_enterprise", f"no enterprise {enterprise_id!r} in the registry")
    key_id = KEY_PREFIX + secrets.token_hex(8)
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    store.add_credential(Credential(key_id, enterprise_id, box.seal(key_id, secret), now, note=note))
    return key_id, secret


def rotate_credential(
    store: ProvinceStore, box: SecretBox, key_id: str, overlap_s: float, now: float | None = None
) -> tuple[str, str, float]:
    """Issue a successor; the old key keeps working for ``overlap_s`` so the plant can switch without
    a gap. Returns (new key id, new secret, when the old one stops)."""
    now = time.time() if now is None else now
    old = store.get_credential(key_id)
    if old is None or old.revoked_at is not None:
        raise ApiError(404, "unknown_key", f"no active credential {key_id!r}")
    new_id, secret = issue_credential(store, box, old.enterprise_id, note=f"rotation of {key_id}", now=now)
    ends = now + overlap_s
    if old.expires_at is None or old.expires_at > ends:
        store.set_credential(key_id, expires_at=ends)
    return new_id, secret, ends


def revoke_credential(store: ProvinceStore, key_id: str, now: float | None = None) -> bool:
    cred = store.get_credential(key_id)
    if cred is None:
        raise ApiError(404, "unknown_key", f"no credential {key_id!r}")
    if cred.revoked_at is not None:
        return False
    return store.set_credential(key_id, revoked_at=time.time() if now is None else now)


def issue_token(
    store: ProvinceStore, name: str, role: str, days: float | None = None, now: float | None = None
) -> tuple[str, str]:
    """(token id, token). The token is shown once; only its SHA-256 is stored."""
    if role not in ("analyst", "admin"):
        raise ApiError(422, "invalid_role", "tokens are for the analyst or admin role")
    now = time.time() if now is None else now
    token_id = "tok_" + secrets.token_hex(6)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    store.add_token(Token(token_id, token_hash(token), name, role, now, now + days * 86400 if days else None))
    return token_id, token


# -- verifying --------------------------------------------------------------------------------------


class Authenticator:
    def __init__(
        self, store: ProvinceStore, box: SecretBox, settings: ProvinceSettings, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.box = box
        self.settings = settings
        self.clock = clock
        self._touched: dict[str, float] = {}

    def _touch(self, what: str, ident: str, now: float, fn: Callable[[str, float], None]) -> None:
        # Last-used times help an admin retire unused keys; writing one per request would double the
        # write load, so at most one write per key per ``touch_seconds``.
        last = self._touched.get(ident)
        if last is not None and now - last < self.settings.touch_seconds:
            return
        if len(self._touched) >= MAX_TOUCH_CACHE:
            self._touched.clear()
        self._touched[ident] = now
        fn(ident, now)

    def verify_signature(
        self, method: str, path: str, query: str, headers: Mapping[str, str], body: bytes
    ) -> Principal:
        """Every check, the nonce included (consumed here)."""
        principal, claim = self.check_signature(method, path, query, headers, body)
        now = self.clock()
        if not self.store.use_nonce(claim.key_id, claim.nonce, claim.ts, now, self.settings.clock_skew):
            raise replayed_nonce()
        return principal

    def check_signature(
        self, method: str, path: str, query: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[Principal, NonceClaim]:
        """Every check but the nonce, which the caller must consume (``use_nonce`` or an intake batch)
        before it acts on the request."""
        now = self.clock()
        key_id = headers.get(HEADER_KEY_ID.lower(), "")
        ts_raw = headers.get(HEADER_TIMESTAMP.lower(), "")
        nonce = headers.get(HEADER_NONCE.lower(), "")
        signature = headers.get(HEADER_SIGNATURE.lower(), "")
        if not (key_id and ts_raw and nonce and signature):
            raise _unauthorized(
                "missing_signature",
                f"signed requests need {HEADER_KEY_ID}, {HEADER_TIMESTAMP}, {HEADER_NONCE} and {HEADER_SIGNATURE}",
            )
        try:
            ts = int(ts_raw)
        except ValueError:
            raise _unauthorized("bad_timestamp", "the timestamp must be integer Unix seconds") from None
        if abs(now - ts) > self.settings.clock_skew:
            raise _unauthorized(
                "stale_timestamp",
                f"the timestamp is more than {self.settings.clock_skew:.0f} s from the "
                "platform's clock: check the sensor's time (NTP)",
            )
        if not NONCE_RE.match(nonce):
            raise _unauthorized("bad_nonce", "the nonce must be 16-64 characters of A-Z a-z 0-9 _ -")
        found = self.store.credential_and_enterprise(key_id)
        if found is None:
            raise _unauthorized("unknown_key", "unknown key id")
        cred, enterprise = found
        digest = body_digest(body)
        claimed = headers.get(HEADER_DIGEST.lower())
        if claimed is not None and not hmac.compare_digest(claimed.lower(), digest):
            raise _unauthorized("digest_mismatch", f"{HEADER_DIGEST} does not match the body received")
        try:
            secret = self.box.open(cred.key_id, cred.secret_box)
        except MasterKeyError:
            raise _unauthorized("unknown_key", "this key cannot be used (sealed with another master key)") from None
        expected = sign(secret, canonical_string(method, path, query, ts_raw, nonce, digest))
        if not hmac.compare_digest(expected, signature.lower()):
            raise _unauthorized(
                "bad_signature", "the signature does not match the canonical request (see docs/linkage.md)"
            )
        if cred.revoked_at is not None:
            raise _unauthorized("revoked_key", "this key was revoked")
        if cred.expires_at is not None and now >= cred.expires_at:
            raise _unauthorized("expired_key", "this key was rotated and its overlap period is over")
        if enterprise is None or not enterprise.active:
            raise ApiError(403, "enterprise_inactive", "the enterprise of this key is not active in the registry")
        self._touch("key", key_id, now, self.store.touch_credential)
        return Principal("enterprise", key_id, "enterprise", enterprise.id, enterprise), NonceClaim(
            key_id, nonce, float(ts)
        )

    def verify_bearer(self, token: str) -> Principal:
        now = self.clock()
        tok = self.store.get_token(token_hash(token.strip()))
        if tok is None:
            raise _unauthorized("bad_token", "unknown token")
        if tok.revoked_at is not None:
            raise _unauthorized("revoked_token", "this token was revoked")
        if tok.expires_at is not None and now >= tok.expires_at:
            raise _unauthorized("expired_token", "this token has expired")
        self._touch("token", tok.token_id, now, self.store.touch_token)
        return Principal("token", tok.token_id, tok.role)


def replayed_nonce() -> ApiError:
    return _unauthorized("replayed_nonce", "this nonce was already used: every request needs a fresh one")


def signed_path(scope: Mapping[str, Any]) -> str:
    """The path the client signed: as sent (percent-encoded), with the proxy's root path if any."""
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if raw else scope.get("path", "/")
    root = scope.get("root_path") or ""
    if root and not path.startswith(root):
        path = root + path
    return path


def authenticate_body(request: Request, body: bytes, *roles: str) -> Principal:
    """Synchronous form of ``authenticate`` + ``require`` for the signed write routes, which call it in the
    same worker thread as the store write (one thread hop per request instead of two). The report
    intake uses ``check_request`` and spends the nonce in its group commit instead."""
    principal, claim = check_request(request, body, *roles)
    if claim is not None:
        auth: Authenticator = request.app.state.auth
        if not auth.store.use_nonce(claim.key_id, claim.nonce, claim.ts, auth.clock(), auth.settings.clock_skew):
            raise replayed_nonce()
    request.state.principal = principal
    return principal


def check_request(request: Request, body: bytes, *roles: str) -> tuple[Principal, NonceClaim | None]:
    """``authenticate_body`` without consuming the nonce of a signed request: the caller gets it back and
    consumes it with the write (the report intake's group commit). A bearer token has no nonce (None).
    Runs on the event loop: a few microseconds of hashing and one indexed read."""
    auth: Authenticator = request.app.state.auth
    state = request.state
    authz = request.headers.get("authorization", "")
    claim: NonceClaim | None = None
    if authz[:7].lower() == "bearer ":
        state.claimed_actor = "bearer"
        principal = auth.verify_bearer(authz[7:])
    elif request.headers.get(HEADER_SIGNATURE.lower()) is not None or request.headers.get(HEADER_KEY_ID.lower()):
        state.claimed_actor = request.headers.get(HEADER_KEY_ID.lower(), "")[:64]
        principal, claim = auth.check_signature(
            request.method,
            signed_path(request.scope),
            request.scope.get("query_string", b"").decode("latin-1"),
            request.headers,
            body,
        )
    else:
        raise _unauthorized("unauthenticated", "sign the request (enterprises) or send a bearer token (province staff)")
    if principal.role not in roles:
        state.principal = principal
        raise ApiError(403, "forbidden", f"this needs the role {' or '.join(roles)}; you are {principal.role}")
    return principal, claim


async def authenticate(request: Request) -> Principal:
    """FastAPI dependency: the caller, or a 401 (recorded for the audit log either way)."""
    auth: Authenticator = request.app.state.auth
    state = request.state
    authz = request.headers.get("authorization", "")
    if authz[:7].lower() == "bearer ":
        state.claimed_actor = "bearer"
        principal = await run_in_threadpool(auth.verify_bearer, authz[7:])
    elif request.headers.get(HEADER_SIGNATURE.lower()) is not None or request.headers.get(HEADER_KEY_ID.lower()):
        state.claimed_actor = request.headers.get(HEADER_KEY_ID.lower(), "")[:64]
        body = await request.body()  # bounded by the body limit middleware
        principal = await run_in_threadpool(
            auth.verify_signature,
            request.method,
            signed_path(request.scope),
            request.scope.get("query_string", b"").decode("latin-1"),
            request.headers,
            body,
        )
    else:
        raise _unauthorized("unauthenticated", "sign the request (enterprises) or send a bearer token (province staff)")
    state.principal = principal
    return principal


def require(*roles: str) -> Callable[..., Awaitable[Principal]]:
    """Dependency factory: the caller must hold one of ``roles``."""

    async def dependency(principal: Principal = Depends(authenticate)) -> Principal:
        if principal.role not in roles:
            raise ApiError(403, "forbidden", f"this needs the role {' or '.join(roles)}; you are {principal.role}")
        return principal

    return dependency


ANY_ROLE = require(*ROLES)
STAFF = require("analyst", "admin")
ADMIN = require("admin")
ENTERPRISE = require("enterprise")
