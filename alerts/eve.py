"""Suricata EVE-style alert records (``event_type: "alert"``), so tools that read Suricata's eve.json
(Filebeat's suricata module, Splunk TA, Wazuh, jq one-liners) read icswatch alerts as they are.

Mapping: ``alert.signature`` = rule title; ``alert.signature_id`` = a stable integer derived from the
rule id (CRC-32, since Suricata's sids are integers); ``alert.severity`` is Suricata's 1 (high) to 3
(low) scale, with critical and high both 1; ``alert.metadata`` holds the ATT&CK ids, names and tactics
and the icswatch ids as lists of text, the way Suricata rules carry metadata; ``app_proto`` is the ICS
protocol and an object named after it carries the protocol fields of the completing event.
"""

from __future__ import annotations

import zlib
from typing import Any

from alerts.ecs_jsonl import JsonLinesWriter
from alerts.records import Alert, Observer, evidence_of, iso_time
from alerts.store import WriteBatch

SURICATA_SEVERITY = {"critical": 1, "high": 1, "medium": 2, "low": 3}


def signature_id(rule_id: str) -> int:
    """A stable integer for a rule id (Suricata sids are integers), kept clear of the ET/local ranges."""
    return 9_000_000_000 + zlib.crc32(rule_id.encode())


def eve_time(ts: float) -> str:
    """Suricata's timestamp form: 2026-01-01T00:00:01.234567+0000."""
    return iso_time(ts)[:-1] + "+0000"


def to_eve(alert: Alert, observer: Observer | None = None) -> dict[str, Any]:
    observer = observer or Observer()
    metadata: dict[str, list[str]] = {
        "mitre_technique_id": list(alert.techniques),
        "mitre_technique_name": [n for n in alert.technique_names if n],
        "mitre_tactic_name": list(alert.tactics),
        "icswatch_rule_id": [alert.rule_id],
        "icswatch_alert_id": [alert.id],
    }
    if alert.incident_id:
        metadata["icswatch_incident_id"] = [alert.incident_id]
    doc: dict[str, Any] = {
        "timestamp": eve_time(alert.ts),
        "flow_id": alert.flow_id,
        "event_type": "alert",
        "src_ip": alert.src,
        "src_port": alert.sport,
        "dest_ip": alert.dst,
        "dest_port": alert.dport,
        "proto": (alert.transport or "").upper(),
        "app_proto": alert.protocol,
        "host": observer.name,
        "alert": {
            "action": "allowed",
            "gid": 1,
            "signature_id": signature_id(alert.rule_id),
            "rev": 1,
            "signature": alert.rule_name,
            "category": "ICS " + (alert.tactics[0] if alert.tactics else "alert"),
            "severity": SURICATA_SEVERITY.get(alert.severity, 3),
            "metadata": metadata,
        },
        "icswatch": {
            "asset": alert.asset,
            "count": alert.count,
            "evidence": alert.evidence(),
        },
    }
    last = alert.last_event
    if last is not None and alert.protocol:
        doc[alert.protocol] = {k: v for k, v in evidence_of(last).items() if k not in ("@timestamp", "src", "dst", "sport", "dport")}
    return doc


class EveWriter(JsonLinesWriter):
    name = "eve"

    def documents(self, batch: WriteBatch) -> list[dict[str, Any]]:
        return [to_eve(a, batch.observer) for a in batch.alerts]
