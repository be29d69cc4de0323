"""Helpers shared by the rule, alert and store tests: hand-built events, engines from YAML text,
and replaying captures through the pipeline and the alerting runtime (no outputs written)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

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
