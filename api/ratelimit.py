"""Per-client rate limits for both APIs (enterprise SOC and provincial platform): token buckets in a
bounded table, the policy that decides which bucket a request spends, and the ASGI layer.

Who is a client:

- a **credential**: the enterprise API's bearer token, a province analyst's bearer token, or an
  enterprise's HMAC key id (province signed requests). Tokens are keyed by a hash, never by the token;
- an **address**: the TCP peer, or the client named by ``X-Forwarded-For`` when the peer is a trusted
  reverse proxy (``api/client_address.py``). IPv6 addresses are keyed by their /64, the block one
  host usually holds, so walking through a /64 does not give a client a fresh bucket per address.

The policy (``RateLimiter``):

- a request that *authenticated* (the route's authentication put a ``principal`` in the request
  state) spends one token from its credential's bucket: ``rate`` per second, bursts of ``burst``;
- a request that did *not* (no credential; an unknown, revoked or expired one; a bad signature; a
  body refused for its size; an unknown route) spends one from its address's bucket:
  ``anonymous_rate`` and ``anonymous_burst``;
- before the route runs, a request is refused with 429 and ``Retry-After`` when the bucket of the
  credential it claims is empty, or its address's is. The address is not checked for a request
  carrying a *secret* credential (a bearer token) that authenticated before: only its holder can send
  it, so a flood of made-up tokens from a shared address (a NAT, a proxy) does not lock out the
  analysts behind it. A secret that stops working (revoked, expired) loses that standing at its first
  failure.

Spending only what authenticated matters at the province: key ids are not secret (every signed
request carries one), so charging the *claimed* key would let anyone who has seen a key id spend that
enterprise's allowance with made-up signatures and lock its sensor out. Those requests are charged to
the sender's address instead. Checking before the route keeps a throttled client cheap: a dictionary
lookup, no signature check, no database read. Charging after the answer lets a client with several
requests in flight overdraw by at most that many; a bucket may go into debt (down to ``-burst``) so
the overdraft is paid back before the next request passes.

Memory is bounded: at most ``max_clients`` buckets per table (least recently used dropped: a dropped
client only starts again from a full bucket). Buckets live in the process: with several worker
processes each worker has its own.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_CLIENTS = 10_000  # buckets per table (credentials, addresses): a few MB at most
IPV6_CLIENT_PREFIX = 64


class TokenBuckets:
    """One token bucket per key: ``burst`` tokens at most, refilled at ``rate`` per second."""

    def __init__(self, rate: float, burst: float, max_clients: int = MAX_CLIENTS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1 or max_clients < 1:
            raise ValueError("a token bucket needs rate > 0, burst >= 1 and room for one client")
        self.rate = float(rate)
        self.burst = float(burst)
        self.max_clients = max_clients
        self.clock = clock
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()  # key -> [tokens, last refill time]

    def __len__(self) -> int:
        return len(self._buckets)

    def __contains__(self, key: str) -> bool:
        return key in self._buckets

    def forget(self, key: str) -> None:
        self._buckets.pop(key, None)

    def tokens(self, key: str) -> float:
        """The tokens ``key`` has now (a client never seen has a full bucket)."""
        b = self._buckets.get(key)
        if b is None:
            return self.burst
        return min(self.burst, b[0] + (self.clock() - b[1]) * self.rate)

    def wait(self, key: str) -> float:
        """Seconds until ``key`` has a whole token; 0 when it has one now. Takes nothing, and a key never
        seen is not added (made-up credentials must not fill the table)."""
        have = self.tokens(key)
        return 0.0 if have >= 1.0 else (1.0 - have) / self.rate

    def charge(self, key: str, cost: float = 1.0) -> None:
        """Take ``cost`` tokens from ``key``'s bucket, into debt if need be (never below ``-burst``)."""
        now = self.clock()
        b = self._buckets.get(key)
        if b is None:
            if len(self._buckets) >= self.max_clients:
                self._buckets.popitem(last=False)
            b = self._buckets[key] = [self.burst, now]
        else:
            self._buckets.move_to_end(key)
        have = min(self.burst, b[0] + (now - b[1]) * self.rate)
        b[0] = max(-self.burst, have - cost)
        b[1] = now

    def take(self, key: str) -> float:
        """One token if there is one (0.0 returned), else the seconds to wait (nothing taken)."""
        w = self.wait(key)
        if w == 0.0:
            self.charge(key)
        return w


@dataclass(frozen=True)
class Limits:
    """Requests per second and burst sizes; a rate of 0 switches that limit off."""

    rate: float
    burst: int
    anonymous_rate: float
    anonymous_burst: int


class RateLimiter:
    """The policy of the module docstring, apart from ASGI (``check`` before the route, ``settle`` after)."""

    def __init__(self, limits: Limits, max_clients: int = MAX_CLIENTS, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.credentials = TokenBuckets(limits.rate, limits.burst, max_clients, clock) if limits.rate > 0 else None
        self.addresses = (
            TokenBuckets(limits.anonymous_rate, limits.anonymous_burst, max_clients, clock) if limits.anonymous_rate > 0 else None
        )
        self.refused = 0

    @property
    def enabled(self) -> bool:
        return self.credentials is not None or self.addresses is not None

    def check(self, credential: Credential | None, address: str) -> tuple[float, str]:
        """(seconds to wait, which limit) before the request runs; (0.0, "") lets it through."""
        proven = False
        if credential is not None and self.credentials is not None:
            w = self.credentials.wait(credential.key)
            if w > 0:
                return w, "credential"
            proven = credential.secret and credential.key in self.credentials
        if self.addresses is not None and not proven:
            w = self.addresses.wait(address)
            if w > 0:
                return w, "address"
        return 0.0, ""

    def settle(self, credential: Credential | None, address: str, authenticated: bool) -> None:
        """Charge the request, once it was answered: to its credential if it authenticated, else to its address."""
        if authenticated and credential is not None:
            if self.credentials is not None:
                self.credentials.charge(credential.key)
            return
        if credential is not None and credential.secret and self.credentials is not None:
            self.credentials.forget(credential.key)  # a secret that failed is no longer proven
        if self.addresses is not None:
            self.addresses.charge(address)


@dataclass(frozen=True)
class Credential:
    """What a request claims to be: a bucket key, and whether the credential is a secret (a bearer
    token, which only its holder can send) or a public identifier (an enterprise key id)."""

    key: str
    secret: bool


def credential(kind: str, value: bytes | str, *, secret: bool) -> Credential:
    """A credential keyed by its kind and a hash, so no token sits in the bucket table."""
    raw = value.encode("latin-1", "replace") if isinstance(value, str) else value
    return Credential(f"{kind}:{hashlib.sha256(raw).hexdigest()[:32]}", secret)


def address_key(address: str) -> str:
    """IPv4 as is, IPv6 by its /64 (what one host or one customer usually holds)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64] or "-"
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/{IPV6_CLIENT_PREFIX}", strict=False))
    return str(ip)


def retry_after_seconds(wait: float) -> int:
    """``Retry-After`` is whole seconds: round up, at least 1."""
    return max(1, math.ceil(wait))


Refuse = Callable[[Scope, Send, int, str], Awaitable[None]]


class RateLimitMiddleware:
    """ASGI layer applying a ``RateLimiter``. Each app supplies what differs:

    - ``applies(scope)``: whether the request is limited at all (health probes and static files are not);
    - ``credential_of(scope)``: the ``Credential`` the request *claims*, or None;
    - ``address_of(scope)``: the client's address (before ``address_key``);
    - ``refuse(scope, send, retry_after, which)``: send the 429 in the app's error shape, with ``Retry-After``.

    A request counts as authenticated when the app's authentication left a ``principal`` in
    ``scope["state"]`` (both apps do).
    """

    def __init__(
        self,
        app: ASGIApp,
        limiter: RateLimiter,
        *,
        applies: Callable[[Scope], bool],
        credential_of: Callable[[Scope], Credential | None],
        address_of: Callable[[Scope], str],
        refuse: Refuse,
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.applies = applies
        self.credential_of = credential_of
        self.address_of = address_of
        self.refuse = refuse

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.limiter.enabled or not self.applies(scope):
            await self.app(scope, receive, send)
            return
        claimed = self.credential_of(scope)
        address = address_key(self.address_of(scope))
        wait, which = self.limiter.check(claimed, address)
        if wait > 0:
            self.limiter.refused += 1
            await self.refuse(scope, send, retry_after_seconds(wait), which)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            state = scope.get("state") or {}
            self.limiter.settle(claimed, address, state.get("principal") is not None)


def bearer_credential(scope: Scope) -> Credential | None:
    """The ``Authorization`` header's credential (a bearer token is a secret), or None."""
    for k, v in scope.get("headers") or ():
        if k == b"authorization":
            if v[:7].lower() == b"bearer ":
                return credential("token", v[7:].strip(), secret=True)
            return credential("authorization", v, secret=True)
    return None
