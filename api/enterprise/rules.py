"""The rule set as the API sees it: the configured rule files, plus the switches and standing
suppressions made through the API (kept in the state file, see state.py).

``build_engine(config, state)`` is the one place both are combined; the API's listing and every
replay job use it, so a rule switched off in the dashboard is off for the next uploaded capture.
Each worker process keeps its engine and rebuilds it when the state file's ``rules_generation``
moved (a switch, a suppression or a reload in any worker), so a reload needs no restart.

The running sensors (``icswatch sniff``) read their own configuration; ``export_overrides`` gives the
switches and suppressions in the configuration file's shape (``rules.disabled``, ``rules.suppress``)
for an operator or a deployment tool to merge (see docs/api.md).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from api.enterprise.state import StateStore
from icswatch.config import Config, RulesConfig, source_checkout


def rules_config(config: Config, state: StateStore | None) -> RulesConfig:
    """The configured rules section with the API's standing suppressions added."""
    rc = config.rules.model_copy(deep=True)
    if state is not None:
        extra = []
        for s in state.suppressions():
            extra.append(
                RulesConfig.Suppression(
                    rule=s["rule"], src=s["src"] or None, dst=s["dst"] or None, until=s["until"], reason=s["reason"] or ""
                )
            )
        rc.suppress = [*rc.suppress, *extra]
    return rc


def apply_overrides(engine: Any, overrides: dict[str, dict[str, Any]]) -> None:
    """Switch rules on or off as the API recorded (over the files' ``enabled:`` and ``rules.disabled``)."""
    known = {r.id for r in engine.rules}
    for rule_id, o in overrides.items():
        if rule_id not in known:
            continue
        if o["enabled"]:
            engine.disabled_ids.discard(rule_id)
        else:
            engine.disabled_ids.add(rule_id)
    engine.active = [r for r in engine.rules if r.id not in engine.disabled_ids]
    engine._index.clear()  # the per-event dispatch cache is built from ``active``


def build_engine(config: Config, state: StateStore | None) -> Any:
    from detectors.rules import RuleEngine

    engine = RuleEngine.from_config(rules_config(config, state))
    if state is not None:
        apply_overrides(engine, state.rule_overrides())
    return engine


def _relative(path: str) -> str:
    """A rule file as the dashboard shows it: relative to the repository when run from a checkout
    (``rules/modbus.yaml``), else its full path (an installed icswatch's default rules live in the
    ``icswatch_rules`` package folder, which is where an operator would look for them)."""
    root = source_checkout()
    if root is None:
        return path
    try:
        return Path(path).resolve().relative_to(root).as_posix()
    except (ValueError, OSError):
        return path


class RuleSet:
    """The API's view of the rules, rebuilt when another worker changed them."""

    def __init__(self, config: Config, state: StateStore) -> None:
        self.config = config
        self.state = state
        self._lock = threading.Lock()
        self._engine: Any = None
        self._generation: str | None = None
        self.loaded_at = 0.0

    def engine(self) -> Any:
        gen = self.state.meta("rules_generation")
        with self._lock:
            if self._engine is None or gen != self._generation:
                import time

                self._engine = build_engine(self.config, self.state)
                self._generation = gen
                self.loaded_at = time.time()
            return self._engine

    def reload(self) -> Any:
        """Read the rule files again (all workers follow at their next request)."""
        self.state.bump("rules_generation")
        return self.engine()

    def rule(self, rule_id: str) -> Any:
        return self.engine().rule(rule_id)

    def describe(self, r: Any, engine: Any, overrides: dict[str, dict[str, Any]]) -> dict[str, Any]:
        rule = r.rule
        o = overrides.get(rule.id)
        return {
            "id": rule.id,
            "title": rule.title,
            "description": getattr(rule, "description", "") or "",
            "severity": rule.severity,
            "techniques": list(rule.techniques),
            "technique_names": list(r.technique_names),
            "tactics": list(r.tactics),
            "protocols": sorted(rule.protocols) if rule.protocols else ["any"],
            "enabled": rule.id not in engine.disabled_ids,
            "override": None if o is None else {"enabled": o["enabled"], "at": o["at"], "by": o["by"]},
            "file": f"{_relative(str(rule.path))}:{rule.line}",
        }

    def listing(self) -> tuple[list[dict[str, Any]], Any]:
        engine = self.engine()
        overrides = self.state.rule_overrides()
        return [self.describe(r, engine, overrides) for r in engine.rules], engine

    def export_overrides(self) -> dict[str, Any]:
        """The switches and suppressions in the configuration file's shape (``rules:`` section)."""
        overrides = self.state.rule_overrides()
        disabled = sorted(k for k, o in overrides.items() if not o["enabled"])
        enabled = sorted(k for k, o in overrides.items() if o["enabled"])
        suppress = []
        for s in self.state.suppressions():
            entry: dict[str, Any] = {"rule": s["rule"]}
            for k in ("src", "dst", "until"):
                if s[k] is not None:
                    entry[k] = s[k]
            entry["reason"] = s["reason"]
            suppress.append(entry)
        return {"rules": {"disabled": disabled, "suppress": suppress}, "enabled_by_api": enabled}
