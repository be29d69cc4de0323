"""TCP reassembly (sensor/reassembly.py) and the flow table (sensor/flows.py).

``TcpStream`` is driven directly with (seq, bytes) segments and a recording callback: what it delivers
must be each direction's bytes in order, exactly once, with a gap callback wherever bytes were lost.
The flow table is driven with hand-built Ethernet/IPv4/TCP frames carrying Modbus ADUs, through
``FlowTable`` itself (to see its table) and through a ``Pipeline`` (for time: sweeps, timeouts and a
capture clock that goes backwards).
"""

from __future__ import annotations

from typing import Any

import pytest

from conftest import TcpConv, eth_tcp, mbap, run_packets
from sensor.config_types import SensorLimits
from sensor.counters import Counters
from sensor.decode import Decoder, parse_tcp
from sensor.flows import FlowTable
from sensor.protocols import registry
from sensor.reassembly import RESYNC, TcpStream, seq_diff


class Recorder:
    """A TcpStream with its deliveries and gaps recorded as one list: bytes, or "GAP"."""

    def __init__(self, max_buffer: int = 1 << 20) -> None:
        self.out: list[Any] = []
        self.counters = Counters()
        self.stream = TcpStream(self._deliver, self._gap, self.counters, max_buffer)

    def _deliver(self, data: bytes, ts: float) -> None:
        self.out.append(bytes(data))

    def _gap(self, ts: float) -> None:
        self.out.append("GAP")

    def seg(self, seq: int, data: bytes, ts: float = 1.0, wire_len: int | None = None) -> "Recorder":
        self.stream.segment(seq & 0xFFFFFFFF, data, ts, wire_len)
        return self

    @property
    def data(self) -> bytes:
        return b"".join(x for x in self.out if isinstance(x, bytes))

    def c(self) -> dict[str, int]:
        return {k: v for k, v in self.counters.items() if v}


def test_seq_diff_serial_arithmetic() -> None:
    assert seq_diff(5, 3) == 2
    assert seq_diff(3, 5) == -2
    assert seq_diff(2, 0xFFFFFFFE) == 4  # across the wrap
    assert seq_diff(0xFFFFFFFE, 2) == -4


# ---------------------------------------------------------------------------------------------------
# TcpStream
# ---------------------------------------------------------------------------------------------------
def test_in_order_after_syn() -> None:
    r = Recorder()
    r.stream.syn(999)
    r.seg(1000, b"abc").seg(1003, b"def").seg(1006, b"")
    assert r.out == [b"abc", b"def"]
    assert r.c() == {}


def test_joins_midstream_without_syn() -> None:
    r = Recorder()
    r.seg(777_777, b"first").seg(777_782, b"second")
    assert r.out == [b"first", b"second"]


def test_out_of_order_waits_for_the_hole() -> None:
    r = Recorder()
    r.stream.syn(0)
    r.seg(7, b"CCC").seg(4, b"BBB")
    assert r.out == []
    r.seg(1, b"AAA")
    assert r.out == [b"AAA", b"BBB", b"CCC"]
    assert r.c() == {"tcp_out_of_order": 2}
    assert r.stream.pending_bytes == 0


def test_retransmission_delivered_once() -> None:
    r = Recorder()
    r.stream.syn(0)
    r.seg(1, b"hello").seg(1, b"hello").seg(6, b"world").seg(1, b"hello")
    assert r.data == b"helloworld"
    assert r.c() == {"tcp_retransmission": 2}


def test_retransmission_of_buffered_segment() -> None:
    r = Recorder()
    r.stream.syn(0)
    r.seg(6, b"world").seg(6, b"world")
    r.seg(1, b"hello")
    assert r.data == b"helloworld"
    assert r.c()["tcp_retransmission"] == 1


def test_partial_overlap_trimmed() -> None:
    r = Recorder()
    r.stream.syn(0)
    r.seg(1, b"hello").seg(4, b"loWORLD")  # 2 bytes old, 5 new
    assert r.data == b"helloWORLD"
    assert r.c() == {"tcp_overlap": 1}


def test_overlapping_buffered_segments_trimmed_on_drain() -> None:
    r = Recorder()
    r.stream.syn(0)
    r.seg(6, b"world!!").seg(9, b"ld!!more")  # both wait; the second overlaps the first
    r.seg(1, b"hello")
    assert r.data == b"helloworld!!more"


def test_conflicting_overlap_counted_first_data_wins() -> None:
    r = Recorder()
    r.stream.syn(0)
    r.seg(6, b"world").seg(6, b"WORLD")  # same place, different bytes, while waiting
    r.seg(1, b"hello")
    assert r.data == b"helloworld"
    assert r.c()["tcp_overlap_conflict"] == 1


def test_gap_skipped_when_peer_acks_beyond_the_hole() -> None:
    r = Recorder()
    r.stream.syn(0)
    r.seg(1, b"aaaa").seg(9, b"cccc").seg(13, b"dddd")  # bytes 5..8 never captured
    assert r.out == [b"aaaa"]
    r.stream.acked(5, 2.0)  # the peer acked only up to the hole: keep waiting
    assert r.out == [b"aaaa"]
    r.stream.acked(17, 2.0)  # it acked past the hole: the bytes were sent, we lost them
    assert r.out == [b"aaaa", "GAP", b"cccc", b"dddd"]
    assert r.c()["tcp_gap"] == 1
    r.seg(17, b"eeee")
    assert r.out[-1] == b"eeee"


def test_gap_on_buffer_cap() -> None:
    r = Recorder(max_buffer=100)
    r.stream.syn(0)
    r.seg(1, b"a" * 10)
    for i in range(3):
        r.seg(51 + 40 * i, b"x" * 40)  # 40 bytes lost at 11..50; 120 bytes buffered > 100
    assert r.c()["tcp_buffer_cap"] == 1
    assert r.c()["tcp_gap"] == 1
    assert r.out == [b"a" * 10, "GAP", b"x" * 40, b"x" * 40, b"x" * 40]
    assert r.stream.pending_bytes == 0


def test_gap_at_close_flushes_everything_buffered() -> None:
    r = Recorder()
    r.stream.syn(0)
    r.seg(1, b"aa").seg(5, b"cc").seg(9, b"ee")  # two holes
    r.stream.flush(3.0)
    assert r.out == [b"aa", "GAP", b"cc", "GAP", b"ee"]
    assert r.c()["tcp_gap"] == 2
    assert not r.stream.pending


def test_sequence_wraparound() -> None:
    r = Recorder()
    r.stream.syn(0xFFFFFFF0)
    first = 0xFFFFFFF1
    r.seg(first, b"A" * 10).seg(first + 10, b"B" * 10).seg(first + 20, b"C" * 10)
    assert r.out == [b"A" * 10, b"B" * 10, b"C" * 10]
    assert r.stream.next_seq == (first + 30) & 0xFFFFFFFF


def test_out_of_order_across_the_wrap() -> None:
    r = Recorder()
    r.stream.syn(0xFFFFFFF0)
    first = 0xFFFFFFF1
    r.seg(first + 20, b"C" * 10).seg(first + 10, b"B" * 10)  # both after the wrap point
    r.seg(first, b"A" * 10)
    r.seg(first, b"A" * 10)  # and a retransmission from before the wrap
    assert r.data == b"A" * 10 + b"B" * 10 + b"C" * 10
    assert r.c() == {"tcp_out_of_order": 2, "tcp_retransmission": 1}


def test_huge_sequence_jump_resyncs() -> None:
    r = Recorder()
    r.stream.syn(0)
    r.seg(1, b"before").seg(100, b"pending")  # a hole, then the stream jumps far away
    jump = 1 + RESYNC * 4
    r.seg(jump, b"after").seg(jump + 5, b"more")
    assert r.out == [b"before", "GAP", b"after", b"more"]
    assert r.c()["tcp_seq_jump"] == 1
    assert not r.stream.pending and r.stream.pending_bytes == 0


def test_old_segment_far_behind_resyncs_too() -> None:
    r = Recorder()
    r.seg(RESYNC * 8, b"x")
    r.seg(5, b"old garbage")
    assert r.c()["tcp_seq_jump"] == 1
    assert r.out == [b"x", "GAP", b"old garbage"]


def test_snaplen_cut_segment_is_a_gap() -> None:
    r = Recorder()
    r.stream.syn(0)
    r.seg(1, b"abc", wire_len=10)  # 7 bytes of this segment were not captured
    r.seg(11, b"next")
    assert r.out == [b"abc", "GAP", b"next"]
    assert r.c() == {"tcp_snaplen_gap": 1}


# ---------------------------------------------------------------------------------------------------
# FlowTable, driven with frames
# ---------------------------------------------------------------------------------------------------
class Table:
    """A FlowTable fed with Ethernet frames the way the pipeline feeds it (capture time = now)."""

    def __init__(self, **limits: Any) -> None:
        self.events: list[Any] = []
        self.table = FlowTable(registry(), SensorLimits(**limits), self.events.append)
        self.decoder = Decoder(self.table.counters)

    def feed(self, frames: list[tuple[float, bytes]]) -> "Table":
        for ts, frame in frames:
            self.table.now = ts
            d = self.decoder.decode(1, frame)
            assert d is not None
            sport, dport, seq, ack, flags, payload = parse_tcp(d.l4)  # type: ignore[misc]
            self.table.tcp(d.src, d.dst, sport, dport, seq, ack, flags, payload, len(payload), ts, d.smac, d.dmac)
        return self

    @property
    def modbus(self) -> list[Any]:
        return [e for e in self.events if e.protocol == "modbus"]

    @property
    def counters(self) -> Counters:
        return self.table.counters


READ_REQ = b"\x03\x00\x10\x00\x02"  # read 2 holding registers at 16
READ_RSP = b"\x03\x04\x00\x0a\x00\x0b"


def test_pdu_split_across_segments() -> None:
    conv = TcpConv()
    conv.handshake()
    req = mbap(1, 1, READ_REQ)
    conv.c(req[:3])
    conv.c(req[3:8])  # MBAP ends mid-way, function code in the second piece
    conv.c(req[8:])
    rsp = mbap(1, 1, READ_RSP)
    conv.s(rsp[:7])
    conv.s(rsp[7:])
    t = Table().feed(conv.frames)
    mb = t.modbus
    assert [(e.direction, e.function, e.address, e.quantity) for e in mb] == [
        ("request", 3, 16, 2),
        ("response", 3, 16, 2),
    ]
    assert mb[1].values == (10, 11)
    assert t.table.stats.pdus["modbus"] == 2


def test_several_pdus_in_one_segment() -> None:
    conv = TcpConv()
    conv.handshake()
    conv.c(b"".join(mbap(tid, 1, b"\x03" + bytes([0, tid, 0, 1])) for tid in (1, 2, 3)))
    conv.s(b"".join(mbap(tid, 1, b"\x03\x02" + bytes([0, tid * 10])) for tid in (3, 1, 2)))
    t = Table().feed(conv.frames)
    mb = t.modbus
    assert len(mb) == 6
    responses = [(e.fields["transaction_id"], e.address, e.values) for e in mb if e.direction == "response"]
    assert responses == [(3, 3, (30,)), (1, 1, (10,)), (2, 2, (20,))]
    assert all(e.latency is not None for e in mb if e.direction == "response")


def test_pdus_straddling_segments_in_both_ways() -> None:
    # 1.5 ADUs, then 1.5 ADUs: each segment both ends one PDU and starts another.
    stream = b"".join(mbap(tid, 1, READ_REQ) for tid in range(1, 4))
    cut = len(stream) // 2
    conv = TcpConv()
    conv.handshake()
    conv.c(stream[:cut])
    conv.c(stream[cut:])
    t = Table().feed(conv.frames)
    assert [e.fields["transaction_id"] for e in t.modbus] == [1, 2, 3]


def test_reordered_and_retransmitted_segments_through_the_table() -> None:
    conv = TcpConv()
    conv.handshake()
    a, b, c = (mbap(tid, 1, READ_REQ) for tid in (1, 2, 3))
    base = conv.seq_c
    frames = list(conv.frames)
    frames.append(conv.c(c, seq=base + len(a) + len(b)))
    frames.append(conv.c(a, seq=base))
    frames.append(conv.c(a, seq=base))  # retransmitted
    frames.append(conv.c(b, seq=base + len(a)))
    t = Table().feed(frames)
    assert [e.fields["transaction_id"] for e in t.modbus] == [1, 2, 3]
    assert t.counters["tcp_retransmission"] == 1
    assert t.counters["tcp_out_of_order"] == 1


def test_lost_segment_does_not_stall_the_flow() -> None:
    # A request is lost in the capture; the server's ACK covers it, so the next ones still come out.
    conv = TcpConv()
    conv.handshake()
    a, b, c = (mbap(tid, 1, READ_REQ) for tid in (1, 2, 3))
    conv.c(a)
    conv.c(b)
    conv.c(c)
    conv.frame(False, "A")  # the server acknowledges everything
    frames = conv.frames[:4] + conv.frames[5:]  # drop b
    t = Table().feed(frames)
    assert [e.fields["transaction_id"] for e in t.modbus] == [1, 3]
    assert t.counters["tcp_gap"] == 1


def test_flow_without_handshake_client_side_first() -> None:
    conv = TcpConv()
    conv.c(mbap(5, 1, READ_REQ))
    conv.s(mbap(5, 1, READ_RSP))
    t = Table().feed(conv.frames)
    assert [(e.direction, e.src, e.dport) for e in t.modbus] == [("request", "10.0.0.1", 502), ("response", "10.0.0.2", 40000)]
    assert t.counters["tcp_flows_without_handshake"] == 1


def test_flow_without_handshake_server_side_first() -> None:
    conv = TcpConv()
    conv.s(mbap(4, 1, READ_RSP))  # we join on the server's answer
    conv.c(mbap(5, 1, READ_REQ))
    t = Table().feed(conv.frames)
    mb = t.modbus
    assert [(e.direction, e.src) for e in mb] == [("response", "10.0.0.2"), ("request", "10.0.0.1")]
    assert t.counters["modbus_unpaired_response"] == 1


def test_lone_control_packets_are_counted_not_flows() -> None:
    t = Table().feed([(1.0, eth_tcp("10.0.0.1", "10.0.0.2", 40000, 502, 1, 1, "A"))])
    assert t.table.count == 0
    assert t.counters["tcp_orphan_control"] == 1


def test_fin_from_both_sides_closes_the_flow() -> None:
    conv = TcpConv()
    conv.handshake()
    conv.c(mbap(1, 1, READ_REQ))
    conv.s(mbap(1, 1, READ_RSP))
    t = Table().feed(conv.frames)
    assert t.table.count == 1
    conv.frames.clear()
    conv.frame(True, "FA")
    t.feed(conv.frames)
    assert t.table.count == 1  # half-closed
    conv.frames.clear()
    conv.frame(False, "FA")
    t.feed(conv.frames)
    assert t.table.count == 0 and not t.table.flows


def test_rst_closes_the_flow_and_flushes_partial_pdu() -> None:
    conv = TcpConv()
    conv.handshake()
    conv.c(mbap(1, 1, READ_REQ)[:5])  # half an ADU, then the connection is reset
    conv.rst(False)
    t = Table().feed(conv.frames)
    assert t.table.count == 0
    assert t.counters["tcp_rst"] == 1
    assert t.counters["modbus_truncated_at_close"] == 1
    assert t.modbus == []


def test_new_connection_on_same_ports_after_close() -> None:
    first = TcpConv()
    first.handshake()
    first.c(mbap(1, 1, READ_REQ))
    first.fin()
    second = TcpConv(isn_c=90_000, isn_s=70_000, t0=first.t)
    second.handshake()
    second.c(mbap(2, 1, READ_REQ))
    t = Table().feed(first.frames + second.frames)
    assert [e.fields["transaction_id"] for e in t.modbus] == [1, 2]
    assert len({e.flow_id for e in t.modbus}) == 2


def test_port_reuse_without_close_starts_a_new_flow() -> None:
    first = TcpConv()
    first.handshake()
    first.c(mbap(1, 1, READ_REQ))
    second = TcpConv(isn_c=90_000, isn_s=70_000, t0=first.t)
    second.handshake()
    second.c(mbap(2, 1, READ_REQ))
    t = Table().feed(first.frames + second.frames)
    assert t.counters["tcp_port_reuse"] == 1
    assert [e.fields["transaction_id"] for e in t.modbus] == [1, 2]


def test_idle_timeout_closes_flows() -> None:
    t = Table(tcp_idle_timeout=60.0)
    old = TcpConv(cport=40001, t0=0.0)
    old.handshake()
    old.c(mbap(1, 1, READ_REQ)[:4])  # a partial ADU left when the flow goes idle
    t.feed(old.frames)
    fresh = TcpConv(cport=40002, t0=100.0)
    fresh.handshake()
    t.feed(fresh.frames)
    t.table.expire(100.0)
    assert t.table.count == 1
    assert t.counters["flows_idle_timeout"] == 1
    assert t.counters["modbus_truncated_at_close"] == 1


def test_max_flows_cap_evicts_idlest_and_counts() -> None:
    t = Table(max_flows=16)
    for i in range(40):
        conv = TcpConv(cport=41000 + i, t0=float(i))
        conv.c(mbap(i, 1, READ_REQ))
        t.feed(conv.frames)
        assert t.table.count <= 16
    assert t.counters["flow_cap_evictions"] >= 24
    assert t.counters["flows_tcp"] == 40
    assert len(t.modbus) == 40  # every flow was analysed while it lived
    ports = {k[1] for k in t.table.flows if k[3] == 502}
    assert 41039 in ports and 41000 not in ports  # the idlest went first


def test_cap_eviction_keeps_recently_active_flow() -> None:
    t = Table(max_flows=16)
    keep = TcpConv(cport=40000, t0=0.0)
    keep.handshake()
    t.feed(keep.frames)
    for i in range(30):
        other = TcpConv(cport=42000 + i, t0=1.0 + i)
        other.c(mbap(i, 1, READ_REQ))
        t.feed(other.frames)
        keep.frames.clear()
        keep.c(mbap(1000 + i, 1, READ_REQ))
        t.feed([(1.5 + i, keep.frames[-1][1])])
    assert t.counters["flow_cap_evictions"] > 0
    kept = [e.fields["transaction_id"] for e in t.modbus if e.sport == 40000]
    assert kept == [1000 + i for i in range(30)]


# ---------------------------------------------------------------------------------------------------
# Through the pipeline: capture time
# ---------------------------------------------------------------------------------------------------
def test_idle_timeout_on_capture_time_through_pipeline() -> None:
    conv = TcpConv(t0=1000.0)
    conv.handshake()
    conv.c(mbap(1, 1, READ_REQ)[:4])
    later = TcpConv(cport=40009, t0=1000.0 + 700)  # default TCP idle timeout: 600 s
    later.c(mbap(2, 1, READ_REQ))
    result, events = run_packets(conv.frames + later.frames)
    assert result.counters["flows_idle_timeout"] == 1
    assert result.counters["modbus_truncated_at_close"] == 1
    assert [e.fields["transaction_id"] for e in events if e.protocol == "modbus"] == [2]


def test_capture_clock_going_backwards() -> None:
    # The capture's clock restarts 500 s earlier mid-flow: counted, and the flow keeps working.
    conv = TcpConv(t0=10_000.0)
    conv.handshake()
    conv.c(mbap(1, 1, READ_REQ))
    conv.s(mbap(1, 1, READ_RSP))
    conv.t -= 500.0
    conv.c(mbap(2, 1, READ_REQ))
    conv.s(mbap(2, 1, READ_RSP))
    conv.t += 0.5
    conv.c(mbap(3, 1, READ_REQ))
    conv.s(mbap(3, 1, READ_RSP))
    result, events = run_packets(conv.frames)
    assert result.counters["capture_clock_backwards"] == 1
    assert result.counters["flows_idle_timeout"] == 0
    mb = [e for e in events if e.protocol == "modbus"]
    assert [(e.direction, e.fields["transaction_id"]) for e in mb] == [
        ("request", 1),
        ("response", 1),
        ("request", 2),
        ("response", 2),
        ("request", 3),
        ("response", 3),
    ]
    assert mb[2].ts < mb[1].ts  # events keep the packet's own time
    assert all(e.latency is not None and 0 <= e.latency < 1 for e in mb if e.direction == "response")


def test_clock_backwards_does_not_expire_flows_early() -> None:
    # A jump back then forward again must not count the backward distance as idle time.
    conv = TcpConv(t0=50_000.0)
    conv.handshake()
    conv.c(mbap(1, 1, READ_REQ))
    conv.t -= 10_000.0
    other = TcpConv(cport=40001, t0=conv.t)
    other.c(mbap(9, 1, READ_REQ))
    conv.t = other.t + 10.0
    conv.c(mbap(2, 1, READ_REQ))
    result, events = run_packets(conv.frames[:4] + other.frames + conv.frames[4:])
    assert result.counters["capture_clock_backwards"] == 1
    assert result.counters["flows_idle_timeout"] == 0
    assert result.counters["tcp_flows_without_handshake"] == 1  # only `other`
    assert sorted(e.fields["transaction_id"] for e in events if e.protocol == "modbus") == [1, 2, 9]


@pytest.mark.parametrize("max_flow_buffer", [4096])
def test_buffer_cap_through_pipeline(max_flow_buffer: int) -> None:
    # A lost segment followed by more than the per-direction buffer: the gap is declared, delivery resumes.
    conv = TcpConv()
    conv.handshake()
    reqs = [mbap(tid, 1, b"\x10\x00\x00\x00\x40\x80" + b"\x00\x01" * 64) for tid in range(1, 60)]
    for r in reqs:
        conv.c(r)
    frames = conv.frames[:3] + conv.frames[4:]  # request 1 lost, never acknowledged
    result, events = run_packets(frames, config=SensorLimits(max_flow_buffer=max_flow_buffer))
    assert result.counters["tcp_buffer_cap"] >= 1
    assert result.counters["tcp_gap"] >= 1
    tids = [e.fields["transaction_id"] for e in events if e.protocol == "modbus"]
    assert tids == list(range(2, 60))


# ---------------------------------------------------------------------------------------------------
# A hole acknowledged by the peer's DATA segments (the usual case: Modbus answers carry the ACK)
# ---------------------------------------------------------------------------------------------------
def _lost_request_answered() -> list[tuple[float, bytes]]:
    """Request 1 is lost in the capture; the server answers 1 and 2 with data segments whose ACK covers both."""
    conv = TcpConv()
    conv.handshake()
    conv.c(mbap(1, 1, READ_REQ))
    conv.c(mbap(2, 1, READ_REQ))
    conv.s(mbap(1, 1, READ_RSP))
    conv.s(mbap(2, 1, READ_RSP))
    return conv.frames[:3] + conv.frames[4:]


# Regression: a hole acknowledged only by the peer's *data* segments (Modbus responses carry the ACK)
# must be skipped on the in-order fast paths too, not only on pure ACKs.


def test_hole_skipped_on_piggybacked_ack_flowtable() -> None:
    t = Table().feed(_lost_request_answered())
    # before any close: request 2 came out when the server's answer acknowledged past the hole, and
    # before that answer (it was sent first: wire order is kept)
    assert [(e.direction, e.fields["transaction_id"]) for e in t.modbus] == [
        ("request", 2),
        ("response", 1),
        ("response", 2),
    ]
    assert t.counters["tcp_gap"] == 1


def test_hole_skipped_on_piggybacked_ack_pipeline() -> None:
    from sensor.pipeline import Pipeline

    events: list[Any] = []
    pipe = Pipeline(on_event=events.append)
    pipe.start("<test>")
    for ts, frame in _lost_request_answered():
        pipe.packet(ts, 1, frame, len(frame))
    seen = [(e.direction, e.fields["transaction_id"]) for e in events if e.protocol == "modbus"]
    pipe.end()
    assert seen == [("request", 2), ("response", 1), ("response", 2)]


def test_hole_acknowledged_eventually_delivered_at_close() -> None:
    # Whatever path is taken, nothing buffered is lost: at the end of the capture request 2 comes out.
    result, events = run_packets(_lost_request_answered())
    assert sorted(e.fields["transaction_id"] for e in events if e.protocol == "modbus" and e.direction == "request") == [2]
    assert result.counters["tcp_gap"] == 1


def test_fast_and_general_paths_give_the_same_events() -> None:
    # Plain Ethernet/IPv4/TCP takes the pipeline's inline path; the same frames behind a VLAN tag take
    # the general one. Reordering, retransmission and splits included: the events must be identical.
    conv = TcpConv()
    conv.handshake()
    a, b, c = (mbap(tid, 1, READ_REQ) for tid in (1, 2, 3))
    base = conv.seq_c
    conv.c(b, seq=base + len(a))
    conv.c(a, seq=base)
    conv.c(a, seq=base)
    conv.c(c[:5], seq=base + len(a) + len(b))
    conv.c(c[5:], seq=base + len(a) + len(b) + 5)
    conv.seq_c = base + len(a) + len(b) + len(c)
    for tid in (1, 2, 3):
        conv.s(mbap(tid, 1, READ_RSP))
    conv.fin()
    plain = conv.frames
    tagged = [(ts, f[:12] + b"\x81\x00\x00\x0a" + f[12:]) for ts, f in plain]

    def summary(frames: list[tuple[float, bytes]]) -> tuple[list[tuple], dict[str, int]]:
        result, events = run_packets(frames)
        evs = [(e.ts, e.direction, e.function, e.address, e.values, e.latency, e.fields.get("transaction_id")) for e in events if e.protocol == "modbus"]
        return evs, {k: v for k, v in result.counters.items() if v and k.startswith("tcp_")}

    assert summary(plain) == summary(tagged)
    evs, _ = summary(plain)
    assert [e[6] for e in evs if e[1] == "request"] == [1, 2, 3]
