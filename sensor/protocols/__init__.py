"""Protocol registry: every module in this package that defines ``SPEC`` is a protocol.

Adding a protocol is adding one module; nothing else is edited. Modules whose name starts with ``_``
and ``base`` are not protocols.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache

from sensor.protocols.base import Analyzer, FramedStreamAnalyzer, ProtocolSpec, Session

__all__ = ["Analyzer", "FramedStreamAnalyzer", "ProtocolSpec", "Session", "Registry", "registry"]


class Registry:
    """Lookup tables built once from the discovered specs."""

    def __init__(self, specs: list[ProtocolSpec]) -> None:
        self.specs = {s.name: s for s in specs}
        self.tcp: dict[int, ProtocolSpec] = {}
        self.udp: dict[int, ProtocolSpec] = {}
        self.ether: dict[int, ProtocolSpec] = {}
        for spec in specs:
            for port in spec.tcp_ports:
                self._claim(self.tcp, port, spec, "tcp")
            for port in spec.udp_ports:
                self._claim(self.udp, port, spec, "udp")
            for et in spec.ethertypes:
                self._claim(self.ether, et, spec, "ethertype")
        ordered = sorted((s for s in specs if s.probe is not None), key=lambda s: (s.probe_order, s.name))
        self.probes: tuple[ProtocolSpec, ...] = tuple(ordered)

    @staticmethod
    def _claim(table: dict[int, ProtocolSpec], key: int, spec: ProtocolSpec, what: str) -> None:
        other = table.get(key)
        if other is not None and other.name != spec.name:
            raise RuntimeError(f"{what} {key} claimed by both {other.name} and {spec.name}")
        table[key] = spec

    def probe(self, payload: bytes, from_client: bool) -> ProtocolSpec | None:
        for spec in self.probes:
            try:
                if spec.probe(payload, from_client):  # type: ignore[misc]
                    return spec
            except Exception:  # a probe must never take the sensor down
                continue
        return None

    def report_names(self) -> list[str]:
        names: list[str] = []
        for spec in self.specs.values():
            for n in spec.report_names:
                if n not in names:
                    names.append(n)
        return names


def discover() -> list[ProtocolSpec]:
    specs: list[ProtocolSpec] = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_") or info.name == "base":
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        spec = getattr(module, "SPEC", None)
        if isinstance(spec, ProtocolSpec):
            specs.append(spec)
        for extra in getattr(module, "EXTRA_SPECS", ()):
            specs.append(extra)
    return specs


@lru_cache(maxsize=1)
def registry() -> Registry:
    return Registry(discover())
