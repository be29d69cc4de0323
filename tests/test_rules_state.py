"""Stateful keywords: threshold (count, distinct, sliding window, bounds), new (learning, known lists,
bounds), suppression (per rule, per key, for a time) and the config's standing suppressions."""

from __future__ import annotations

from types import SimpleNamespace

from rules_testutil import LISTS, T0, engine_from, ev, fired, rules_yaml

from detectors.rules import NamedLists, RuleEngine, load_text
from detectors.rules.state import FirstSeenState, SuppressState, ThresholdState

THRESHOLD = """
rules:
  - id: storm
    title: Storm
    severity: medium
    techniques: [T0888]
    suppress: {for: 0}
    detection: {sel: {direction: response, result: exception}}
    threshold: {count: 3, within: 10s, group_by: [src, dst]}
"""


def exc(ts: float, src: str = "10.10.2.11", dst: str = "10.10.9.66") -> object:
    return ev(3, "read_holding_registers", "read", ts=ts, direction="response", result="exception", code=2, src=src, dst=dst)


def test_count_threshold_sliding_window_and_restart() -> None:
    e = engine_from(THRESHOLD)
    assert fired(e, exc(T0), exc(T0 + 6)) == []
    assert fired(e, exc(T0 + 12)) == []  # T0 left the window: 2 within 10 s
    alerts = e.observe(exc(T0 + 15))
    assert [a.rule_id for a in alerts] == ["storm"]
    a = alerts[0]
    assert a.count == 3 and [x.ts for x in a.events] == [T0 + 6, T0 + 12, T0 + 15]
    assert a.first_ts == T0 + 6 and a.ts == T0 + 15
    assert a.group == {"src": "10.10.2.11", "dst": "10.10.9.66"}
    assert a.extra["threshold"] == {"count": 3, "within": 10.0}
    assert fired(e, exc(T0 + 16), exc(T0 + 17)) == []  # the group starts over after firing
    assert fired(e, exc(T0 + 18)) == ["storm"]


def test_groups_are_counted_apart() -> None:
    e = engine_from(THRESHOLD)
    events = [exc(T0 + i, dst=f"10.10.9.{i % 2}") for i in range(5)]
    assert fired(e, *events) == ["storm"]  # the 5th event completes dst .0 (events 0, 2, 4)


def test_distinct_threshold_counts_values_not_events() -> None:
    e = engine_from(
        """
        rules:
          - id: fc-scan
            title: Scan
            severity: medium
            techniques: [T0888]
            detection: {sel: {direction: request}}
            threshold: {count: 4, within: 60s, group_by: [src, dst], distinct: function}
        """
    )
    same = [ev(3, ts=T0 + i) for i in range(10)]
    assert fired(e, *same) == []
    alerts = e.observe(ev(1, "read_coils", ts=T0 + 20)) + e.observe(ev(2, "x", ts=T0 + 21)) + e.observe(ev(4, "y", ts=T0 + 22))
    assert [a.rule_id for a in alerts] == ["fc-scan"]
    assert alerts[0].extra["threshold"]["distinct_values"] == [3, 1, 2, 4]
    assert [x.function for x in alerts[0].events] == [3, 1, 2, 4]  # the last event per value, in time order


def test_distinct_values_expire() -> None:
    e = engine_from(
        """
        rules:
          - id: fc-scan
            title: Scan
            severity: medium
            techniques: [T0888]
            detection: {sel: {direction: request}}
            threshold: {count: 3, within: 10s, distinct: function}
        """
    )
    assert fired(e, ev(1, ts=T0), ev(2, ts=T0 + 5), ev(3, ts=T0 + 20)) == []  # 1 and 2 are stale at T0+20
    assert fired(e, ev(4, ts=T0 + 21), ev(5, ts=T0 + 22)) == ["fc-scan"]


def test_threshold_state_is_bounded_and_swept() -> None:
    t = ThresholdState(5, 10.0, lambda e: e.src, None, max_keys=16)
    for i in range(100):
        t.add(SimpleNamespace(ts=T0 + i * 0.01, src=f"h{i}"))
    assert len(t.groups) <= 16 and t.evicted >= 84
    t.sweep(T0 + 100)
    assert t.groups == {}


def test_threshold_ignores_a_capture_clock_restart() -> None:
    e = engine_from(THRESHOLD)
    assert fired(e, exc(T0 + 1000), exc(T0 + 1001)) == []
    assert fired(e, exc(T0)) == []  # clock went back: the window starts over instead of mixing clocks
    assert fired(e, exc(T0 + 1), exc(T0 + 2)) == ["storm"]


NEW = """
rules:
  - id: new-talker
    title: New talker
    severity: medium
    techniques: [T0848]
    detection: {sel: {direction: request}}
    new: {value: src, per: dst, learn: 60s, known: [allowed_masters]}
"""


def test_new_learns_then_alerts_once_per_value_and_asset() -> None:
    e = engine_from(NEW)
    assert fired(e, ev(ts=T0, src="10.10.1.10"), ev(ts=T0 + 10, src="10.0.0.5")) == []  # learning
    assert fired(e, ev(ts=T0 + 70, src="10.0.0.5")) == []  # learned
    alerts = e.observe(ev(ts=T0 + 80, src="10.0.0.6"))
    assert [a.rule_id for a in alerts] == ["new-talker"]
    assert alerts[0].extra["new"] == {"src": "10.0.0.6"} and alerts[0].group == {"dst": "10.10.2.11"}
    assert fired(e, ev(ts=T0 + 90, src="10.0.0.6")) == []  # remembered
    assert fired(e, ev(ts=T0 + 95, src="10.0.0.6", dst="10.10.2.12")) == ["new-talker"]  # new for that asset
    assert fired(e, ev(ts=T0 + 99, src="192.168.50.9")) == []  # in allowed_masters (a CIDR entry)


def test_learning_starts_with_the_first_event_the_engine_sees() -> None:
    e = engine_from(NEW)
    e.observe(ev(16, "write_multiple_registers", "write", ts=T0, direction="response"))  # not even a match
    assert fired(e, ev(ts=T0 + 61, src="10.0.0.5")) == ["new-talker"]


def test_new_with_value_pairs() -> None:
    e = engine_from(
        """
        rules:
          - id: new-function
            title: New function
            severity: low
            techniques: [T0855]
            detection: {sel: {direction: request}}
            new: {value: [protocol, function], per: dst, learn: 10s}
        """
    )
    assert fired(e, ev(3, ts=T0), ev(6, "write_single_register", "write", ts=T0 + 20)) == ["new-function"]
    assert fired(e, ev(3, ts=T0 + 21)) == []


def test_first_seen_state_bounds() -> None:
    s = FirstSeenState(lambda e: e.v, lambda e: e.a, None, learn=0.0, max_keys=4, max_values=3)
    for i in range(10):
        assert s.check(SimpleNamespace(ts=T0 + 1, v=1, a=i))
    assert len(s.seen) == 4 and s.evicted == 6
    for v in range(2, 10):
        s.check(SimpleNamespace(ts=T0 + 2, v=v, a=9))
    assert len(s.seen[9]) == 3 and s.capped == 6


def test_suppression_per_key_and_time() -> None:
    e = engine_from(
        """
        rules:
          - id: writes
            title: Writes
            severity: high
            techniques: [T0855]
            detection: {sel: {direction: request, category: write}}
            suppress: {for: 10m, by: [src, dst]}
        """
    )
    w = lambda ts, src="10.10.9.66", dst="10.10.2.11": ev(6, "write_single_register", "write", ts=ts, src=src, dst=dst)
    assert fired(e, w(T0)) == ["writes"]
    assert fired(e, w(T0 + 60), w(T0 + 599)) == []
    assert fired(e, w(T0 + 60, dst="10.10.2.12")) == ["writes"]  # another key
    assert fired(e, w(T0 + 601)) == ["writes"]  # quiet period over
    assert e.rule("writes").stats()["suppressed"] == 2


def test_default_suppression_applies_when_the_rule_sets_none() -> None:
    text = """
    rules:
      - id: writes
        title: Writes
        severity: high
        techniques: [T0855]
        detection: {sel: {direction: request, category: write}}
    """
    e = engine_from(text, default_suppress=30)
    w = lambda ts: ev(6, "write_single_register", "write", ts=ts)
    assert fired(e, w(T0), w(T0 + 29), w(T0 + 31)) == ["writes", "writes"]
    e0 = engine_from(text, default_suppress=0)
    assert fired(e0, w(T0), w(T0 + 1)) == ["writes", "writes"]


def test_suppress_state_bounded() -> None:
    s = SuppressState(100.0, lambda e: e.k, max_keys=8)
    for i in range(50):
        s.check(SimpleNamespace(ts=T0, k=i))
    assert len(s.until) <= 8 and s.evicted > 0


def test_standing_suppressions_from_config() -> None:
    from icswatch.config import RulesConfig

    rules, _ = load_text(
        rules_yaml(
            """
            rules:
              - id: modbus-writes
                title: Writes
                severity: high
                techniques: [T0855]
                suppress: {for: 0}
                detection: {sel: {direction: request, category: write}}
            """
        ),
        "t.yaml",
    )
    entries = [
        RulesConfig.Suppression(rule="modbus-*", src="@allowed_masters"),
        RulesConfig.Suppression(rule="modbus-writes", dst="10.10.3.0/24", until=T0 + 100),
    ]
    e = RuleEngine(rules, NamedLists(LISTS), suppressions=entries)
    w = lambda ts, src, dst="10.10.2.11": ev(6, "write_single_register", "write", ts=ts, src=src, dst=dst)
    assert fired(e, w(T0, "10.10.1.10")) == []
    assert fired(e, w(T0, "10.10.9.66")) == ["modbus-writes"]
    assert fired(e, w(T0 + 50, "10.10.9.66", "10.10.3.5")) == []
    assert fired(e, w(T0 + 150, "10.10.9.66", "10.10.3.5")) == ["modbus-writes"]  # lapsed
    assert e.suppressed_by_config == 2
    bad = RuleEngine(rules, NamedLists(LISTS), suppressions=[RulesConfig.Suppression(src="@nobody")])
    assert [str(p) for p in bad.errors] == ["config: rules.suppress: unknown list 'nobody'"]
