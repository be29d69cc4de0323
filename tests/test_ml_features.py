"""Window features from hand-built IcsEvents: each value checked against a hand computation."""

from __future__ import annotations

import math

import pytest

from detectors.ml.features import FeatureExtractor, History, WindowConfig, extract, feature_docs, feature_names
from sensor.events import IcsEvent

HMI, PLC, PLC2, SCANNER = "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.9"
T0 = 1_700_000_000.0


def req(ts, fc=3, addr=0, qty=10, src=HMI, dst=PLC, sport=40000, dport=502, proto="modbus", cat="read", unit=1,
        size=12, flow=1, name=None):  # fmt: skip
    return IcsEvent(ts, proto, src, sport, dst, dport, "tcp", "request", fc, name or f"fc{fc}", cat, unit, addr, qty,
                    size=size, flow_id=flow)  # fmt: skip


def resp(ts, fc=3, latency=0.002, src=PLC, dst=HMI, sport=502, dport=40000, proto="modbus", cat="read", result="ok",
         size=25, flow=1, unit=1):  # fmt: skip
    return IcsEvent(ts, proto, src, sport, dst, dport, "tcp", "response", fc, f"fc{fc}", cat, unit, 0, 10,
                    result=result, latency=latency, size=size, flow_id=flow)  # fmt: skip


def col(w, name, cfg=None):
    return w.values[feature_names(cfg).index(name)]


def poll(seconds: float, period: float = 1.0, start: float = T0, **kw):
    """A request every ``period`` and its response 2 ms later."""
    out = []
    n = int(seconds / period)
    for i in range(n):
        t = start + i * period
        out.append(req(t, **kw))
        out.append(resp(t + 0.002))
    return out


def test_schema_names_and_docs_agree():
    names = feature_names()
    docs = feature_docs()
    assert list(names) == list(docs)
    assert len(names) == len(set(names))
    assert {"rate_requests", "share_write", "new_address_ratio", "iat_min", "period_jitter", "d60_rate"} <= set(names)
    for d in docs.values():
        assert d.label and d.kind


def test_rates_shares_sizes_latency_in_a_tumbling_window():
    events = poll(30.5, 1.0)  # 31 polls, windows [0,10) [10,20) [20,30) + a partial
    events.append(req(T0 + 5.5, fc=6, addr=40, cat="write", size=12))
    events.append(resp(T0 + 5.502, fc=6, cat="write", latency=0.004))
    events.sort(key=lambda e: e.ts)
    windows, fx = extract(events)
    w = windows[0]
    assert w.key == (HMI, PLC, "modbus")
    assert (w.start, w.end) == (0.0, 10.0)
    assert w.events == 22  # 10 polls + 1 write, each with its response
    assert col(w, "rate_requests") == pytest.approx(11 / 10)
    assert col(w, "rate_responses") == pytest.approx(11 / 10)
    assert col(w, "rate_events") == pytest.approx(22 / 10)
    assert col(w, "share_read") == pytest.approx(10 / 11)
    assert col(w, "share_write") == pytest.approx(1 / 11)
    assert col(w, "distinct_functions") == 2
    assert col(w, "distinct_addresses") == 2  # unit 1 @0 and unit 1 @40
    assert col(w, "unanswered_ratio") == 0.0
    assert col(w, "size_mean") == pytest.approx((11 * 12 + 11 * 25) / 22)
    assert col(w, "size_max") == 25
    assert col(w, "latency_mean_ms") == pytest.approx((10 * 2 + 4) / 11)
    assert col(w, "latency_max_ms") == pytest.approx(4.0)
    # inter-arrival of initiated operations: 0.5, 0.5 around the write, 1.0 elsewhere; the first request of
    # the capture has no predecessor
    assert col(w, "iat_min") == pytest.approx(0.5)
    assert col(w, "iat_mean") == pytest.approx(9 / 10)
    # the second window: a steady poll, inter-arrivals 1 s, every period equal
    w2 = windows[1]
    assert col(w2, "iat_mean") == pytest.approx(1.0)
    assert col(w2, "iat_std") == pytest.approx(0.0, abs=1e-9)
    assert col(w2, "period_jitter") == pytest.approx(0.0, abs=1e-9)
    assert fx.stats()["events"] == len(events)


def test_exceptions_anomalies_and_unanswered():
    events = []
    for i in range(10):
        t = T0 + i
        events.append(req(t, addr=100 + i))
        if i < 4:
            events.append(resp(t + 0.002, result="exception"))
        elif i < 8:
            events.append(resp(t + 0.002))
        # the last two go unanswered
    events.append(req(T0 + 9.5, cat="read"))
    events[-1].anomaly = "modbus_bad_length"
    windows, _ = extract(events)
    w = windows[0]
    assert col(w, "exception_ratio") == pytest.approx(4 / 8)
    assert col(w, "anomaly_ratio") == pytest.approx(1 / 19)
    # 11 requests, 8 responses, one may be in flight at the boundary: (11 - 8 - 1) / 11
    assert col(w, "unanswered_ratio") == pytest.approx(2 / 11)


def test_new_addresses_and_functions_against_history():
    cfg = WindowConfig(warmup=0.0)
    events = poll(20, 1.0)  # window 1 learns @0 fc3
    events += [req(T0 + 21, fc=16, addr=500, cat="write"), req(T0 + 22, addr=0), req(T0 + 23, fc=16, addr=501, cat="write"),
               req(T0 + 28, addr=0)]  # fmt: skip
    windows, _ = extract(sorted(events, key=lambda e: e.ts), cfg)
    first, second, third = windows[0], windows[1], windows[2]
    assert col(first, "new_pair", cfg) == 1.0  # warm-up 0: the very first pair counts as new
    assert col(first, "new_address_ratio", cfg) == 1.0 and col(first, "new_function_ratio", cfg) == 1.0
    assert col(second, "new_address_ratio", cfg) == 0.0 and col(second, "new_pair", cfg) == 0.0
    assert col(third, "new_address_ratio", cfg) == pytest.approx(2 / 3)  # @500 and @501 new, @0 known
    assert col(third, "new_function_ratio", cfg) == pytest.approx(1 / 2)


def test_warmup_learns_silently():
    windows, _ = extract(poll(20, 1.0))  # default warm-up 60 s
    assert col(windows[0], "new_pair") == 0.0
    assert col(windows[0], "new_address_ratio") == 0.0


def test_responses_from_the_client_side_join_the_pair():
    # IEC 104: the master's S-frames are "responses" sent from its ephemeral port
    s_frame = IcsEvent(T0 + 1, "iec104", HMI, 50000, PLC, 2404, "tcp", "response", -1, "s_frame", "session", size=6)
    spont = IcsEvent(
        T0 + 2, "iec104", PLC, 2404, HMI, 50000, "tcp", "unsolicited", 13, "m_me_nc_1", "read", 1, 100, size=40
    )
    windows, _ = extract([s_frame, spont])
    assert [w.key for w in windows] == [(HMI, PLC, "iec104")]
    assert windows[0].events == 2


def test_connection_attempts_join_their_protocol_and_count_per_client():
    events = []
    for i in range(5):
        events.append(IcsEvent(T0 + i, "tcp", SCANNER, 51000 + i, f"10.0.1.{i}", 502, "tcp", "request", -1,
                               "connection_attempt", "discovery", fields={"ics_protocol": "modbus"}, flow_id=10 + i))  # fmt: skip
    windows, _ = extract(events, WindowConfig(warmup=0.0))
    assert {w.key for w in windows} == {(SCANNER, f"10.0.1.{i}", "modbus") for i in range(5)}
    w = windows[0]
    assert col(w, "connection_attempts") == 1
    assert col(w, "rate_requests") == 0.0  # a SYN is not a request that waits for an answer
    assert col(w, "client_servers") == 5
    assert col(w, "client_new_peers") == 5
    assert col(w, "client_new_peers_1h") == pytest.approx(5.0)
    assert col(w, "share_discovery") == 1.0


def test_broadcast_share():
    events = [req(T0 + i, unit=0 if i % 2 else 1, fc=6, cat="write") for i in range(10)]
    windows, _ = extract(events)
    assert col(windows[0], "broadcast_share") == pytest.approx(0.5)


def test_rhythm_jitter_sees_a_changed_period_at_the_same_rate():
    steady = [req(T0 + 2.0 * i) for i in range(10)]
    windows, _ = extract(steady, WindowConfig(window=20.0))
    assert col(windows[0], "period_jitter", WindowConfig(window=20.0)) == pytest.approx(0.0, abs=1e-9)
    times, t = [], T0
    for i in range(10):  # alternate 1 s / 3 s: the same mean period of 2 s
        times.append(t)
        t += 1.0 if i % 2 else 3.0
    windows, _ = extract([req(x) for x in times], WindowConfig(window=20.0))
    cfg = WindowConfig(window=20.0)
    assert col(windows[0], "rate_requests", cfg) == pytest.approx(10 / 19)  # cut at the last event, 19 s in
    assert col(windows[0], "period_jitter", cfg) == pytest.approx(2 / 3)  # |3-1| / 3 every time
    assert col(windows[0], "period_jitter_max", cfg) == pytest.approx(2 / 3)


def test_windows_run_on_a_monotonic_clock_when_capture_time_jumps_back():
    # a capture whose clock restarts: 25 s of polling, then time jumps back 25 s and polling continues
    first = poll(25, 1.0)
    second = poll(25, 1.0, start=T0)
    windows, fx = extract(first + second)
    assert fx.stats()["clock_backwards"] == 1
    ends = [w.end for w in windows]
    assert ends == sorted(ends)
    assert ends[-1] == pytest.approx(48.0, abs=0.1)  # 2 x 24 s of monotonic time (the jump back adds nothing)
    assert sum(w.events for w in windows) == len(first) + len(second)


def test_sliding_windows_merge_hops():
    cfg = WindowConfig(window=10.0, hop=5.0)
    windows, _ = extract(poll(30, 1.0), cfg)
    by_end = {w.end: w for w in windows}
    assert by_end[10.0].events == 20 and by_end[15.0].events == 20  # a 10 s window every 5 s
    assert by_end[15.0].start == 5.0
    with pytest.raises(ValueError):
        WindowConfig(window=10.0, hop=3.0)


def test_short_partial_window_at_the_end_is_dropped():
    windows, fx = extract(poll(12, 1.0))  # [0,10) full, [10,12) is 2 s: less than half a window
    assert [w.end for w in windows] == [10.0]
    assert fx.stats()["partial_windows_dropped"] == 1


def test_pair_table_is_bounded():
    cfg = WindowConfig(max_pairs=50)
    fx = FeatureExtractor(cfg)
    for i in range(500):  # 500 different sources in one hop: a spoofed flood
        fx.observe(req(T0 + i * 0.001, src=f"10.9.{i // 250}.{i % 250}", flow=0))
    windows = fx.finish()
    st = fx.stats()
    assert st["pairs"] <= 51  # the cap, plus the overflow pair
    assert st["pairs_overflow"] > 0
    assert any(w.key[0] == "<overflow>" for w in windows)
    # idle pairs are evicted once they have been quiet for idle_evict
    fx = FeatureExtractor(WindowConfig(idle_evict=30.0))
    for i in range(5):
        fx.observe(req(T0 + i, src=f"10.8.0.{i}", flow=0))
    for i in range(100):
        fx.observe(req(T0 + 10 + i))
    assert fx.stats()["pairs"] == 1 and fx.stats()["pairs_evicted"] == 5


def test_history_is_bounded():
    cfg = WindowConfig(max_history_per_pair=8, warmup=0.0)
    events = [req(T0 + i * 0.1, addr=i) for i in range(100)] + [req(T0 + 20 + i * 0.1, addr=i) for i in range(100)]
    windows, fx = extract(events, cfg)
    assert fx.history.total <= 16  # 8 functions + 8 addresses
    assert len(fx.history.pairs[(HMI, PLC, "modbus")][1]) == 8
    assert fx.stats()["history_full"] > 0
    assert math.isfinite(col(windows[-1], "new_address_ratio", cfg))


def test_snapshot_restores_history_and_long_averages():
    _, fx = extract(poll(600, 1.0))
    snap = fx.snapshot()
    fresh = FeatureExtractor.from_snapshot(WindowConfig(), snap)
    assert set(fresh.pairs) == {(HMI, PLC, "modbus")}
    out = []
    for e in poll(30, 1.0, start=T0 + 10_000):
        w = fresh.observe(e)
        if w:
            out.extend(w)
    assert out[0].warming and not out[1].warming  # the first window re-learns the timing state
    assert col(out[1], "new_pair") == 0.0 and col(out[1], "new_address_ratio") == 0.0
    # the long average did not start cold: it still remembers ~1 request/s... and 2 events/s
    assert col(out[1], "d3600_rate") == pytest.approx(2.0, rel=0.05)
    assert isinstance(History.from_snapshot(snap["history"]), History)


def test_tags_reach_the_window():
    fx = FeatureExtractor()
    windows = []
    for i, e in enumerate(poll(12, 1.0)):
        windows.extend(fx.observe(e, (7,) if i == 5 else ()))
    windows.extend(fx.finish())
    assert windows[0].tags == frozenset({7})
