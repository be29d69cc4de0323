"""Incident grouping and the four national levels (docs/incidents.md)."""

from __future__ import annotations

from rules_testutil import T0

from alerts.incidents import LEVEL_NAMES, IncidentGrouper, grade
from alerts.records import Alert, Incident
from detectors.rules.attack import tactic_order, technique_tactics

_n = 0


def alert(severity: str, techniques: tuple[str, ...], ts: float, asset: str = "10.10.2.11", src: str = "10.10.9.66") -> Alert:
    global _n
    _n += 1
    tactics = sorted({t for x in techniques for t in technique_tactics(x)}, key=tactic_order)
    return Alert(
        id=f"a{_n}",
        ts=ts,
        rule_id=f"rule-{techniques[0]}",
        rule_name="r",
        severity=severity,
        techniques=techniques,
        tactics=tuple(tactics),
        protocol="modbus",
        src=src,
        dst=asset,
        asset=asset,
        first_ts=ts,
    )


def test_alerts_on_one_asset_within_the_window_make_one_incident() -> None:
    g = IncidentGrouper(window=600)
    i1 = g.add(alert("medium", ("T0888",), T0))
    i2 = g.add(alert("medium", ("T0846",), T0 + 500))
    i3 = g.add(alert("low", ("T0855",), T0 + 500, asset="10.10.2.12"))
    i4 = g.add(alert("low", ("T0855",), T0 + 1200))  # 700 s after the last one: a new incident
    assert i1 is i2 and i1.alert_count == 2 and i1.techniques == ["T0888", "T0846"]
    assert i3 is not i1 and i4 is not i1
    assert i1.first_ts == T0 and i1.last_ts == T0 + 500
    assert i1.sources == ["10.10.9.66"] and len(i1.alert_ids) == 2


def test_levels_rise_with_the_chain() -> None:
    g = IncidentGrouper()
    inc = g.add(alert("medium", ("T0846",), T0))  # discovery
    assert (inc.level, inc.level_name, inc.severity) == (4, "一般", "low")
    g.add(alert("medium", ("T0888",), T0 + 1))  # a second rule
    assert inc.level == 3 and inc.level_name == "较大"
    g.add(alert("high", ("T0855",), T0 + 2))  # high, reaches Impair Process Control, 2 tactics
    assert (inc.level, inc.level_name, inc.severity) == (2, "重大", "high")
    g.add(alert("critical", ("T0858", "T0881"), T0 + 3))  # critical, Inhibit Response Function, 5 tactics
    assert (inc.level, inc.level_name, inc.severity) == (1, "特别重大", "critical")
    assert inc.tactics == ["Execution", "Evasion", "Discovery", "Inhibit Response Function", "Impair Process Control"]
    g.add(alert("low", ("T0846",), T0 + 4))
    assert inc.level == 1  # never falls


def test_grading_rules() -> None:
    def inc(max_sev: str, tactics: list[str], rules: int = 1, alerts: int = 1, critical: bool = False) -> int:
        i = Incident("i", "a", T0, T0, max_severity=max_sev, tactics=tactics, alert_count=alerts, critical_asset=critical)
        i.rule_ids = [f"rule-{n}" for n in range(rules)]
        i.techniques = ["T0846", "T0888"]  # several techniques from one rule do not raise the level
        return grade(i)[0]

    effect = "Impair Process Control"
    assert inc("critical", ["Discovery", "Execution", effect]) == 1
    assert inc("critical", ["Discovery", effect]) == 2
    assert inc("critical", ["Discovery"]) == 2
    assert inc("high", ["Discovery", effect]) == 2
    assert inc("high", [effect]) == 3
    assert inc("medium", ["Discovery"], rules=2) == 3
    assert inc("low", ["Discovery"], alerts=10) == 3
    assert inc("medium", ["Discovery"]) == 4
    assert inc("medium", ["Discovery"], critical=True) == 3  # a critical asset: one level up
    assert inc("critical", ["Discovery"], critical=True) == 1
    assert set(LEVEL_NAMES.values()) == {"一般", "较大", "重大", "特别重大"}


def test_critical_assets_and_bounds() -> None:
    g = IncidentGrouper(critical_asset=lambda ip: ip == "10.10.2.11", max_open=16)
    inc = g.add(alert("medium", ("T0846",), T0))
    assert inc.critical_asset and inc.level == 3 and "critical asset" in inc.level_reason
    for i in range(40):
        g.add(alert("low", ("T0846",), T0, asset=f"10.0.0.{i}"))
    assert len(g.open) <= 16 and g.evicted > 0
    g.tick(T0 + 10_000)
    assert g.open == {}


def test_ids_are_deterministic() -> None:
    a = alert("low", ("T0846",), T0)
    i1 = IncidentGrouper().add(a)
    i2 = IncidentGrouper().add(a)
    assert i1.id == i2.id and a.incident_id == i1.id


def test_the_examples_in_docs_incidents_md() -> None:
    import re

    from rules_testutil import REPO, replay

    doc = (REPO / "docs" / "incidents.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(pcaps/[^`]+)` \| ([\d.]+) \| (I{1,3}|IV) (\S+) \|", doc, re.MULTILINE)
    assert len(rows) >= 6
    roman = {"I": 1, "II": 2, "III": 3, "IV": 4}
    for capture, asset, level, name in rows:
        summary = replay(REPO / capture)
        got = {(i.asset, i.level, i.level_name) for i in summary.incidents.values()}
        assert (asset, roman[level], name) in got, (capture, got)
