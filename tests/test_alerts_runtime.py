"""The alerting runtime: detectors -> incidents -> batched outputs, context events, the summary, and
``icswatch replay --alerts-out`` end to end."""

from __future__ import annotations

import io
import json
from pathlib import Path

from rich.console import Console
from rules_testutil import REPO, T0, engine_from, ev

from alerts.runtime import AlertingRuntime, build_alerting
from alerts.sqlite_store import SQLiteStore
from alerts.store import AlertQuery, WriteBatch
from icswatch.cli import main
from icswatch.config import load_config

RULES = """
rules:
  - id: writes
    title: Modbus write from an outsider
    severity: high
    techniques: [T0855]
    suppress: {for: 0}
    protocol: modbus
    detection:
      write: {direction: request, category: write}
      allowed: {src|list: allowed_masters}
      condition: write and not allowed
"""


class Recorder:
    name = "recorder"

    def __init__(self) -> None:
        self.batches: list[WriteBatch] = []
        self.closed = False

    def write(self, batch: WriteBatch) -> None:
        self.batches.append(batch)

    def close(self) -> None:
        self.closed = True


class Broken(Recorder):
    name = "broken"

    def write(self, batch: WriteBatch) -> None:
        raise OSError("disk full")


def traffic(n_writes: int = 3) -> list:
    """Reads on flow 1 around writes from the attacker on the same flow."""
    out = []
    t = T0
    for i in range(n_writes):
        for _ in range(3):
            t += 1
            out.append(ev(ts=t, flow_id=1, address=i))
        t += 1
        out.append(ev(6, "write_single_register", "write", ts=t, flow_id=1, address=100 + i, values=(i,)))
    for _ in range(3):
        t += 1
        out.append(ev(ts=t, flow_id=1))
        out.append(ev(ts=t, flow_id=2))
    return out


def test_batches_context_and_summary() -> None:
    rec, broken = Recorder(), Broken()
    rt = AlertingRuntime([engine_from(RULES)], outputs=[rec, broken], batch_size=2, context_events=2)
    for e in traffic():
        rt.on_event(e)
    summary = rt.close()
    assert summary.total == 3 and summary.by_rule == {"writes": 3} and summary.by_severity == {"high": 3}
    assert [len(b.alerts) for b in rec.batches] == [2, 1]  # batch_size=2, the rest at close
    assert rec.closed and summary.output_errors == {"broken": 2}  # counted, the run went on
    events = [(aid, role, seq, e.address) for b in rec.batches for aid, role, seq, e in b.events]
    first = rec.batches[0].alerts[0].id
    mine = [(role, seq, addr) for aid, role, seq, addr in events if aid == first]
    assert mine == [("evidence", 0, 100), ("before", 0, 0), ("before", 1, 0), ("after", 0, 1), ("after", 1, 1)]
    assert len(summary.incidents) == 1
    (inc,) = summary.incidents.values()
    assert inc.alert_count == 3 and all(a.incident_id == inc.id for a in summary.alerts)
    d = summary.as_dict()
    assert d["total"] == 3 and d["incidents"][0]["level_name"] == inc.level_name
    buf = io.StringIO()
    summary.print(Console(file=buf, width=200))
    out = buf.getvalue()
    assert "3 alert(s)" in out and "writes" in out and "@100" in out


def test_flush_on_tick_after_flush_seconds() -> None:
    rec = Recorder()
    rt = AlertingRuntime([engine_from(RULES)], outputs=[rec], batch_size=100, flush_seconds=0, context_events=0)
    rt.on_event(ev(6, "write_single_register", "write", ts=T0))
    assert rec.batches == []
    rt.on_tick(T0 + 1)
    assert [len(b.alerts) for b in rec.batches] == [1]
    rt.on_tick(T0 + 2)  # nothing pending: no empty batch
    assert len(rec.batches) == 1


def test_build_alerting_from_config(tmp_path: Path) -> None:
    cfg = load_config(
        None,
        [
            f"outputs.sqlite={tmp_path / 'a.db'}",
            f"outputs.eve={tmp_path / 'eve.json'}",
            "outputs.batch_size=1",
            "sensor.name=sensor-9",
        ],
    )
    rt = build_alerting(cfg, alerts_out=str(tmp_path / "alerts.jsonl"))
    assert [o.name for o in rt.outputs] == ["sqlite", "eve", "alerts-out"]
    rt.on_event(ev(8, "diagnostics_force_listen_only_mode", "diagnostic", ts=T0, fields={"sub_function": 4}, flow_id=1))
    summary = rt.close()
    assert set(summary.by_rule) == {"modbus-force-listen-only", "modbus-diagnostics-unauthorized-master"}
    store = SQLiteStore(tmp_path / "a.db")
    assert store.count_alerts(AlertQuery()) == 2
    doc = store.search_alerts(AlertQuery(rule_ids=["modbus-force-listen-only"])).items[0]
    assert doc["observer"]["name"] == "sensor-9" and doc["icswatch"]["incident_id"]
    store.close()
    assert len((tmp_path / "eve.json").read_text().splitlines()) == 2
    assert len((tmp_path / "alerts.jsonl").read_text().splitlines()) == 2
    # PLC-1 is a critical asset: the listen-only incident (critical) is graded up to level I.
    (inc,) = summary.incidents.values()
    assert inc.level == 1 and inc.critical_asset


def test_rules_disabled_means_no_detectors() -> None:
    cfg = load_config(None, ["rules.enabled=false"])
    rt = build_alerting(cfg, outputs=[])
    assert rt.detectors == []
    rt.on_event(ev())
    assert rt.close().total == 0


def test_replay_command_writes_alerts_out(tmp_path: Path) -> None:
    out = tmp_path / "alerts.jsonl"
    db = tmp_path / "icswatch.db"
    pcap = REPO / "pcaps" / "rule_modbus-function-code-scan.pcap"
    rc = main(["replay", str(pcap), "--alerts-out", str(out), "--db", str(db), "-q"])
    assert rc == 0
    docs = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(docs) == 5
    for d in docs:
        assert d["@timestamp"].startswith("2026-01-01T00:00:0")
        assert d["rule"]["id"] and d["rule"]["name"] and isinstance(d["event"]["severity"], int)
        assert d["threat"]["technique"]["id"] and d["source"]["ip"] and d["destination"]["ip"]
        assert d["network"]["protocol"] == "modbus"
    store = SQLiteStore(db)
    assert store.count_alerts(AlertQuery()) == 5
    ids = [d["event"]["id"] for d in docs]
    assert all(store.alert_events(i) for i in ids)
    store.close()
    # Replaying again stores nothing twice.
    assert main(["replay", str(pcap), "--db", str(db), "-q"]) == 0
    store = SQLiteStore(db)
    assert store.count_alerts(AlertQuery()) == 5
    store.close()
