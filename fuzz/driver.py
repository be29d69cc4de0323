"""Drive one protocol analyzer the way the flow layer does, from a fuzz input, checking every step.

The input is read with ``fuzz.records``: the selector picks a ``Mode`` (which analyzer, which
transport, which server port); each record is one segment, datagram or frame:

- control bit 0: sent by the client (else by the server);
- control bit 1: the analyzer is told bytes were lost in that direction (``gap``) before the chunk;
- control bits 2-7: for TCP, the chunk is fed in pieces of that many bytes (0: whole), so PDUs are
  split across segments at every offset; UDP and layer-2 payloads are always fed whole, as the flow
  layer does.

At the end the flow is closed. Every emitted event, the counters, the Wireshark-style statistics and
the framing buffer are checked (``fuzz.invariants``); the probe of the protocol is tried on the first
chunk of each direction and must answer a bool.
"""

from __future__ import annotations

from dataclasses import dataclass

from fuzz import records
from fuzz.invariants import InvariantViolation, check_counters, check_event, check_stats
from sensor.counters import Counters, ProtocolStats
from sensor.events import IcsEvent
from sensor.protocols import registry
from sensor.protocols.base import FramedStreamAnalyzer, ProtocolSpec, Session

T0 = 1_700_000_000.0
STEP = 0.125  # seconds between records (exact in binary, so ts comparisons are exact)
CLIENT_IP, SERVER_IP = "10.0.0.1", "10.0.0.2"
CLIENT_MAC, SERVER_MAC = "02:00:00:00:00:01", "02:00:00:00:00:02"
CLIENT_PORT = 40000


@dataclass(frozen=True)
class Mode:
    """One way of running an analyzer: the registry entry, the transport and the server port."""

    spec: str  # registry name
    transport: str  # "tcp", "udp" or "l2"
    port: int  # server port, or the ethertype/SAP for layer 2


def modes_of(*names: str) -> tuple[Mode, ...]:
    """Every (transport, port) a registry entry is registered on, in a stable order."""
    reg = registry()
    out: list[Mode] = []
    for name in names:
        spec = reg.specs[name]
        out += [Mode(name, "tcp", p) for p in sorted(spec.tcp_ports)]
        out += [Mode(name, "udp", p) for p in sorted(spec.udp_ports)]
        out += [Mode(name, "l2", e) for e in sorted(spec.ethertypes)]
    return tuple(out)


class FlowRun:
    """One flow of one analyzer, fed by hand, with every report checked as it arrives."""

    def __init__(self, mode: Mode) -> None:
        self.spec: ProtocolSpec = registry().specs[mode.spec]
        self.mode = mode
        self.protocols = frozenset(self.spec.report_names) | {self.spec.name}
        self.stats = ProtocolStats()
        self.counters = Counters()
        self.events: list[IcsEvent] = []
        if mode.transport == "l2":
            client, server = (CLIENT_MAC, mode.port), (SERVER_MAC, mode.port)
        else:
            client, server = (CLIENT_IP, CLIENT_PORT), (SERVER_IP, mode.port)
        self.session = Session(
            7,
            mode.transport,
            client[0],
            client[1],
            server[0],
            server[1],
            self.stats,
            self.counters,
            self._sink,
            CLIENT_MAC,
            SERVER_MAC,
        )
        self.analyzer = self.spec.analyzer(self.session)
        self.framed = isinstance(self.analyzer, FramedStreamAnalyzer)
        self.fed = 0  # bytes given, both directions
        self.ts = T0
        self.timestamps: set[float] = set()
        self.probed = {True: False, False: False}

    def _sink(self, ev: IcsEvent) -> None:
        check_event(ev, self.session, self.protocols, self.fed, self.timestamps, T0)
        self.events.append(ev)

    def record(self, ctl: int, chunk: bytes) -> None:
        from_client = bool(ctl & 1)
        self.ts += STEP
        self.timestamps.add(self.ts)
        if ctl & 2:
            self.analyzer.gap(from_client, self.ts)
        if self.spec.probe is not None and chunk and not self.probed[from_client]:
            self.probed[from_client] = True
            verdict = self.spec.probe(chunk, from_client)
            if not isinstance(verdict, bool):
                raise InvariantViolation(f"probe answered {verdict!r}, not a bool")
        if self.mode.transport == "tcp":
            if not chunk:
                return  # reassembly never delivers empty data
            step = ctl >> 2 or len(chunk)
            for i in range(0, len(chunk), step):
                piece = chunk[i : i + step]
                self.fed += len(piece)
                self.analyzer.feed(from_client, piece, self.ts)
                self._check_buffer()
        else:
            if not chunk and self.mode.transport == "udp":
                return  # the flow table drops empty datagrams
            self.fed += len(chunk)
            self.analyzer.feed(from_client, chunk, self.ts)
        check_counters(self.counters)

    def _check_buffer(self) -> None:
        """The framing buffer holds bytes given, at most its cap (plain ``if``s: this runs per piece)."""
        a = self.analyzer
        if self.framed:
            assert isinstance(a, FramedStreamAnalyzer)
            for pending in a._buf.values():
                if type(pending) is not bytes or len(pending) > a.max_buffer or len(pending) > self.fed:
                    raise InvariantViolation(
                        f"framing buffer: {type(pending).__name__} of {len(pending)} bytes, "
                        f"cap {a.max_buffer}, {self.fed} bytes given"
                    )

    def close(self) -> None:
        self.ts += STEP
        self.timestamps.add(self.ts)
        self.analyzer.close(self.ts)
        check_counters(self.counters)
        check_stats(self.stats, self.protocols)


# Counters that say the analyzer resynchronised on a segment boundary (or dropped a buffer at its
# cap): after these, how the stream was cut legitimately changes what is parsed.
SEGMENTATION_SENSITIVE = (
    "bad_framing",
    "bad_message",
    "resync",
    "junk",
    "_cap",
    "oversized",
    "too_long",
    "bad_length_indicator",
)


def _signature(ev: IcsEvent) -> tuple:
    """What an event says about the stream, without when it was seen (ts, latency) or its id."""
    return (
        ev.protocol, ev.direction, ev.function, ev.function_name, ev.category, ev.unit, ev.address,
        ev.quantity, repr(ev.values), ev.objects, ev.result, ev.code, ev.anomaly, repr(ev.fields), ev.size,
    )  # fmt: skip


def _sensitive(flow: FlowRun) -> bool:
    return any(any(mark in name for mark in SEGMENTATION_SENSITIVE) for name, n in flow.counters.items() if n)


def run(modes: tuple[Mode, ...], data: bytes) -> FlowRun:
    """Feed one fuzz input to the analyzer its selector picks; return the finished run.

    For TCP, when the input cut segments into pieces, the same records are fed again whole: as long
    as neither run had to resynchronise, both must report the same events and the same PDU counts
    (framing must not depend on where TCP cut the stream; it also pits fast paths for whole PDUs
    against the general buffered path)."""
    selector, recs = records.split(data)
    mode = modes[selector % len(modes)]
    recs = list(recs)
    flow = FlowRun(mode)
    for ctl, chunk in recs:
        flow.record(ctl, chunk)
    flow.close()
    if mode.transport == "tcp" and any(ctl >> 2 for ctl, chunk in recs if len(chunk) > 1):
        whole = FlowRun(mode)
        for ctl, chunk in recs:
            whole.record(ctl & 0x03, chunk)
        whole.close()
        if not _sensitive(flow) and not _sensitive(whole):
            split_events = [_signature(e) for e in flow.events]
            whole_events = [_signature(e) for e in whole.events]
            if split_events != whole_events:
                diff = next((i for i, (a, b) in enumerate(zip(split_events, whole_events)) if a != b), None)
                raise InvariantViolation(
                    f"events depend on how TCP cut the stream: {len(split_events)} events cut, "
                    f"{len(whole_events)} whole; first difference at {diff}: "
                    f"{split_events[diff] if diff is not None else split_events[len(whole_events) :][:1]} vs "
                    f"{whole_events[diff] if diff is not None else whole_events[len(split_events) :][:1]}"
                )
            if flow.stats.pdus != whole.stats.pdus or flow.stats.funcs != whole.stats.funcs:
                raise InvariantViolation(f"PDU counts depend on the cut: {flow.stats.pdus} vs {whole.stats.pdus}")
    return flow
