"""The alerting runtime's signature table: one lookup per event counts it for the asset inventory and
finds the rules its signature still needs (alerts/runtime.py, RuleEngine.signature_runner).

The reference is the engine's own per-event path (``RuleEngine.observe``: every rule of the event's
bucket, on every event): on real and crafted captures the signature path must raise the same alerts,
and the inventory it feeds must equal one fed event by event."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from rules_testutil import REPO, T0, engine_from, ev

from alerts.runtime import AlertingRuntime
from detectors.rules import RuleEngine
from icswatch.config import load_config
from sensor.assets import AssetInventory, restates_request
from sensor.events import IcsEvent
from sensor.pipeline import Pipeline

CRAFTED = sorted((REPO / "pcaps").glob("*.pcap"))
# Real captures of every protocol with rules, and the labelled IEC 104 trace whose clock restarts.
SHARED = [
    "profinet/icsnpp__profinet_io_cm.pcap",
    "dnp3/zeek__dnp3.pcap",
    "modbus/suricata__modbus.pcap",
    "modbus/iti__ModbusTCP.pcap",
    "s7comm/iti__wincc_s400_production.pcapng",
    "iec104/iti__TestDissectIec104.pcap",
    "enip/iti__CL5000EIP-Reboot_or_Restart.pcap",
    "bacnet/icsnpp__bacnet_services.pcap",
    "opcua/icsnpp__open62541_client-server_mainloop-not-localhost-non-standard-port.pcap",
]


def events_of(path: Path) -> list[IcsEvent]:
    out: list[IcsEvent] = []
    Pipeline(load_config().sensor, on_event=out.append).replay_file(path)
    return out


def per_event_alerts(events: list[IcsEvent]) -> list[tuple[Any, ...]]:
    """Every rule of each event's bucket on every event: the engine without the signature table."""
    engine = RuleEngine.from_config(load_config().rules)
    out = []
    for e in events:
        out.extend(_key(a) for a in engine.observe(e))
    return out


def signature_alerts(events: list[IcsEvent]) -> list[tuple[Any, ...]]:
    engine = RuleEngine.from_config(load_config().rules)
    got: list[tuple[Any, ...]] = []
    rt = AlertingRuntime([engine])
    rt.add_alert_hook(lambda a: got.append(_key(a)))
    last = None
    for e in events:
        if last is None or abs(e.ts - last) >= 1.0:  # ticks about once a second, as the pipeline does
            rt.on_tick(e.ts)
            last = e.ts
        rt.on_event(e)
    return got


def _key(a: Any) -> tuple[Any, ...]:
    return (a.rule_id, a.ts, a.src, a.dst, a.count, tuple(e.id for e in a.events))


def shared_paths() -> list[Path]:
    from conftest import require_shared

    root = require_shared()
    paths = [root / "pcaps" / p for p in SHARED]
    paths += [root / "datasets" / "ipal_iec104" / "S-0.01-1.pcap"]  # its clock restarts 15 times
    missing = [p for p in paths if not p.is_file()]
    assert not missing, missing
    return paths


@pytest.mark.parametrize("name", [p.name for p in CRAFTED])
def test_same_alerts_as_every_rule_on_every_event_crafted(name: str) -> None:
    events = events_of(REPO / "pcaps" / name)
    assert signature_alerts(events) == per_event_alerts(events)


def test_same_alerts_as_every_rule_on_every_event_shared() -> None:
    compared = 0
    for path in shared_paths():
        events = events_of(path)
        reference = per_event_alerts(events)
        assert signature_alerts(events) == reference, path.name
        compared += len(reference)
    assert compared > 0  # the captures do raise alerts: the comparison is not vacuous


def test_inventory_from_signatures_equals_one_fed_event_by_event() -> None:
    paths = [REPO / "pcaps" / n for n in ("modbus_normal.pcap", "enip_normal.pcap", "bacnet_normal.pcap")]
    paths += shared_paths()[:4]
    for path in paths:
        events = events_of(path)
        direct, counted = AssetInventory(), AssetInventory()
        rt = AlertingRuntime([RuleEngine.from_config(load_config().rules)])
        rt.attach_inventory(counted)
        for e in events:
            direct.observe(e)
            rt.on_event(e)
        assert counted.records() == direct.records(), path.name
        # an operation counts once: a response that restates its request is not counted again
        assert counted.events == direct.events == sum(not restates_request(e) for e in events)


# -- what the engine narrows a signature down to ---------------------------------------------------------

RULES = """
rules:
  - id: new-talker
    title: new talker
    severity: medium
    techniques: [T0886]
    detection:
      req: {direction: request}
    new: {value: [src], per: [dst], learn: 0s}
  - id: fc-scan
    title: function scan
    severity: medium
    techniques: [T0888]
    detection:
      req: {direction: request}
    threshold: {count: 3, within: 60s, group_by: [src, dst], distinct: function}
  - id: big-write
    title: write above 1000
    severity: high
    techniques: [T0855]
    suppress: {for: 0}
    detection:
      w: {category: write, values|gt: 1000}
"""


def poll(fc: int, ts: float, *, src: str = "10.10.1.10", flow: int = 7, **kw: Any) -> IcsEvent:
    return ev(fc, f"fc{fc}", kw.pop("category", "read"), ts=ts, src=src, flow_id=flow, **kw)


def test_first_event_settles_first_seen_and_keeps_counting_rules() -> None:
    engine = engine_from(RULES)
    first = engine.signature_runner(poll(3, T0))
    assert [a.rule_id for a in first.alerts or []] == ["new-talker"]  # learn 0s: the very first talker is new
    assert first.run is None  # the talker is known now: nothing runs on every later event
    assert [r.id for r in first.refresh.rules] == ["fc-scan"] and first.refresh_seconds == 1.0  # type: ignore[union-attr]
    write = engine.signature_runner(poll(6, T0 + 1, category="write", values=(5,)))
    # the value varies per event: the write rule runs on every one of the signature's events
    assert [r.id for r in write.run.rules] == ["big-write"]  # type: ignore[union-attr]


def test_signatures_that_settle_the_same_rules_share_one_plan() -> None:
    """Each new connection brings new signatures: what they need is worked out once per bucket and
    set of settled rules, and reused (the same functions), not rebuilt per signature."""
    engine = engine_from(RULES)
    worked_out = []
    plan = engine._plan
    engine._plan = lambda *a: worked_out.append(a[1]) or plan(*a)  # type: ignore[method-assign]
    first = engine.signature_runner(poll(3, T0))
    again = engine.signature_runner(poll(3, T0 + 1, flow=8))  # a second connection of the same talker
    assert again.alerts is None  # the talker is known: no new-talker alert, the same rules settled
    assert (again.run, again.refresh, again.refresh_seconds) == (first.run, first.refresh, first.refresh_seconds)
    assert again.refresh is first.refresh
    # learn 0s and a new talker: new-talker is settled by its first event too (it is remembered now)
    other = engine.signature_runner(poll(3, T0 + 2, src="10.10.1.99", flow=9))
    assert [a.rule_id for a in other.alerts or []] == ["new-talker"] and other.refresh is first.refresh
    # a write's value varies per event: big-write stays on every event, a plan of its own
    write = engine.signature_runner(poll(6, T0 + 3, category="write", values=(5,)))
    assert [r.id for r in write.run.rules] == ["big-write"]  # type: ignore[union-attr]
    assert len(worked_out) == 2  # the read plan (new-talker settled) once, the write plan once
    assert [[r.id for r in settled] for settled in worked_out] == [["new-talker"], ["new-talker"]]


def test_scan_counts_a_value_kept_in_use_by_polling() -> None:
    """A master polls FC 3 for five minutes; a scanner on the same pair then tries two other codes.
    FC 3 is still in the minute's window (refreshed once a second, not on each poll), so the third
    distinct code fires the scan rule, as on the per-event path."""
    engine = engine_from(RULES)
    rt = AlertingRuntime([engine])
    got: list[str] = []
    rt.add_alert_hook(lambda a: got.append(a.rule_id))
    t = T0
    for _ in range(3000):
        t += 0.1
        if int(t) != int(t - 0.1):
            rt.on_tick(t)
        rt.on_event(poll(3, t))
    rt.on_event(poll(4, t + 0.05))
    rt.on_event(poll(1, t + 0.07))
    assert got == ["new-talker", "fc-scan"]


def test_refresh_is_due_again_when_the_clock_goes_back() -> None:
    engine = engine_from(RULES)
    rt = AlertingRuntime([engine])
    rt.on_tick(T0)
    rt.on_event(poll(3, T0))
    [sig] = rt._sigs.values()
    assert sig[6] == T0 + 1.0
    rt.on_tick(T0 + 0.5)
    rt.on_tick(T0 - 3600)  # a clock restart
    assert sig[6] == T0 - 3600


def test_a_forgotten_talker_is_new_again_after_the_next_tick() -> None:
    """The first-seen state is bounded (max_state assets): when it forgets a settled signature's
    talker, the per-event path would call the talker new again, and so does the signature path once
    the runtime's next tick has seen the engine forget."""
    engine = engine_from(RULES, max_state=2)
    rt = AlertingRuntime([engine])
    got: list[tuple[str, str]] = []
    rt.add_alert_hook(lambda a: got.append((a.rule_id, a.dst)))
    rt.on_tick(T0)
    rt.on_event(poll(3, T0, dst="10.10.2.1", flow=1))
    rt.on_event(poll(3, T0 + 0.1, dst="10.10.2.2", flow=2))
    rt.on_event(poll(3, T0 + 0.2, dst="10.10.2.3", flow=3))  # the state forgets 10.10.2.1's talkers
    rt.on_event(poll(3, T0 + 0.3, dst="10.10.2.1", flow=1))  # settled: not checked before a tick
    rt.on_tick(T0 + 1.0)
    rt.on_event(poll(3, T0 + 1.1, dst="10.10.2.1", flow=1))
    assert [g for g in got if g[0] == "new-talker"] == [
        ("new-talker", "10.10.2.1"), ("new-talker", "10.10.2.2"), ("new-talker", "10.10.2.3"),
        ("new-talker", "10.10.2.1"),
    ]


def test_flowless_events_take_the_whole_bucket_each_time() -> None:
    engine = engine_from(RULES)
    rt = AlertingRuntime([engine])
    inventory = AssetInventory()
    rt.attach_inventory(inventory)
    got: list[str] = []
    rt.add_alert_hook(lambda a: got.append(a.rule_id))
    for i in range(3):  # no flow id: a signature would not fix their endpoints
        rt.on_event(poll(3 + i, T0 + i, flow=0, dst=f"10.10.3.{i}"))
    assert got == ["new-talker"] * 3 + ["fc-scan"] * 0 and not rt._sigs
    assert inventory.events == 3 and len(inventory.assets) == 4


def test_pipeline_flow_fixes_what_the_signature_leaves_out() -> None:
    """The signature leaves out what a flow fixes for one sender, address and port (the receiver, the
    transport, the MACs): the flow table must keep that true on real captures (a host talking to itself
    included), or a signature would mix two conversations."""
    for path in shared_paths() + CRAFTED[:6]:
        seen: dict[tuple[int, str], tuple[Any, ...]] = {}
        for e in events_of(path):
            if not e.flow_id:
                continue
            fixed = (e.dst, e.dport, e.transport, e.src_mac, e.dst_mac)
            assert seen.setdefault((e.flow_id, e.src, e.sport), fixed) == fixed, (path.name, e.to_dict())


ANSWER_RULES = """
rules:
  - id: slow-answer
    title: a read answered slowly
    severity: low
    techniques: [T0801]
    suppress: {for: 0}
    detection:
      r: {direction: response, category: read, latency|gt: 0.5}
"""


def answer(fc: int, ts: float, latency: float | None, **kw: Any) -> IcsEvent:
    """A Modbus response from the PLC of ``poll``'s flow (``latency`` set: paired with its request)."""
    return ev(fc, f"fc{fc}", kw.pop("category", "read"), ts=ts, src="10.10.2.11", sport=502, dst="10.10.1.10",
              dport=49152, direction="response", flow_id=7, latency=latency, **kw)


def test_an_operation_counts_once_in_the_inventory() -> None:
    """A response paired with its request (latency set), answered ok, restates the request: both the
    signature path and the event-by-event path count the operation once, at the request. An exception,
    an identity, or a response whose request was not seen counts on its own."""
    events = [
        poll(3, T0),
        answer(3, T0 + 0.01, 0.01),  # restates its request
        answer(3, T0 + 0.02, None),  # its request was not seen
        answer(3, T0 + 0.03, 0.01, result="exception", code=2),  # says something new
        answer(43, T0 + 0.04, 0.01, category="diagnostic", fields={"identity": {"vendor": "Acme"}}),
        answer(3, T0 + 5.0, 0.01),  # restates its request: the PLC's last time stays the identity's
    ]
    assert [restates_request(e) for e in events] == [False, True, False, False, False, True]
    direct, counted = AssetInventory(), AssetInventory()
    rt = AlertingRuntime([engine_from(RULES)])
    rt.attach_inventory(counted)
    for e in events:
        direct.observe(e)
        rt.on_event(e)
    assert counted.records() == direct.records()
    assert counted.events == direct.events == 4
    plc = counted.assets["10.10.2.11"]
    assert plc.events == 4 and plc.last_seen == T0 + 0.04
    assert plc.identity == {"modbus": {"vendor": "Acme"}}
    assert not rt._answers  # no rule reads ok read responses: they never entered a table


def test_a_rule_that_reads_answers_still_runs_on_them() -> None:
    """Leaving answers out of the signature table is only for kinds no rule reads: a rule on read
    responses fires on paired answers as on the per-event path, through the answers' table, and the
    answers are still not counted."""
    events = [poll(3, T0), answer(3, T0 + 0.1, 0.1), poll(3, T0 + 1), answer(3, T0 + 1.9, 0.9),
              poll(3, T0 + 2), answer(3, T0 + 2.1, 0.1), poll(3, T0 + 3), answer(3, T0 + 3.8, 0.8)]
    engine = engine_from(ANSWER_RULES)
    reference = [(a.rule_id, a.ts) for e in events for a in engine.observe(e)]
    assert reference == [("slow-answer", T0 + 1.9), ("slow-answer", T0 + 3.8)]
    rt = AlertingRuntime([engine_from(ANSWER_RULES)])
    inventory = AssetInventory()
    rt.attach_inventory(inventory)
    got: list[tuple[str, float]] = []
    rt.add_alert_hook(lambda a: got.append((a.rule_id, a.ts)))
    for e in events:
        rt.on_event(e)
    assert got == reference
    assert len(rt._answers) == 1 and inventory.events == 4  # the four requests
