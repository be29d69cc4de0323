"""TCP reassembly and the flow table, driven by fuzzed segments (sequence numbers, flags, payloads).

Records (``fuzz.records``) are segments: the chunk is ``[flags][seq: 4][ack: 4][payload]`` (short
chunks are zero-padded). Control byte: bit 0 sent by the client; bits 1-2 the client port (four
flows compete for a table of two, so eviction runs); bit 3 a UDP datagram instead; bit 4 the clock
jumps past the idle timeout and idle flows are swept; bits 5-7 the capture cut that many times 7
bytes off the segment (snaplen). The selector picks the server port among the registered ones and
two unregistered ones (payload probing).

Two checks on the same segments:
1. ``TcpStream`` alone (one per direction): every delivered byte is a byte some segment carried at
   that sequence number, never more bytes than given, the out-of-order buffer stays under its cap
   and its byte count is exact; at the end nothing stays buffered.
2. The whole ``FlowTable`` with the real registry: no analyzer error (the flow layer would hide it
   as ``analyzer_error_<protocol>``), consistent flow count and keys, bounded buffers, the
   sensor-wide budget of held bytes (kept small, so it sheds) accounting exactly for what its
   holders hold, and events that pass the same checks as in the protocol targets; after
   ``close_all`` the table is empty and the budget holds nothing.
"""

from __future__ import annotations

import struct

from fuzz import records
from fuzz.invariants import InvariantViolation, check_counters, check_event, check_stats, require
from sensor.config_types import SensorLimits
from sensor.counters import Counters
from sensor.events import IcsEvent
from sensor.flows import FlowTable
from sensor.protocols import registry
from sensor.reassembly import TcpStream

T0 = 1_700_000_000.0
STEP = 0.125
IDLE_JUMP = 700.0  # past the TCP idle timeout (600 s) and the UDP one (120 s)
CLIENT, SERVER = bytes((10, 0, 0, 1)), bytes((10, 0, 0, 2))
CLIENT_MAC, SERVER_MAC = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")
STREAM_BUFFER = 256  # small caps so the fuzzer reaches the cap paths with small inputs
HELD_BYTES = 1024  # the sensor-wide budget of held bytes (sensor/budget.py): shedding runs too
LIMITS = SensorLimits(
    max_flows=2, max_flow_buffer=STREAM_BUFFER, max_buffered_bytes=HELD_BYTES, signature_probe_bytes=64
)
_SEG = struct.Struct("!BII")
_REG = registry()
PORTS = tuple(sorted(set(_REG.tcp) | set(_REG.udp))) + (5020, 1024)
ALL_PROTOCOLS = frozenset(n for s in _REG.specs.values() for n in (s.name, *s.report_names)) | {"tcp"}
MOD = 1 << 32


def _segment(chunk: bytes) -> tuple[int, int, int, bytes]:
    head = chunk[:9].ljust(9, b"\0")
    flags, seq, ack = _SEG.unpack(head)
    return flags, seq, ack, chunk[9:]


class _StreamCheck:
    """One TcpStream and what it must deliver: only bytes seen at their sequence numbers, once each.

    The checker keeps its own position (where the next delivery starts) instead of reading the
    stream's ``next_seq`` during a delivery, so it does not depend on whether the stream moves
    ``next_seq`` before or after calling ``deliver``: the position is the stream's ``next_seq`` when a
    call into the stream starts and when a gap is declared (delivery resumes there), and advances by
    what is delivered.
    """

    def __init__(self) -> None:
        self.seen: dict[int, set[int]] = {}
        self.given = 0
        self.delivered = 0
        self.positions: set[int] = set()  # sequence numbers delivered since the last resync
        self.counters = Counters()
        self.jumps = 0
        self.pos: int | None = None
        self.stream = TcpStream(self._deliver, self._gap, self.counters, STREAM_BUFFER)

    def _deliver(self, data: bytes, ts: float) -> None:
        start = self.pos
        if start is None:
            raise InvariantViolation("delivery before the stream has a position")
        if not data:
            raise InvariantViolation("empty delivery")
        if self.counters["tcp_seq_jump"] != self.jumps:  # a resync may legitimately go back
            self.jumps = self.counters["tcp_seq_jump"]
            self.positions.clear()
        for i, byte in enumerate(data):
            pos = (start + i) % MOD
            values = self.seen.get(pos)
            if values is None or byte not in values:
                raise InvariantViolation(f"delivered byte {byte} at seq {pos} was never sent there")
            if pos in self.positions:
                raise InvariantViolation(f"seq {pos} delivered twice")
            self.positions.add(pos)
        self.pos = (start + len(data)) % MOD
        self.delivered += len(data)
        if self.delivered > self.given:
            raise InvariantViolation(f"{self.delivered} bytes delivered out of {self.given} given")

    def _gap(self, ts: float) -> None:
        self.pos = self.stream.next_seq  # delivery resumes where the stream now stands

    def segment(self, flags: int, seq: int, payload: bytes, ts: float, wire_len: int | None) -> None:
        for i, byte in enumerate(payload):
            self.seen.setdefault((seq + i) % MOD, set()).add(byte)
        self.given += len(payload)
        if flags & 0x02:
            self.stream.syn(seq)
        self.pos = seq if self.stream.next_seq is None else self.stream.next_seq
        self.stream.segment(seq, payload, ts, wire_len)
        self.check()

    def acked(self, ack: int, ts: float) -> None:
        self.pos = self.stream.next_seq
        self.stream.acked(ack, ts)
        self.check()

    def flush(self, ts: float) -> None:
        self.pos = self.stream.next_seq
        self.stream.flush(ts)
        if self.stream.pending or self.stream.pending_bytes:
            raise InvariantViolation("data left buffered after flush")

    def check(self) -> None:
        s = self.stream
        if s.next_seq is not None and not 0 <= s.next_seq < MOD:
            raise InvariantViolation(f"next_seq {s.next_seq}")
        if s.pending_bytes != sum(map(len, s.pending.values())):
            raise InvariantViolation("pending byte count is off")
        if s.pending_bytes > STREAM_BUFFER:
            raise InvariantViolation(f"{s.pending_bytes} bytes buffered, cap {STREAM_BUFFER}")


def _check_streams(segments: list[tuple[bool, int, int, int, bytes, float, int | None]]) -> None:
    sides = {True: _StreamCheck(), False: _StreamCheck()}
    for from_client, flags, seq, ack, payload, ts, wire_len in segments:
        sides[from_client].segment(flags, seq, payload, ts, wire_len)
        if flags & 0x10:
            sides[not from_client].acked(ack, ts)
    for side in sides.values():
        side.flush(T0)


class _TableCheck:
    def __init__(self) -> None:
        self.table = FlowTable(_REG, LIMITS, self._sink)
        self.timestamps: set[float] = set()
        self.given = 0

    def _sink(self, ev: IcsEvent) -> None:
        require(isinstance(ev, IcsEvent), f"emitted {type(ev).__name__}")
        for flow, _ in self.table.flows.values():
            if flow.id == ev.flow_id:
                break
        else:
            raise InvariantViolation(f"event of flow {ev.flow_id}, which is not in the table")
        assert flow.session is not None
        protocols = ALL_PROTOCOLS if flow.spec is None else {"tcp", flow.spec.name, *flow.spec.report_names}
        check_event(ev, flow.session, protocols, self.given, self.timestamps, T0)

    def check(self) -> None:
        t = self.table
        if t.errors:
            raise InvariantViolation("an analyzer raised (the flow layer caught it):\n" + t.errors[0])
        check_counters(t.counters)
        flows = {id(f): f for f, _ in t.flows.values()}
        require(t.count == len(flows) and len(t.flows) == 2 * t.count, f"count {t.count}, {len(t.flows)} keys")
        require(t.count <= LIMITS.max_flows, f"{t.count} flows, cap {LIMITS.max_flows}")
        for f in flows.values():
            for stream in f.streams or ():
                require(stream.pending_bytes <= STREAM_BUFFER, f"flow buffer {stream.pending_bytes}")
        budget = t.budget
        held = sum(budget.holders.values())
        if budget.total != held or any(n <= 0 for n in budget.holders.values()):
            raise InvariantViolation(f"budget total {budget.total}, its holders hold {held}")


def test_one_input(data: bytes) -> None:
    selector, recs = records.split(data)
    server_port = PORTS[selector % len(PORTS)]
    check = _TableCheck()
    table = check.table
    ts = T0
    tcp_segments = []
    for ctl, chunk in recs:
        from_client = bool(ctl & 1)
        client_port = 40000 + ((ctl >> 1) & 3)
        flags, seq, ack, payload = _segment(chunk)
        ts += STEP
        if ctl & 0x10:
            ts += IDLE_JUMP
        table.now = ts - T0
        check.timestamps.add(ts)
        check.given += len(payload)
        src, dst, sport, dport = (CLIENT, SERVER, client_port, server_port)
        smac, dmac = CLIENT_MAC, SERVER_MAC
        if not from_client:
            src, dst, sport, dport, smac, dmac = dst, src, dport, sport, dmac, smac
        if ctl & 0x08:
            table.udp(src, dst, sport, dport, payload, ts, smac, dmac)
        else:
            wire_len = len(payload) + 7 * (ctl >> 5)
            table.tcp(src, dst, sport, dport, seq, ack, flags, payload, wire_len, ts, smac, dmac)
            tcp_segments.append((from_client, flags, seq, ack, payload, ts, wire_len if ctl >> 5 else None))
        if ctl & 0x10:
            table.expire(ts)
        check.check()
    ts += STEP
    check.timestamps.add(ts)
    table.close_all(ts)
    check.check()
    require(table.count == 0 and not table.flows, "flows left after close_all")
    require(table.budget.total == 0 and not table.budget.holders, f"budget still holds {table.budget.total} bytes")
    check_stats(table.stats, ALL_PROTOCOLS)
    _check_streams(tcp_segments)
