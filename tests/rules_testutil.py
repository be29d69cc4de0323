"""Helpers shared by the rule, alert and store tests: hand-built events, engines from YAML text,
and replaying captures through the pipeline and the alerting runtime (no outputs written).

The tests of the default rule set against their crafted captures (tests/test_rules_default.py,
tests/test_rules_protocols.py) also share ``generated_captures_fixture`` and ``check_first_alert``
(and the ``engine_rules`` fixture of conftest.py)."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from detectors.rules import NamedLists, RuleEngine, load_text
from detectors.rules.engine import EngineSettings
from sensor.events import IcsEvent

REPO = Path(__file__).resolve().parents[1]
T0 = 1_767_225_600.0

LISTS = {
    "allowed_masters": ["10.10.1.10", "10.10.1.20", "192.168.50.0/24"],
    "engineering_workstations": ["10.10.1.20"],
    "critical_assets": ["10.10.2.11"],
    "gateway_units": ["1", "2", 3],
}


def ev(
    function: int = 3,
    function_name: str = "read_holding_registers",
    category: str = "read",
    *,
    ts: float = T0,
    protocol: str = "modbus",
    src: str = "10.10.9.66",
    sport: int = 49152,
    dst: str = "10.10.2.11",
    dport: int = 502,
    transport: str = "tcp",
    direction: str = "request",
    **kw: Any,
) -> IcsEvent:
    """An IcsEvent with Modbus-request defaults; any other field by keyword."""
    return IcsEvent(ts, protocol, src, sport, dst, dport, transport, direction, function, function_name, category, **kw)


def rules_yaml(body: str) -> str:
    return textwrap.dedent(body).strip() + "\n"


def engine_from(yaml_text: str, lists: dict[str, list[Any]] | None = None, **settings: Any) -> RuleEngine:
    """A RuleEngine from YAML text; fails the test if anything did not load."""
    rules, problems = load_text(rules_yaml(yaml_text), "test.yaml")
    errors = [p for p in problems if not p.warning]
    assert not errors, [str(p) for p in errors]
    engine = RuleEngine(rules, NamedLists(LISTS if lists is None else lists), EngineSettings(**settings))
    assert not engine.errors, [str(p) for p in engine.errors]
    return engine


def fired(engine: RuleEngine, *events: IcsEvent) -> list[str]:
    """Rule ids of the alerts the events raise, in order."""
    out = []
    for e in events:
        out.extend(a.rule_id for a in engine.observe(e))
    return out


def replay(path: Path, config: Any = None) -> Any:
    """Replay a capture through the pipeline and a fresh runtime without outputs: the AlertSummary."""
    from alerts.runtime import build_alerting
    from icswatch.config import load_config
    from sensor.pipeline import Pipeline

    cfg = config or load_config()
    runtime = build_alerting(cfg, outputs=[])
    pipeline = Pipeline(cfg.sensor, on_event=runtime.on_event, on_tick=runtime.on_tick)
    pipeline.replay_file(path)
    return runtime.close()


# ------------------------------------------------------------------------------------------------
# The default rule set against its crafted captures
# ------------------------------------------------------------------------------------------------


def generated_captures_fixture(generate: Callable[[Path], Any]) -> Any:
    """A module-scoped fixture ``generated``: the folder where ``generate(folder)`` (a capture script of
    tools/pcapgen/) wrote its captures, a fresh temporary one. Assign it to the name ``generated``."""

    @pytest.fixture(scope="module")
    def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
        out = tmp_path_factory.mktemp("pcaps")
        generate(out)
        return out

    return generated


def check_first_alert(
    rule_id: str,
    rule: Any,
    summary: Any,
    expected: tuple[str, str, list[dict[str, Any]]],
    distinct: dict[str, list[Any]],
    has: Callable[[Any, dict[str, Any]], bool],
) -> Any:
    """What every default rule's alerts on its own capture pass (``summary``: the AlertSummary of its replay).

    As many alerts as the rule's ``captures`` entry says; the first one from ``expected``'s source to its
    destination, with the rule's techniques and severity, at the time of the event that completed it,
    holding ``expected``'s evidence events in that order (``has(event, attrs)`` says whether an event
    matches; others may come between), with the values of ``distinct`` when the rule counts distinct
    values, and an ECS document naming the rule. Returns that alert, for the caller's own checks."""
    mine = [a for a in summary.alerts if a.rule_id == rule_id]
    assert len(mine) == rule.captures[f"pcaps/rule_{rule_id}.pcap"], (rule_id, dict(summary.by_rule))
    alert = mine[0]
    src, dst, evidence = expected
    assert (alert.src, alert.dst) == (src, dst), rule_id
    assert alert.techniques == rule.techniques and alert.severity == rule.severity
    assert alert.ts == alert.events[-1].ts  # the alert time is the event that completed it
    events = list(alert.events)
    pos = 0
    for attrs in evidence:  # each expected event, in order
        while pos < len(events) and not has(events[pos], attrs):
            pos += 1
        assert pos < len(events), (rule_id, attrs, [e.to_dict() for e in events])
        pos += 1
    if rule.threshold is not None and rule.threshold.distinct:
        assert alert.extra["threshold"]["distinct_values"] == distinct[rule_id]
        assert alert.count == len(distinct[rule_id]) and len(alert.events) <= 5
    doc = alert.to_ecs()
    assert doc["rule"]["id"] == rule_id and doc["ics"]["evidence"]
    return alert
