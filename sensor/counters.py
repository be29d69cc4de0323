"""Counters: every stage counts what it saw, dropped and why, under stable names.

Two kinds are kept per run:
- ``Counters``: named anomaly / drop / cap counters (``tcp_gap``, ``modbus_bad_length``, ...). Names are
  a stable vocabulary (see docs/counters.md); they appear in the replay summary, the API and /metrics.
- ``ProtocolStats``: per protocol, PDUs and a function histogram, counted the way Wireshark counts
  (one PDU per wire PDU, keys like ``"3"`` or ``"apci:0"``), which is what ``icswatch inspect`` reports.
"""

from __future__ import annotations

from collections import Counter
from typing import Any


class Counters(Counter):  # type: ignore[type-arg]
    """Named counters (anomalies, drops, caps hit). ``counters["tcp_gap"] += 1``."""

    def add(self, name: str, n: int = 1) -> None:
        self[name] += n

    def as_dict(self) -> dict[str, int]:
        return {k: int(v) for k, v in sorted(self.items()) if v}


class ProtocolStats:
    """Per-protocol PDU counts and function histograms, Wireshark-style."""

    __slots__ = ("pdus", "funcs", "talkers")

    def __init__(self) -> None:
        self.pdus: Counter[str] = Counter()
        self.funcs: dict[str, Counter[str]] = {}
        # (protocol, client ip, server ip) -> PDUs: for the summary's talker table
        self.talkers: Counter[tuple[str, str, str]] = Counter()

    def pdu(self, protocol: str, n: int = 1) -> None:
        self.pdus[protocol] += n

    def hist(self, protocol: str) -> Counter[str]:
        """The function histogram of a protocol, for analyzers that count inline."""
        hist = self.funcs.get(protocol)
        if hist is None:
            hist = self.funcs[protocol] = Counter()
        return hist

    def func(self, protocol: str, key: str, n: int = 1) -> None:
        hist = self.funcs.get(protocol)
        if hist is None:
            hist = self.funcs[protocol] = Counter()
        hist[key] += n

    def merge(self, other: "ProtocolStats") -> None:
        self.pdus.update(other.pdus)
        for proto, hist in other.funcs.items():
            self.funcs.setdefault(proto, Counter()).update(hist)
        self.talkers.update(other.talkers)

    def as_ground_truth(self) -> dict[str, Any]:
        """The ``protocols`` object of GROUND_TRUTH.json: {proto: {"pdus": n, "func_hist": {...}}}."""
        out: dict[str, Any] = {}
        for proto in sorted(set(self.pdus) | set(self.funcs)):
            hist = {k: int(v) for k, v in sorted(self.funcs.get(proto, Counter()).items()) if v}
            pdus = int(self.pdus.get(proto, 0))
            if pdus or hist:
                out[proto] = {"pdus": pdus, "func_hist": hist}
        return out
