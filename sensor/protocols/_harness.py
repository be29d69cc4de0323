"""Drive one analyzer with hand-built bytes, for unit tests (no capture, no flow table)."""

from __future__ import annotations

from typing import Iterable

from sensor.counters import Counters, ProtocolStats
from sensor.events import IcsEvent
from sensor.protocols.base import Analyzer, Session


class Harness:
    """One flow between a client and a server feeding an analyzer; collects what it reports."""

    def __init__(
        self,
        analyzer_cls: type[Analyzer],
        transport: str = "tcp",
        client: tuple[str, int] = ("10.0.0.1", 40000),
        server: tuple[str, int] = ("10.0.0.2", 502),
    ) -> None:
        self.events: list[IcsEvent] = []
        self.stats = ProtocolStats()
        self.counters = Counters()
        self.session = Session(
            1, transport, client[0], client[1], server[0], server[1], self.stats, self.counters, self.events.append
        )
        self.analyzer = analyzer_cls(self.session)

    def client(self, data: bytes, ts: float = 1.0) -> list[IcsEvent]:
        return self._feed(True, data, ts)

    def server(self, data: bytes, ts: float = 1.0) -> list[IcsEvent]:
        return self._feed(False, data, ts)

    def _feed(self, from_client: bool, data: bytes, ts: float) -> list[IcsEvent]:
        before = len(self.events)
        self.analyzer.feed(from_client, data, ts)
        return self.events[before:]

    def feed_all(self, chunks: Iterable[tuple[bool, bytes, float]]) -> list[IcsEvent]:
        for from_client, data, ts in chunks:
            self.analyzer.feed(from_client, data, ts)
        return self.events
