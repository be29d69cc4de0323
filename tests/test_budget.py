"""The bounds the hostile-traffic suite relies on, unit by unit (docs/hostile-traffic.md):
the sensor-wide buffer budget, its accounting by TCP streams and analyzers, flow eviction order
under a SYN flood, and the rule state's amortised room-making."""

from __future__ import annotations

from types import SimpleNamespace

from conftest import TcpConv, eth_tcp, mbap

from detectors.rules.state import SuppressState, ThresholdState
from sensor.budget import HeldBytes
from sensor.config_types import SensorLimits
from sensor.counters import Counters
from sensor.pipeline import Pipeline
from sensor.reassembly import MAX_SEGMENTS, SEGMENT_COST, TcpStream


class Holder:
    def __init__(self, budget: HeldBytes, name: str) -> None:
        self.budget, self.name, self.held, self.shed_at = budget, name, 0, None

    def grow(self, n: int, ts: float = 1.0) -> None:
        self.held += n
        self.budget.hold(self, self.held, ts)

    def shed(self, ts: float) -> None:
        self.shed_at = ts
        self.held = 0
        self.budget.hold(self, 0, ts)


def test_budget_sheds_the_longest_waiting_holder_first() -> None:
    counters = Counters()
    budget = HeldBytes(100, counters)
    a, b, c = Holder(budget, "a"), Holder(budget, "b"), Holder(budget, "c")
    a.grow(40)
    b.grow(40)
    a.grow(10)  # a grew last: b has waited longest now
    c.grow(30)  # 120 > 100: b goes, a and c stay
    assert b.shed_at == 1.0 and a.shed_at is None and c.shed_at is None
    assert budget.total == 80 and budget.peak == 120
    assert counters["buffered_bytes_cap"] == 1 and counters["buffered_bytes_shed"] == 40


class Mute:
    """A holder that never reports what it gave up."""

    def shed(self, ts: float) -> None:
        pass


def test_budget_sheds_the_growing_holder_last_and_skips_busy_ones() -> None:
    budget = HeldBytes(100, Counters())
    a, b = Holder(budget, "a"), Holder(budget, "b")
    a.grow(50)
    a.busy = True  # type: ignore[attr-defined] - a stream in the middle of delivering
    b.grow(60)  # over: a is busy, so b (the one growing) goes
    assert a.shed_at is None and b.shed_at == 1.0 and budget.total == 50
    # a holder that does not report its shedding is forgotten anyway
    mute = Mute()
    budget.hold(mute, 30, 2.0)  # type: ignore[arg-type]
    budget.release(a)  # type: ignore[arg-type]
    assert budget.total == 30
    budget.hold(mute, 200, 3.0)  # type: ignore[arg-type]
    assert budget.total == 0 and not budget.holders


def test_stream_charges_its_segments_and_gives_them_back() -> None:
    counters = Counters()
    budget = HeldBytes(1 << 20, counters)
    delivered: list[bytes] = []
    s = TcpStream(lambda d, ts: delivered.append(d), lambda ts: None, counters, 1 << 20, budget)
    s.segment(0, b"a", 1.0)
    for k in range(10):
        s.segment(100 + 10 * k, b"x" * 10, 1.0)
    assert budget.total == 100 + 10 * SEGMENT_COST
    s.segment(1, b"y" * 99, 1.0)  # the hole fills: everything is delivered
    assert b"".join(delivered) == b"a" + b"y" * 99 + b"x" * 100
    assert budget.total == 0 and not budget.holders


def test_stream_segment_cap_bounds_tiny_overlapping_pieces() -> None:
    counters = Counters()
    s = TcpStream(lambda d, ts: None, lambda ts: None, counters, 1 << 20)
    s.segment(0, b"a", 1.0)
    for k in range(MAX_SEGMENTS + 500):  # one-byte pieces behind a hole, each overlapping the next
        s.segment(10 + 2 * k, b"zz", 1.0)
    assert len(s.pending) <= MAX_SEGMENTS and counters["tcp_buffer_cap"] > 0
    s.flush(2.0)
    assert not s.pending and s.pending_bytes == 0


def test_budget_is_empty_after_every_flow_ended() -> None:
    """Gaps held by streams and partial PDUs held by analyzers are all given back when flows end."""
    pipe = Pipeline(SensorLimits(max_buffered_bytes=1 << 20))
    pipe.start("mem")
    conv = TcpConv("10.0.0.1", "10.0.0.2", 40000, 502).handshake()
    conv.c(mbap(1, 1, b"\x03\x00\x00\x00\x01"))
    conv.c(mbap(2, 1, b"\x03\x00\x00\x00\x01"), seq=conv.seq_c + 50)  # behind a 50-byte hole
    conv.s(mbap(1, 1, b"\x03\x02\x00\x07")[:9])  # a response cut short: a partial PDU in the analyzer
    for ts, f in conv.frames:
        pipe.packet(ts, 1, f, len(f))
    table = pipe._table
    assert table is not None and table.budget.total > 0 and len(table.budget.holders) == 2
    pipe.end()
    assert table.budget.total == 0 and not table.budget.holders


def test_a_syn_flood_evicts_its_own_flows_first() -> None:
    events: list = []
    pipe = Pipeline(SensorLimits(max_flows=100), on_event=events.append)
    pipe.start("flood")
    conv = TcpConv("10.0.0.1", "10.0.0.2", 40000, 502, t0=1.0).handshake()
    conv.c(mbap(1, 1, b"\x03\x00\x00\x00\x01"))
    for ts, f in conv.frames:
        pipe.packet(ts, 1, f, len(f))
    for n in range(1000):  # spoofed SYNs, each a new flow, all more recent than the plant's connection
        f = eth_tcp(f"172.16.{n >> 8}.{n & 0xFF}", "10.0.0.2", 1024 + n, 502, n, 0, "S")
        pipe.packet(2.0 + n * 0.001, 1, f, len(f))
        if n == 500:  # the plant's connection, quiet since the flood began, polls once more
            ts, f = conv.c(mbap(2, 1, b"\x03\x00\x00\x00\x01"))
            pipe.packet(2.0 + n * 0.001, 1, f, len(f))
    result = pipe.end()
    assert result.counters["flow_cap_evictions"] >= 900
    # the plant's connection stayed in the table: its second poll was not picked up mid-stream
    assert result.counters.get("tcp_flows_without_handshake", 0) == 0
    assert [e.function_name for e in events if e.protocol == "modbus"] == ["read_holding_registers"] * 2


def test_rule_state_makes_room_without_sweeping_for_every_new_key() -> None:
    """A flood of distinct keys (spoofed sources) must cost O(1) per key, not a sweep of the table."""

    class Counting(ThresholdState):
        sweeps = 0

        def sweep(self, now: float) -> None:
            self.sweeps += 1
            super().sweep(now)

    th = Counting(10, 60.0, lambda e: e.src, None, max_keys=100)
    for n in range(10_000):
        th.add(SimpleNamespace(src=n, ts=1.0 + n * 1e-3))
    assert len(th.groups) <= 100 and th.evicted > 9000
    assert th.sweeps <= 10_000 // 25 + 1
    sup = SuppressState(60.0, lambda e: e.src, max_keys=100)
    for n in range(10_000):
        assert not sup.check(SimpleNamespace(src=n, ts=1.0))
    assert len(sup.until) <= 100 and sup.evicted > 9000
