"""Who the client is, by address: the TCP peer, or, when the peer is a trusted reverse proxy, the
address that proxy saw (``X-Forwarded-For``).

A proxy *appends* the address it saw to whatever ``X-Forwarded-For`` the client sent, so only the
right-hand end of the list can be believed: the entries are read from the right, trusted proxies are
skipped, and the first address that is not a trusted proxy is the client. Taking the left-most entry
instead (a common mistake) lets any client choose the address it is audited and rate-limited under
by sending the header itself.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, MutableMapping
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_FORWARDED_ENTRIES = 32  # more hops than any real chain: the rest is ignored


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [2001:db8::1]:443
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # 192.0.2.1:443
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def peer_address(scope: MutableMapping[str, Any]) -> str:
    """The TCP peer's address, believed as is (no proxy in front); "-" when the server does not know
    it (a Unix socket, an in-process test client)."""
    return str((scope.get("client") or ("", 0))[0] or "") or "-"


class ClientAddress:
    def __init__(self, trusted_proxies: Iterable[str] = ()) -> None:
        self.trusted: list[Network] = [ipaddress.ip_network(p, strict=False) for p in trusted_proxies]

    def is_trusted(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None) -> bool:
        return ip is not None and any(ip in n for n in self.trusted)

    def __call__(self, scope: MutableMapping[str, Any]) -> str:
        peer = peer_address(scope)
        if not self.trusted or not self.is_trusted(_ip(peer)):
            return peer
        hops: list[str] = []
        for k, v in scope.get("headers") or ():
            if k == b"x-forwarded-for":
                hops.extend(h.strip() for h in v.decode("latin-1").split(","))
        for hop in reversed(hops[-MAX_FORWARDED_ENTRIES:]):
            ip = _ip(hop)
            if ip is None:
                break  # garbage in the chain: believe nothing further left
            if not self.is_trusted(ip):
                return str(ip)
        return peer
