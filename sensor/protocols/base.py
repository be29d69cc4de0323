"""The contract between the flow layer and one protocol module.

A protocol module (one file under ``sensor/protocols/``) declares a ``SPEC = ProtocolSpec(...)`` naming
its ports, an optional payload probe (for traffic on non-standard ports) and its ``Analyzer`` class.
The registry (``sensor.protocols``) discovers modules by themselves: adding a protocol is adding one
file.

One Analyzer instance serves one flow (both directions). The flow layer calls:

- ``feed(from_client, data, ts)``: for TCP, the next in-order bytes of that direction (any split: a
  segment may hold several PDUs and a PDU may span segments); for UDP and layer-2 protocols, one whole
  datagram / frame payload.
- ``gap(from_client, ts)``: bytes of that direction were lost (capture loss, reassembly cap); the
  analyzer must drop partial state and resynchronise on the next data.
- ``close(ts)``: the flow ended (FIN/RST, idle timeout, end of capture).

Analyzers report through their ``Session``: ``session.emit(event)`` for IcsEvents,
``session.stats.pdu()/func()`` for Wireshark-style counting, ``session.anomaly(name)`` for named
anomalies (malformed PDUs, bad CRCs, caps). They never raise: a parse error is an anomaly, and any
exception that escapes is caught by the flow layer, counted as ``analyzer_error_<protocol>``, and the
analyzer is detached from that flow (the rest of the capture keeps flowing).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from sensor.counters import Counters, ProtocolStats
from sensor.events import IcsEvent

if TYPE_CHECKING:
    from sensor.budget import HeldBytes

# A probe looks at the first payload bytes seen in a flow and says whether they are this protocol.
Probe = Callable[[bytes, bool], bool]  # (payload, from_client) -> match


MAX_LATENCY = 3600.0  # seconds: a "response" later than this is a capture clock step, not a slow device


def pair_latency(request_ts: float, response_ts: float) -> float | None:
    """Seconds from a request to its response, or None when the capture clock stepped between them:
    negative (a clock restart, merged captures) or over ``MAX_LATENCY`` (a packet dated 2100). Pairing
    itself goes by transaction ids and sequence numbers, never by time, so it is not affected."""
    d = response_ts - request_ts
    return d if 0.0 <= d <= MAX_LATENCY else None


class Session:
    """What an analyzer knows about its flow and where it reports. Built once per flow."""

    __slots__ = (
        "flow_id",
        "transport",
        "client_ip",
        "client_port",
        "server_ip",
        "server_port",
        "client_mac",
        "server_mac",
        "stats",
        "counters",
        "events",
        "_sink",
        "budget",
    )

    def __init__(
        self,
        flow_id: int,
        transport: str,
        client_ip: str,
        client_port: int,
        server_ip: str,
        server_port: int,
        stats: ProtocolStats,
        counters: Counters,
        sink: Callable[[IcsEvent], None],
        client_mac: str | None = None,
        server_mac: str | None = None,
        budget: HeldBytes | None = None,
    ) -> None:
        self.flow_id = flow_id
        self.transport = transport
        self.client_ip = client_ip
        self.client_port = client_port
        self.server_ip = server_ip
        self.server_port = server_port
        self.client_mac = client_mac
        self.server_mac = server_mac
        self.stats = stats
        self.counters = counters
        self.events = 0  # events emitted on this flow (the summary's talker table)
        self._sink = sink
        self.budget = budget  # the global cap on bytes held waiting for more (sensor/budget.py)

    def hold(self, owner: Any, nbytes: int, ts: float) -> None:
        """``owner`` (an analyzer) now holds ``nbytes`` of partial PDUs / fragments / chunks in total.
        Analyzers call it whenever that amount changes; without a budget (unit tests) it does nothing."""
        budget = self.budget
        if budget is not None:
            budget.hold(owner, nbytes, ts)

    def emit(self, event: IcsEvent) -> None:
        self.events += 1
        self._sink(event)

    def anomaly(self, name: str, n: int = 1) -> None:
        self.counters[name] += n

    def event(
        self,
        from_client: bool,
        ts: float,
        protocol: str,
        direction: str,
        function: int,
        function_name: str,
        category: str,
        **extra: object,
    ) -> IcsEvent:
        """Build an event with this flow's addresses filled in for the given direction, emit it, return it."""
        if from_client:
            src, sport, dst, dport = self.client_ip, self.client_port, self.server_ip, self.server_port
            smac, dmac = self.client_mac, self.server_mac
        else:
            src, sport, dst, dport = self.server_ip, self.server_port, self.client_ip, self.client_port
            smac, dmac = self.server_mac, self.client_mac
        ev = IcsEvent(
            ts,
            protocol,
            src,
            sport,
            dst,
            dport,
            self.transport,
            direction,
            function,
            function_name,
            category,
            flow_id=self.flow_id,
            src_mac=smac,
            dst_mac=dmac,
            **extra,  # type: ignore[arg-type]
        )
        self.events += 1
        self._sink(ev)
        return ev


class Analyzer:
    """Base class of a per-flow protocol analyzer. Subclasses override ``feed`` (and usually ``gap``)."""

    protocol: ClassVar[str] = "unknown"
    _held_reported = 0  # bytes last reported to the global budget (an instance attribute once set)

    def __init__(self, session: Session) -> None:
        self.session = session

    def feed(self, from_client: bool, data: bytes, ts: float) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def gap(self, from_client: bool, ts: float) -> None:
        """Bytes were lost in this direction. Default: nothing buffered, nothing to do."""

    def close(self, ts: float) -> None:
        """The flow ended. Default: nothing to flush."""

    def held_bytes(self) -> int:
        """Bytes this analyzer holds waiting for more of them (partial PDUs, fragments, chunks).
        Analyzers that buffer override it and call ``report_held`` where that amount changes."""
        return 0

    def report_held(self, ts: float) -> None:
        """Tell the global buffer budget (``sensor/budget.py``) what this analyzer holds now."""
        n = self.held_bytes()
        if n != self._held_reported:
            self._held_reported = n
            self.session.hold(self, n, ts)

    def shed(self, ts: float) -> None:
        """The global buffer budget is full and this analyzer's partial state has waited longest: drop
        it, exactly as if both directions had lost bytes in the capture (counted by ``gap``)."""
        self.gap(True, ts)
        self.gap(False, ts)
        self._held_reported = 0  # the budget forgets this holder once it is shed


class FramedStreamAnalyzer(Analyzer):
    """Helper for TCP protocols whose PDUs carry their own length (MBAP, TPKT, APCI, ENIP, OPC UA, DNP3).

    Subclasses implement ``frame_length(buf, off)`` and ``on_pdu(from_client, pdu, ts)``. Partial PDUs
    are buffered per direction up to ``max_buffer`` bytes (then counted as ``<protocol>_buffer_cap``
    and dropped); undecodable framing is counted as ``<protocol>_bad_framing`` and the rest of that
    buffer is discarded until the next ``feed`` (resynchronisation on the next segment boundary).
    """

    max_buffer: ClassVar[int] = 65536 + 1024

    def __init__(self, session: Session) -> None:
        super().__init__(session)
        self._buf: dict[bool, bytes] = {True: b"", False: b""}

    def frame_length(self, buf: bytes, off: int) -> int | None:  # pragma: no cover - abstract
        """Total length of the PDU starting at ``buf[off]``: None = need more bytes, <= 0 = not a PDU."""
        raise NotImplementedError

    def on_pdu(self, from_client: bool, pdu: memoryview, ts: float) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def on_bad_framing(self, from_client: bool, data: memoryview, ts: float) -> None:
        """Called with the bytes that could not be framed (already counted). Override to look inside."""

    def feed(self, from_client: bool, data: bytes, ts: float) -> None:
        pending = self._buf[from_client]
        buf = pending + data if pending else data
        n = len(buf)
        off = 0
        view = memoryview(buf)
        frame_length = self.frame_length
        while off < n:
            length = frame_length(buf, off)
            if length is None:
                break
            if length <= 0:
                self.session.anomaly(self.protocol + "_bad_framing")
                self.on_bad_framing(from_client, view[off:], ts)
                off = n
                break
            if off + length > n:
                break
            self.on_pdu(from_client, view[off : off + length], ts)
            off += length
        rest = buf[off:] if off < n else b""
        if len(rest) > self.max_buffer:
            self.session.anomaly(self.protocol + "_buffer_cap")
            rest = b""
        self._buf[from_client] = rest
        if rest or pending:  # what this flow holds may have changed: tell the global budget
            self.report_held(ts)

    def held_bytes(self) -> int:
        """Bytes held waiting for more: partial PDUs (subclasses add their own reassembly)."""
        return len(self._buf[True]) + len(self._buf[False])

    def gap(self, from_client: bool, ts: float) -> None:
        if self._buf[from_client]:
            self.session.anomaly(self.protocol + "_partial_pdu_lost")
        self._buf[from_client] = b""

    def close(self, ts: float) -> None:
        for side in (True, False):
            if self._buf[side]:
                self.session.anomaly(self.protocol + "_truncated_at_close")
                self._buf[side] = b""


@dataclass(frozen=True)
class ProtocolSpec:
    """A registry entry: how the flow layer finds this protocol and which analyzer serves it."""

    name: str
    analyzer: type[Analyzer]
    tcp_ports: frozenset[int] = field(default_factory=frozenset)
    udp_ports: frozenset[int] = field(default_factory=frozenset)
    # layer-2 protocols (GOOSE, PROFINET DCP); values below 0x0600 are 802.2 LLC SAPs (BACnet/Ethernet: 0x82)
    ethertypes: frozenset[int] = field(default_factory=frozenset)
    probe: Probe | None = None  # payload signature, tried on flows whose port is not registered
    probe_order: int = 100  # lower first: stricter probes before looser ones
    reports: tuple[str, ...] = ()  # protocol names this analyzer counts under (default: (name,))
    deep: bool = True  # False for identification-only protocols

    @property
    def report_names(self) -> tuple[str, ...]:
        return self.reports or (self.name,)
