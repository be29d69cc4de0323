"""Alert records: ECS shape, deterministic ids, EVE form, the --alerts-out JSON Lines."""

from __future__ import annotations

import json
from pathlib import Path

from rules_testutil import T0, engine_from, ev

from alerts.ecs_jsonl import EcsJsonlWriter
from alerts.eve import EveWriter, signature_id, to_eve
from alerts.records import Observer, alert_id, iso_time
from alerts.store import WriteBatch

RULE = """
rules:
  - id: modbus-writes
    title: Modbus write from an outsider
    description: Someone wrote.
    severity: high
    techniques: [T0855, T0836]
    references: [https://attack.mitre.org/techniques/T0855/]
    protocol: modbus
    detection:
      write: {direction: request, category: write}
      allowed: {src|list: allowed_masters}
      condition: write and not allowed
"""


def write_event(ts: float = T0 + 1.25) -> object:
    return ev(
        16,
        "write_multiple_registers",
        "write",
        ts=ts,
        unit=1,
        address=100,
        quantity=20,
        values=tuple(range(20)),
        fields={"transaction_id": 7},
        src_mac="02:00:0a:0a:09:42",
        flow_id=3,
    )


def make_alert():
    engine = engine_from(RULE)
    (alert,) = engine.observe(write_event())
    return alert


def test_ecs_document() -> None:
    a = make_alert()
    obs = Observer("sensor-7", "ENT-0001", "Plant North")
    doc = a.to_ecs(obs)
    assert doc["@timestamp"] == iso_time(T0 + 1.25) == "2026-01-01T00:00:01.250000Z"
    assert doc["event"]["kind"] == "alert"
    assert doc["event"]["severity"] == 73 and doc["event"]["severity_name"] == "high"
    assert doc["rule"] == {
        "id": "modbus-writes",
        "name": "Modbus write from an outsider",
        "description": "Someone wrote.",
        "ruleset": "icswatch",
        "category": "ICS",
        "reference": "https://attack.mitre.org/techniques/T0855/",
        "references": ["https://attack.mitre.org/techniques/T0855/"],
    }
    assert doc["threat"]["framework"] == "MITRE ATT&CK for ICS"
    assert doc["threat"]["technique"]["id"] == ["T0855", "T0836"]
    assert doc["threat"]["technique"]["name"] == ["Unauthorized Command Message", "Modify Parameter"]
    assert doc["threat"]["tactic"]["name"] == ["Impair Process Control"]
    assert doc["source"] == {"ip": "10.10.9.66", "port": 49152, "mac": "02:00:0a:0a:09:42"}
    assert doc["destination"] == {"ip": "10.10.2.11", "port": 502}
    assert doc["network"] == {"protocol": "modbus", "transport": "tcp"}
    assert doc["observer"]["name"] == "sensor-7" and doc["observer"]["geo"] == {"name": "Plant North"}
    assert doc["organization"] == {"id": "ENT-0001"}
    ics = doc["ics"]
    assert ics["function"] == 16 and ics["unit"] == 1 and ics["address"] == 100 and ics["quantity"] == 20
    assert ics["values"] == list(range(16))  # summarised
    assert ics["modbus"] == {"transaction_id": 7}
    (evidence,) = ics["evidence"]
    assert evidence["function_name"] == "write_multiple_registers" and evidence["values_total"] == 20
    assert evidence["@timestamp"] == "2026-01-01T00:00:01.250000Z" and evidence["flow_id"] == 3
    json.dumps(doc)  # serialisable as it is


def test_alert_ids_are_deterministic() -> None:
    a1, a2 = make_alert(), make_alert()
    assert a1.id == a2.id and len(a1.id) == 24
    first = write_event()
    assert alert_id("modbus-writes", first, 1) == a1.id
    assert alert_id("modbus-writes", first, 2) != a1.id
    assert alert_id("other-rule", first, 1) != a1.id


def test_eve_record() -> None:
    a = make_alert()
    a.incident_id = "inc1"
    doc = to_eve(a, Observer("sensor-7"))
    assert doc["event_type"] == "alert" and doc["timestamp"] == "2026-01-01T00:00:01.250000+0000"
    assert (doc["src_ip"], doc["src_port"], doc["dest_ip"], doc["dest_port"]) == ("10.10.9.66", 49152, "10.10.2.11", 502)
    assert doc["proto"] == "TCP" and doc["app_proto"] == "modbus" and doc["flow_id"] == 3
    alert = doc["alert"]
    assert alert["signature"] == "Modbus write from an outsider" and alert["severity"] == 1
    assert alert["signature_id"] == signature_id("modbus-writes")
    assert alert["metadata"]["mitre_technique_id"] == ["T0855", "T0836"]
    assert alert["metadata"]["icswatch_incident_id"] == ["inc1"]
    assert doc["modbus"]["function_name"] == "write_multiple_registers"


def test_jsonl_writers(tmp_path: Path) -> None:
    a = make_alert()
    batch = WriteBatch(alerts=[a], observer=Observer("s"))
    ecs, eve = EcsJsonlWriter(tmp_path / "out" / "alerts.jsonl"), EveWriter(tmp_path / "eve.json")
    for w in (ecs, eve):
        w.write(batch)
        w.write(WriteBatch())  # empty batches write nothing
        w.close()
    (line,) = (tmp_path / "out" / "alerts.jsonl").read_text().splitlines()
    doc = json.loads(line)
    # The keys other tools read from --alerts-out, as nested ECS objects.
    assert doc["@timestamp"] and doc["rule"]["id"] and doc["rule"]["name"]
    assert isinstance(doc["event"]["severity"], int) and doc["threat"]["technique"]["id"]
    assert doc["source"]["ip"] and doc["destination"]["ip"] and doc["network"]["protocol"] == "modbus"
    (line,) = (tmp_path / "eve.json").read_text().splitlines()
    assert json.loads(line)["event_type"] == "alert"
