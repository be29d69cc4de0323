"""Named lists (``allowed_masters``, ``engineering_workstations``, ...) and address matching.

Lists come from the config (``rules.lists``) and from a lists file (``rules.lists_file``: a YAML
mapping ``lists: {name: [entries]}`` or just ``{name: [entries]}``); a name defined in the config
replaces the same name from the file. Entries are IP addresses, CIDR networks, or (for non-address
fields such as ``unit`` or ``dport``) plain values.

Address matching is on the hot path (``src|list: allowed_masters`` is evaluated for every Modbus
write), so an ``IpMatcher`` is a dict from address string to verdict: a hit is one C-level dict
lookup; only the first sight of an address walks the networks (``__missing__``). The memo is bounded
(cleared when full) so a scan of a /16 cannot grow it without end.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from detectors.rules import yamlpos

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

MEMO_CAP = 65536


class ListError(Exception):
    """A lists file or entry that cannot be used; the message says where."""


def parse_network(text: str) -> Network:
    """``10.0.0.5`` -> 10.0.0.5/32, ``10.0.0.0/8`` -> the network; raises ValueError."""
    return ipaddress.ip_network(str(text).strip(), strict=False)


def canonical_ip(text: str) -> str:
    """The text form the sensor uses for an address (IPv6 compressed, lower case)."""
    return str(ipaddress.ip_address(str(text).strip()))


class IpMatcher(dict):
    """``matcher[ip]`` is True when the address is in one of the networks. Memoised, bounded."""

    __slots__ = ("exact", "networks")

    def __init__(self, networks: Iterable[Network]) -> None:
        super().__init__()
        nets = list(networks)
        # Host entries are answered by set membership, without building ip_address objects.
        self.exact = frozenset(str(n.network_address) for n in nets if n.num_addresses == 1)
        self.networks = tuple(n for n in nets if n.num_addresses > 1)

    def __missing__(self, ip: Any) -> bool:
        verdict = self._compute(ip)
        if len(self) >= MEMO_CAP:
            self.clear()
        self[ip] = verdict
        return verdict

    def _compute(self, ip: Any) -> bool:
        if ip is None:
            return False
        if ip in self.exact:
            return True
        if not self.networks:
            return False
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        for net in self.networks:
            if addr.version == net.version and addr in net:
                return True
        return False

    def __repr__(self) -> str:
        return f"IpMatcher({sorted(self.exact)}, {[str(n) for n in self.networks]})"


class NamedLists:
    """The named lists a rule set may refer to, with their source for error messages."""

    def __init__(self, lists: dict[str, list[Any]] | None = None, sources: dict[str, str] | None = None) -> None:
        self.lists: dict[str, list[Any]] = dict(lists or {})
        self.sources: dict[str, str] = dict(sources or {})
        self._ip_cache: dict[str, IpMatcher] = {}

    @classmethod
    def from_config(cls, lists: dict[str, list[Any]] | None, lists_file: str | Path | None) -> NamedLists:
        merged: dict[str, list[Any]] = {}
        sources: dict[str, str] = {}
        if lists_file:
            for name, entries in load_lists_file(lists_file).items():
                merged[name] = entries
                sources[name] = str(lists_file)
        for name, entries in (lists or {}).items():
            merged[name] = list(entries)
            sources[name] = "config rules.lists"
        return cls(merged, sources)

    def __contains__(self, name: object) -> bool:
        return name in self.lists

    def names(self) -> list[str]:
        return sorted(self.lists)

    def networks(self, name: str) -> list[Network]:
        """The list's entries as networks; raises ListError naming the bad entry."""
        out = []
        for entry in self.lists[name]:
            try:
                out.append(parse_network(entry))
            except ValueError:
                raise ListError(
                    f"list {name!r} ({self.sources.get(name, '?')}): {entry!r} is not an IP address or CIDR network"
                ) from None
        return out

    def ip_matcher(self, name: str) -> IpMatcher:
        m = self._ip_cache.get(name)
        if m is None:
            m = IpMatcher(self.networks(name))
            self._ip_cache[name] = m
        return m

    def values(self, name: str) -> frozenset[Any]:
        return frozenset(self.lists[name])


def load_lists_file(path: str | Path) -> dict[str, list[Any]]:
    """Read a lists file: ``lists: {name: [entries]}`` (or the mapping itself)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ListError(f"{p}: cannot read lists file: {exc.strerror}") from None
    try:
        data = yamlpos.load(text)
    except yamlpos.YamlSyntaxError as exc:
        raise ListError(f"{p}:{exc.line}: invalid YAML: {exc.message}") from None
    if data is None:
        return {}
    if isinstance(data, dict) and set(data) == {"lists"}:
        data = data["lists"] or {}
    if not isinstance(data, dict):
        raise ListError(f"{p}: expected a mapping of list names to entries")
    out: dict[str, list[Any]] = {}
    for name, entries in data.items():
        line = data.line_of(name) if isinstance(data, yamlpos.LineDict) else 0
        if not isinstance(name, str):
            raise ListError(f"{p}:{line}: list names must be strings, got {name!r}")
        if entries is None:
            entries = []
        if not isinstance(entries, list) or any(isinstance(e, (list, dict)) for e in entries):
            raise ListError(f"{p}:{line}: list {name!r}: expected a list of addresses or values")
        out[name] = list(entries)
    return out
