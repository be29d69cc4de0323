"""Incident grouping: alerts on the same asset within a window become one incident, graded onto the
four national levels (一般 / 较大 / 重大 / 特别重大). Criteria and examples: docs/incidents.md.

Grouping: an alert joins the open incident of its asset (``alert.asset``: the ICS device a request
targeted, or the scanning host for scan rules) when it comes no later than ``window`` seconds after
that incident's last alert; otherwise it opens a new incident. The incident keeps the technique
chain (distinct techniques in order of first appearance) and the tactics it reached.

Grading (re-done on every alert, so an incident's level only rises as it grows):

- Level I, 特别重大 (especially major): a critical alert, a tactic that acts on the process
  (Inhibit Response Function, Impair Process Control or Impact) and a chain of at least 3 tactics.
- Level II, 重大 (major): a critical alert; or a high alert with a process-effect tactic in a chain
  of at least 2 tactics.
- Level III, 较大 (larger): a high alert; or alerts of at least 2 different rules; or at least 10 alerts.
- Level IV, 一般 (general): anything else.
- An asset in the ``critical_assets`` list raises the level by one (never above I).

The incident's own severity follows its level: IV low, III medium, II high, I critical.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from alerts.records import SEVERITY_RANK, Alert, Incident
from detectors.rules.attack import EFFECT_TACTICS, tactic_order

LEVEL_NAMES = {4: "一般", 3: "较大", 2: "重大", 1: "特别重大"}
LEVEL_NAMES_EN = {4: "general (IV)", 3: "larger (III)", 2: "major (II)", 1: "especially major (I)"}
LEVEL_SEVERITY = {4: "low", 3: "medium", 2: "high", 1: "critical"}
MAX_IDS = 1000  # alert ids listed in one incident (the count goes on)


def incident_id(asset: str, first_alert_id: str) -> str:
    return hashlib.blake2b(f"incident|{asset}|{first_alert_id}".encode(), digest_size=12).hexdigest()


def grade(inc: Incident) -> tuple[int, str]:
    """(level, reason) from what the incident holds; see the module docstring."""
    sev = SEVERITY_RANK.get(inc.max_severity, 1)
    n_tactics = len(inc.tactics)
    effect = [t for t in inc.tactics if t in EFFECT_TACTICS]
    if sev >= 4 and effect and n_tactics >= 3:
        level, reason = 1, f"critical alert, reached {effect[-1]}, chain of {n_tactics} tactics"
    elif sev >= 4:
        level, reason = 2, "critical alert"
    elif sev >= 3 and effect and n_tactics >= 2:
        level, reason = 2, f"high alert, reached {effect[-1]}, chain of {n_tactics} tactics"
    elif sev >= 3:
        level, reason = 3, "high alert"
    elif len(inc.rule_ids) >= 2:
        level, reason = 3, f"alerts of {len(inc.rule_ids)} rules"
    elif inc.alert_count >= 10:
        level, reason = 3, f"{inc.alert_count} alerts"
    else:
        level, reason = 4, f"{inc.max_severity} alert(s)"
    if inc.critical_asset and level > 1:
        level -= 1
        reason += "; critical asset (+1 level)"
    return level, reason


class IncidentGrouper:
    """Assigns every alert to an incident. Bounded: at most ``max_open`` incidents are tracked."""

    def __init__(
        self,
        window: float = 1800.0,
        critical_asset: Callable[[str], bool] | None = None,
        max_open: int = 10_000,
    ) -> None:
        self.window = window
        self.critical_asset = critical_asset
        self.max_open = max_open
        self.open: dict[str, Incident] = {}  # asset -> its current incident
        self.opened = 0
        self.evicted = 0

    def add(self, alert: Alert) -> Incident:
        """File ``alert`` (sets ``alert.incident_id``); return the incident as it now stands."""
        asset = alert.asset or alert.dst
        inc = self.open.get(asset)
        if inc is not None and not (inc.last_ts - 1.0 <= alert.ts <= inc.last_ts + self.window):
            # Too late (or the capture clock restarted): that incident is done growing.
            del self.open[asset]
            inc = None
        if inc is None:
            while len(self.open) >= self.max_open:
                self.open.pop(next(iter(self.open)))
                self.evicted += 1
            inc = Incident(
                id=incident_id(asset, alert.id),
                asset=asset,
                first_ts=alert.first_ts or alert.ts,
                last_ts=alert.ts,
                critical_asset=bool(self.critical_asset and self.critical_asset(asset)),
            )
            self.open[asset] = inc
            self.opened += 1
        self._fold(inc, alert)
        alert.incident_id = inc.id
        return inc

    def _fold(self, inc: Incident, alert: Alert) -> None:
        inc.alert_count += 1
        if len(inc.alert_ids) < MAX_IDS:
            inc.alert_ids.append(alert.id)
        inc.last_ts = max(inc.last_ts, alert.ts)
        inc.first_ts = min(inc.first_ts, alert.first_ts or alert.ts)
        if alert.rule_id not in inc.rule_ids:
            inc.rule_ids.append(alert.rule_id)
        for t in alert.techniques:
            if t not in inc.techniques:
                inc.techniques.append(t)
        tactics = set(inc.tactics) | set(alert.tactics)
        inc.tactics = sorted(tactics, key=tactic_order)
        for ip in (alert.src, alert.dst):
            if ip and ip != inc.asset and ip not in inc.sources and len(inc.sources) < 64:
                inc.sources.append(ip)
        if alert.protocol and alert.protocol not in inc.protocols:
            inc.protocols.append(alert.protocol)
        if SEVERITY_RANK.get(alert.severity, 0) > SEVERITY_RANK.get(inc.max_severity, 0):
            inc.max_severity = alert.severity
        level, reason = grade(inc)
        if level < inc.level or inc.alert_count == 1:  # levels only rise (a lower number is graver)
            inc.level, inc.level_reason = level, reason
        inc.level_name = LEVEL_NAMES[inc.level]
        inc.severity = LEVEL_SEVERITY[inc.level]

    def tick(self, ts: float) -> None:
        """Stop tracking incidents that have been quiet longer than the window."""
        stale = [a for a, inc in self.open.items() if ts - inc.last_ts > self.window]
        for a in stale:
            del self.open[a]
