"""The hostile-traffic suite at CI size (issue #11, "Hardening"; docs/hostile-traffic.md).

Every scenario of ``tools/hostile/scenarios.py`` is written small into a temporary folder and replayed
by ``icswatch replay`` in its own process, exactly as a user runs it (default rules, SQLite store,
asset inventory), with small caps so that every cap is hit. For each capture the test checks:

- the sensor finished (exit 0) and no analyzer raised;
- the counters of the caps it aims at are non-zero and consistent with what the capture holds;
- memory stayed under a bound derived from the caps: the peak RSS of the replay process
  (``os.wait4``, through a small parent so that pytest's own size is not inherited) is at most the
  peak RSS of the same command on the victim traffic alone, plus what the caps allow
  (``memory_bound``), and the budget's own high-water mark is at most its cap plus one growth;
  ``test_memory_bound_fails_without_the_global_cap`` shows the bound is tight enough to catch a
  missing cap;
- the real ICS traffic mixed in was still parsed (the same events between victim hosts as when it is
  replayed alone) and still alerts (each rule capture's rule fires at least as often as alone).

The full-size captures (a million SYN flows, ...) run in ``bench/hostile.py``.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sensor.reassembly import SEGMENT_COST
from tools.hostile import measure
from tools.hostile.scenarios import SCENARIOS, Written

REPO = Path(__file__).resolve().parents[1]

# Caps used in CI: small, so that small captures hit every one of them.
MAX_FLOWS = 2000
MAX_BUFFERED = 4 << 20
MAX_FRAGMENT_BYTES = 256 << 10
MAX_FRAGMENT_SETS = 300
CAPS = {
    "sensor.max_flows": MAX_FLOWS,
    "sensor.max_buffered_bytes": MAX_BUFFERED,
    "sensor.max_fragment_bytes": MAX_FRAGMENT_BYTES,
    "sensor.max_fragment_sets": MAX_FRAGMENT_SETS,
}

# The budget passes its cap by at most the growth that makes it shed: one segment, one PDU (<= 64 KiB).
ONE_GROWTH = 70_000


def memory_bound(base_rss: int, flows: int) -> int:
    """Bytes of peak RSS a hostile replay may reach: the victims-only replay plus what the CI caps allow."""
    return measure.memory_bound(base_rss, flows, MAX_FLOWS, MAX_BUFFERED + MAX_FRAGMENT_BYTES)


@dataclass
class Replay:
    returncode: int
    rss: int  # peak resident set size of the replay process, bytes
    cpu: float  # user + system CPU seconds
    summary: dict[str, Any]
    victim_events: Counter  # (src, dst, protocol, direction, function_name) between victim hosts
    latencies: list[float | None]  # latency of every victim response
    stderr: str

    @property
    def counters(self) -> dict[str, int]:
        return self.summary["counters"]

    @property
    def alerts(self) -> dict[str, int]:
        return self.summary.get("alerts", {}).get("by_rule", {})


def replay(capture: Path, work: Path, hosts: set[str], caps: dict[str, int] = CAPS) -> Replay:
    """``icswatch replay`` on ``capture`` in its own process, as a user runs it, with ``caps``."""
    work.mkdir(parents=True, exist_ok=True)
    options = ["--db", str(work / "alerts.db"), "--events", str(work / "events.jsonl")]
    options += ["--json-summary", str(work / "summary.json")]
    for key, value in caps.items():
        options += ["--set", f"{key}={value}"]
    run = measure.replay_measured(capture, work, options)
    summary = json.loads((work / "summary.json").read_text()) if (work / "summary.json").exists() else {}
    events: Counter = Counter()
    latencies: list[float | None] = []
    if (work / "events.jsonl").exists():
        with open(work / "events.jsonl", encoding="utf-8") as fh:
            for line in fh:
                e = json.loads(line)
                src, dst = e["src"], e["dst"]
                if src in hosts and dst in hosts:
                    events[(src, dst, e["protocol"], e["direction"], e["function_name"])] += 1
                    if e["direction"] == "response":
                        latencies.append(e.get("latency"))
    return Replay(run.returncode, run.rss, run.cpu, summary, events, latencies, run.stderr)


@dataclass
class Outcome:
    written: Written
    hostile: Replay
    alone: Replay  # the victim traffic replayed alone, same caps


def run_scenario(name: str, size: int, tmp: Path, caps: dict[str, int] = CAPS, **params: Any) -> Outcome:
    capture, victims = tmp / f"{name}.pcap", tmp / f"{name}.victims.pcap"
    written = SCENARIOS[name](capture, size, victims, **params)
    alone = replay(victims, tmp / "alone", written.victim_hosts, caps)
    hostile = replay(capture, tmp / "hostile", written.victim_hosts, caps)
    return Outcome(written, hostile, alone)


def check_common(o: Outcome, flows: int) -> None:
    """What every hostile capture must leave true."""
    h, a = o.hostile, o.alone
    assert a.returncode == 0, a.stderr
    assert h.returncode == 0, h.stderr
    assert h.summary["packets"] == o.written.packets
    assert not [k for k in h.counters if k.startswith("analyzer_error_")], h.counters
    # memory: under what the caps allow, above the victims-only run
    bound = memory_bound(a.rss, flows)
    assert h.rss <= bound, f"peak RSS {h.rss >> 20} MiB over the bound {bound >> 20} MiB derived from the caps"
    gauges = h.summary["gauges"]
    assert gauges["buffered_bytes_peak"] <= MAX_BUFFERED + ONE_GROWTH
    assert gauges["ip_fragment_bytes_peak"] <= MAX_FRAGMENT_BYTES + 65535
    # the plant's traffic: still parsed, every event of it, and still alerting
    assert a.victim_events, "the victim traffic produced no event on its own"
    assert h.victim_events == a.victim_events
    assert (
        o.written.poll_events
        and sum(
            n
            for (src, _d, proto, _dir, _f), n in h.victim_events.items()
            if proto == "modbus" and src in ("10.10.1.10", "10.10.2.11")
        )
        >= o.written.poll_events
    )
    for rule, n in o.written.victim_alerts.items():
        assert a.alerts.get(rule, 0) >= n, f"{rule} does not fire on the victims alone: {a.alerts}"
        assert h.alerts.get(rule, 0) >= n, f"{rule} did not fire under attack: {h.alerts}"


# ------------------------------------------------------------------------------------------ scenarios


def test_syn_flood(tmp_path: Path) -> None:
    size = 20_000
    o = run_scenario("syn_flood", size, tmp_path)
    check_common(o, size)
    c = o.hostile.counters
    # every SYN opened a flow; every flow beyond the cap had to make room for itself
    assert c["flows_tcp"] >= size
    assert c["flow_cap_evictions"] >= size - MAX_FLOWS
    # the flood never pushed a victim connection out of the table (none had to be picked up mid-stream)
    assert c.get("tcp_flows_without_handshake", 0) == o.alone.counters.get("tcp_flows_without_handshake", 0)
    # each SYN to an ICS port is a connection attempt event (all the flood's ports are registered)
    assert o.hostile.summary["events"] >= size


def test_gap_flood(tmp_path: Path) -> None:
    size = 1200
    o = run_scenario("gap_flood", size, tmp_path)
    check_common(o, size)
    c = o.hostile.counters
    p = o.written.params
    assert c["tcp_out_of_order"] > 0 and c["buffered_bytes_cap"] > 0
    # what was shed came from the flood's segments (a shed stream's later segments are in order: they
    # go straight through), and more than the cap's worth of it had to go
    segments = size * p["segments"]  # type: ignore[operator]
    assert c["tcp_out_of_order"] <= segments
    most = segments * (p["seg_bytes"] + SEGMENT_COST)  # type: ignore[operator]
    assert MAX_BUFFERED < c["buffered_bytes_shed"] <= most
    # every connection's hole was declared lost: when its stream was shed, or at the end of the capture
    assert c["tcp_gap"] >= size
    assert o.hostile.summary["gauges"]["buffered_bytes_peak"] >= MAX_BUFFERED  # the cap was reached


def test_memory_bound_fails_without_the_global_cap(tmp_path: Path) -> None:
    """The control: the same gap flood with the global budget lifted goes over the bound the caps
    give, so the bound in the other tests is tight enough to catch a missing cap."""
    size = 1200
    lifted = dict(CAPS, **{"sensor.max_buffered_bytes": 1 << 30})
    o = run_scenario("gap_flood", size, tmp_path, caps=lifted)
    assert o.hostile.returncode == 0
    assert o.hostile.rss > memory_bound(o.alone.rss, size)
    assert o.hostile.counters.get("buffered_bytes_cap", 0) == 0


def test_overlap_flood(tmp_path: Path) -> None:
    size = 20_000
    o = run_scenario("overlap_flood", size, tmp_path)
    check_common(o, 2)
    c = o.hostile.counters
    for name in ("tcp_overlap", "tcp_overlap_conflict", "tcp_retransmission", "tcp_out_of_order", "tcp_buffer_cap"):
        assert c.get(name, 0) > 0, name
    # a segment is buffered at most once, and each buffered one is delivered, trimmed or dropped
    assert c["tcp_out_of_order"] <= size


def test_dnp3_fragment_flood(tmp_path: Path) -> None:
    size = 300
    o = run_scenario("dnp3_fragment_flood", size, tmp_path)
    check_common(o, size)
    c = o.hostile.counters
    links = o.written.params["links"]
    # 16 link pairs in reassembly per connection: each one beyond took the oldest one's place
    assert c["dnp3_reassembly_table_cap"] == size * (links - 16)  # type: ignore[operator]
    # one connection in fifty grows a fragment past 64 KiB
    assert c["dnp3_reassembly_overflow"] == (size + 49) // 50
    assert c["buffered_bytes_cap"] > 0
    # what was shed or left unfinished is counted as lost fragments
    assert c.get("dnp3_partial_fragment_lost", 0) + c.get("dnp3_incomplete_fragment_at_close", 0) > 0


def test_opcua_chunk_flood(tmp_path: Path) -> None:
    size = 300
    o = run_scenario("opcua_chunk_flood", size, tmp_path)
    check_common(o, size)
    c = o.hostile.counters
    messages = o.written.params["messages"]
    assert c["opcua_reassembly_cap"] >= size * (messages - 16)  # type: ignore[operator]
    assert c["buffered_bytes_cap"] > 0


def test_length_lies(tmp_path: Path) -> None:
    size = 400
    o = run_scenario("length_lies", size, tmp_path)
    check_common(o, size)
    c = o.hostile.counters
    half = size // 2
    assert c["cotp_reassembly_cap"] == half  # the DT sequence without end-of-TSDU, once per S7 connection
    assert c["cotp_bad_length_indicator"] >= half  # the LI lies
    assert c["enip_bad_cpf"] == half  # the CPF item count / length lie, once per ENIP connection
    assert c["buffered_bytes_cap"] > 0


def test_ip_fragment_flood(tmp_path: Path) -> None:
    size = 20_000
    o = run_scenario("ip_fragment_flood", size, tmp_path)
    check_common(o, 3)
    c = o.hostile.counters
    for name in ("ip_fragment_cap", "ip_fragment_memory_cap", "ip_fragment_set_cap", "ip_fragment_oversize"):
        assert c.get(name, 0) > 0, name
    # the rogue write cut in two IP fragments arrived while the table was full and was still rebuilt
    assert c["ip_fragments_reassembled"] >= 1
    assert o.hostile.alerts["modbus-write-unauthorized-master"] >= 2
    assert o.hostile.summary["gauges"]["ip_fragment_bytes_peak"] >= MAX_FRAGMENT_BYTES  # the cap was reached


def test_absurd_timestamps(tmp_path: Path) -> None:
    size = 2_000
    o = run_scenario("absurd_timestamps", size, tmp_path)
    check_common(o, 20)
    c = o.hostile.counters
    assert c["capture_clock_jump_forward"] >= 3 and c["capture_clock_backwards"] >= 3
    # no active connection was ended by a jump (it would be picked up again without its handshake)...
    assert c.get("tcp_flows_without_handshake", 0) == 0
    # ...and the connection that really went quiet still ended after the idle timeout of real time
    assert c["flows_idle_timeout"] >= 1
    # the learning rules were not blinded by a first event dated 2100: they fire as on the clean capture
    for rule in ("ics-new-talker", "ics-new-function"):
        assert o.hostile.alerts.get(rule, 0) >= o.alone.alerts.get(rule, 0) > 0, rule
    # request/response pairing survived the plant's clock steps: every latency is a real one (never
    # negative, never a day), and only the two pairs straddling the two steps have none
    paired = [lat for lat in o.hostile.latencies if lat is not None]
    assert paired and all(0.0 <= lat <= 1.0 for lat in paired)
    assert len(o.hostile.latencies) - len(paired) == 2


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_generators_are_deterministic(tmp_path: Path, name: str) -> None:
    small = {"syn_flood": 500, "overlap_flood": 500, "ip_fragment_flood": 500, "absurd_timestamps": 50}.get(name, 5)
    a = SCENARIOS[name](tmp_path / "a.pcap", small)
    b = SCENARIOS[name](tmp_path / "b.pcap", small)
    assert a.packets == b.packets > 0 and a.hostile_packets > 0
    assert (tmp_path / "a.pcap").read_bytes() == (tmp_path / "b.pcap").read_bytes()
