"""The Alert and Incident records and their ECS form.

An ``Alert`` is built by a detector when a rule (or later a model) fires. It keeps the events that
made it fire (the evidence, bounded) and serialises to an Elastic Common Schema document:

- ``@timestamp``: the time of the event that completed the alert (the packet's capture time);
- ``event.kind: alert``, ``event.severity`` (numeric: low 21, medium 47, high 73, critical 99, the
  scale Elastic's detection rules use) and ``event.severity_name``;
- ``rule.*``, ``threat.framework: "MITRE ATT&CK for ICS"``, ``threat.technique.id/name/reference``
  (lists), ``threat.tactic.name``;
- ``source.*``, ``destination.*``, ``network.protocol/transport``, ``related.ip``;
- ``observer.name`` (sensor name), ``observer.geo.name`` (site), ``organization.id`` (enterprise id);
- ``ics.*``: the protocol fields of the completing event, and ``ics.evidence``: one summary per
  evidence event (time, flow, function, unit, addresses, values, result);
- ``icswatch.*``: the asset, the incident, the status, the threshold group and count.

Alert ids are deterministic (a hash of the rule, the first evidence event's time and endpoints and
the rule's alert counter), so replaying the same capture again, or retrying a delivery, never
creates a second copy of an alert.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sensor.events import IcsEvent

SEVERITIES = ("low", "medium", "high", "critical")
SEVERITY_SCORE = {"low": 21, "medium": 47, "high": 73, "critical": 99}
SEVERITY_RANK = {"low": 1, "medium": 2, "high": 3, "critical": 4}
FRAMEWORK = "MITRE ATT&CK for ICS"
MAX_EVIDENCE_VALUES = 16  # values shown per evidence event (a 123-register write is summarised)
STATUSES = ("open", "acknowledged", "closed", "false_positive")


_PLAIN = frozenset({int, float, bool, str, type(None)})


def _values(values: tuple[Any, ...] | list[Any]) -> list[Any]:
    """A JSON-ready list of protocol values (the common case, plain numbers, without a call per value)."""
    out = list(values)
    for v in out:
        if type(v) not in _PLAIN:
            return [_jsonable(x) for x in out]
    return out


def _jsonable(value: Any) -> Any:
    """Make protocol values JSON-ready (bytes as hex, tuples as lists)."""
    if type(value) in _PLAIN:
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


_SECONDS: dict[int, str] = {}  # whole second -> "YYYY-MM-DDTHH:MM:SS" (alerts cluster in time)


def iso_time(ts: float) -> str:
    """Capture time -> ISO 8601 UTC with microseconds and a ``Z`` (what ECS and Elasticsearch expect)."""
    sec = int(ts // 1)
    us = round((ts - sec) * 1e6)
    if us >= 1_000_000:
        sec, us = sec + 1, us - 1_000_000
    head = _SECONDS.get(sec)
    if head is None:
        if len(_SECONDS) > 4096:
            _SECONDS.clear()
        head = _SECONDS[sec] = datetime.fromtimestamp(sec, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{head}.{us:06d}Z"


def severity_name_of(score: int) -> str:
    """Numeric ECS severity -> name (the nearest band at or below)."""
    name = "low"
    for n, s in SEVERITY_SCORE.items():
        if score >= s:
            name = n
    return name


@dataclass(frozen=True)
class Observer:
    """Where the alert was seen (from ``config.sensor``)."""

    name: str = "icswatch-sensor"
    enterprise_id: str = ""
    site: str = ""

    @classmethod
    def from_config(cls, sensor_config: Any) -> Observer:
        return cls(
            getattr(sensor_config, "name", "icswatch-sensor"),
            getattr(sensor_config, "enterprise_id", ""),
            getattr(sensor_config, "site", ""),
        )

    def ecs(self) -> dict[str, Any]:
        obs: dict[str, Any] = {"name": self.name, "type": "sensor", "vendor": "icswatch", "product": "icswatch"}
        if self.site:
            obs["geo"] = {"name": self.site}
        return obs


def evidence_of(event: IcsEvent) -> dict[str, Any]:
    """The short summary of one event kept as evidence."""
    out: dict[str, Any] = {
        "@timestamp": iso_time(event.ts),
        "ts": event.ts,
        "event_id": event.id,
        "flow_id": event.flow_id,
        "src": event.src,
        "sport": event.sport,
        "dst": event.dst,
        "dport": event.dport,
        "protocol": event.protocol,
        "direction": event.direction,
        "function": event.function,
        "function_name": event.function_name,
        "category": event.category,
        "result": event.result,
    }
    for key in ("unit", "address", "quantity", "code", "anomaly"):
        value = getattr(event, key)
        if value is not None:
            out[key] = value
    if event.values is not None:
        vals = event.values
        out["values"] = _values(vals[:MAX_EVIDENCE_VALUES])
        if len(vals) > MAX_EVIDENCE_VALUES:
            out["values_total"] = len(vals)
    if event.objects is not None:
        out["objects"] = list(event.objects[:MAX_EVIDENCE_VALUES])
    if event.fields:
        out["fields"] = {k: _jsonable(v) for k, v in event.fields.items()}
    return out


def alert_id(rule_id: str, first: IcsEvent, seq: int) -> str:
    """Deterministic id: same rule, same first evidence packet, same occurrence -> same id."""
    key = f"{rule_id}|{first.ts!r}|{first.src}|{first.sport}|{first.dst}|{first.dport}|{first.protocol}|{seq}"
    return hashlib.blake2b(key.encode(), digest_size=12).hexdigest()


@dataclass(slots=True)
class Alert:
    id: str
    ts: float  # time of the event that completed the alert
    rule_id: str
    rule_name: str
    severity: str  # low / medium / high / critical
    techniques: tuple[str, ...]
    technique_names: tuple[str, ...] = ()
    tactics: tuple[str, ...] = ()
    description: str = ""
    references: tuple[str, ...] = ()
    detector: str = "rules"
    protocol: str = ""
    transport: str = ""
    src: str = ""
    sport: int = 0
    dst: str = ""
    dport: int = 0
    asset: str = ""  # the ICS device this alert is about (incident grouping key)
    first_ts: float = 0.0  # time of the first evidence event
    count: int = 1  # events that made it fire (threshold count)
    events: tuple[IcsEvent, ...] = ()  # the evidence (bounded; first and last kept)
    group: dict[str, Any] | None = None  # threshold / new grouping values
    flow_id: int = 0
    incident_id: str | None = None
    status: str = "open"
    extra: dict[str, Any] = field(default_factory=dict)  # detector-specific details (icswatch.details)

    @property
    def severity_score(self) -> int:
        return SEVERITY_SCORE.get(self.severity, 0)

    @property
    def last_event(self) -> IcsEvent | None:
        return self.events[-1] if self.events else None

    def evidence(self) -> list[dict[str, Any]]:
        return [evidence_of(e) for e in self.events]

    def to_ecs(self, observer: Observer | None = None) -> dict[str, Any]:
        """The ECS document (nested objects)."""
        observer = observer or Observer()
        doc: dict[str, Any] = {
            "@timestamp": iso_time(self.ts),
            "event": {
                "id": self.id,
                "kind": "alert",
                "category": ["intrusion_detection"],
                "type": ["info"],
                "module": "icswatch",
                "dataset": "icswatch.alert",
                "provider": self.detector,
                "severity": self.severity_score,
                "severity_name": self.severity,
                "start": iso_time(self.first_ts or self.ts),
                "end": iso_time(self.ts),
            },
            "rule": {
                "id": self.rule_id,
                "name": self.rule_name,
                "description": self.description,
                "ruleset": "icswatch",
                "category": "ICS",
            },
            "threat": {
                "framework": FRAMEWORK,
                "technique": {
                    "id": list(self.techniques),
                    "name": list(self.technique_names),
                    "reference": [f"https://attack.mitre.org/techniques/{t}/" for t in self.techniques],
                },
                "tactic": {"name": list(self.tactics)},
            },
            "source": {"ip": self.src, "port": self.sport},
            "destination": {"ip": self.dst, "port": self.dport},
            "network": {"protocol": self.protocol, "transport": self.transport},
            "related": {"ip": sorted({ip for ip in (self.src, self.dst) if ip})},
            "observer": observer.ecs(),
            "ics": self._ics(),
            "icswatch": {
                "asset": self.asset,
                "incident_id": self.incident_id,
                "status": self.status,
                "count": self.count,
                "flow_id": self.flow_id,
            },
        }
        if self.references:
            doc["rule"]["reference"] = self.references[0]
            doc["rule"]["references"] = list(self.references)
        if observer.enterprise_id:
            doc["organization"] = {"id": observer.enterprise_id}
        last = self.last_event
        if last is not None:
            if last.src_mac:
                doc["source"]["mac"] = last.src_mac
            if last.dst_mac:
                doc["destination"]["mac"] = last.dst_mac
        if self.group:
            doc["icswatch"]["group"] = {k: _jsonable(v) for k, v in self.group.items()}
        if self.extra:
            doc["icswatch"]["details"] = {k: _jsonable(v) for k, v in self.extra.items()}
        return doc

    def _ics(self) -> dict[str, Any]:
        out: dict[str, Any] = {"protocol": self.protocol}
        last = self.last_event
        if last is not None:
            out.update(
                {
                    "direction": last.direction,
                    "function": last.function,
                    "function_name": last.function_name,
                    "category": last.category,
                    "result": last.result,
                }
            )
            for key in ("unit", "address", "quantity", "code"):
                value = getattr(last, key)
                if value is not None:
                    out[key] = value
            if last.values is not None:
                out["values"] = _values(last.values[:MAX_EVIDENCE_VALUES])
            if last.fields:
                out[self.protocol or "fields"] = {k: _jsonable(v) for k, v in last.fields.items()}
        out["evidence"] = self.evidence()
        return out


@dataclass(slots=True)
class Incident:
    """Alerts on one asset grouped within a time window; graded onto the four national levels."""

    id: str
    asset: str
    first_ts: float
    last_ts: float
    alert_ids: list[str] = field(default_factory=list)
    rule_ids: list[str] = field(default_factory=list)  # distinct, in order of first appearance
    techniques: list[str] = field(default_factory=list)  # the chain: distinct, in order of first appearance
    tactics: list[str] = field(default_factory=list)  # distinct, in kill-chain order
    sources: list[str] = field(default_factory=list)  # peers involved (distinct)
    alert_count: int = 0
    max_severity: str = "low"
    level: int = 4  # national level: 4 = 一般 (IV) ... 1 = 特别重大 (I)
    level_name: str = "一般"
    level_reason: str = ""
    severity: str = "low"  # the incident's own severity (rises with what it holds)
    status: str = "open"
    critical_asset: bool = False
    protocols: list[str] = field(default_factory=list)

    @property
    def severity_score(self) -> int:
        return SEVERITY_SCORE.get(self.severity, 0)

    def to_ecs(self, observer: Observer | None = None) -> dict[str, Any]:
        observer = observer or Observer()
        doc: dict[str, Any] = {
            "@timestamp": iso_time(self.last_ts),
            "event": {
                "id": self.id,
                "kind": "alert",
                "category": ["intrusion_detection"],
                "type": ["info"],
                "dataset": "icswatch.incident",
                "module": "icswatch",
                "severity": self.severity_score,
                "severity_name": self.severity,
                "start": iso_time(self.first_ts),
                "end": iso_time(self.last_ts),
            },
            "threat": {
                "framework": FRAMEWORK,
                "technique": {"id": list(self.techniques)},
                "tactic": {"name": list(self.tactics)},
            },
            "observer": observer.ecs(),
            "related": {"ip": sorted({self.asset, *self.sources} - {""})},
            "icswatch": {
                "incident": {
                    "id": self.id,
                    "asset": self.asset,
                    "status": self.status,
                    "alert_count": self.alert_count,
                    "alert_ids": list(self.alert_ids),
                    "rule_ids": list(self.rule_ids),
                    "max_alert_severity": self.max_severity,
                    "level": self.level,
                    "level_name": self.level_name,
                    "level_reason": self.level_reason,
                    "critical_asset": self.critical_asset,
                    "protocols": list(self.protocols),
                    "sources": list(self.sources),
                }
            },
        }
        if observer.enterprise_id:
            doc["organization"] = {"id": observer.enterprise_id}
        return doc
