"""The SQLite alert store: batched idempotent writes, queries the API runs, migrations, and crash
safety (a replay killed with SIGKILL leaves a consistent prefix; restarting completes it)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rules_testutil import REPO, T0, engine_from, ev

from alerts.incidents import IncidentGrouper
from alerts.records import Observer
from alerts.sqlite_store import MIGRATIONS, SCHEMA_VERSION, SQLiteStore, StoreError, migrate, schema_version
from alerts.store import AlertQuery, AlertStore, IncidentQuery, WriteBatch

RULES = """
rules:
  - id: writes
    title: Modbus write from an outsider
    severity: high
    techniques: [T0855, T0836]
    suppress: {for: 0}
    protocol: modbus
    detection:
      write: {direction: request, category: write}
      allowed: {src|list: allowed_masters}
      condition: write and not allowed
  - id: diag
    title: Listen only
    severity: critical
    techniques: [T0814]
    suppress: {for: 0}
    protocol: modbus
    detection: {sel: {direction: request, function: 8}}
  - id: reads
    title: Read from an outsider
    severity: low
    techniques: [T0801]
    suppress: {for: 0}
    protocol: dnp3
    detection: {sel: {direction: request, category: read}}
"""


def make_batches() -> list[WriteBatch]:
    """30 alerts over 3 batches: writes (high), diagnostics (critical), DNP3 reads (low)."""
    engine = engine_from(RULES)
    grouper = IncidentGrouper(window=100)
    batches = []
    for b in range(3):
        batch = WriteBatch(observer=Observer("s1", "E1", "site"))
        for i in range(10):
            n = b * 10 + i
            ts = T0 + n * 10
            dst = f"10.10.2.{11 + n % 3}"
            if n % 3 == 0:
                e = ev(6, "write_single_register", "write", ts=ts, dst=dst, address=n, values=(n,), unit=1)
            elif n % 3 == 1:
                e = ev(8, "diagnostics_force_listen_only_mode", "diagnostic", ts=ts, dst=dst, fields={"sub_function": 4})
            else:
                e = ev(1, "read", "read", ts=ts, dst=dst, protocol="dnp3", dport=20000)
            for a in engine.observe(e):
                inc = grouper.add(a)
                batch.alerts.append(a)
                batch.incidents.append(inc)
                batch.events.append((a.id, "evidence", 0, e))
        batches.append(batch)
    return batches


@pytest.fixture()
def store(tmp_path: Path) -> SQLiteStore:
    s = SQLiteStore(tmp_path / "var" / "alerts.db", Observer("s1"))
    for b in make_batches():
        s.write(b)
    yield s
    s.close()


def test_protocol_and_wal(store: SQLiteStore) -> None:
    assert isinstance(store, AlertStore)
    assert store.journal_mode == "wal"
    assert schema_version(store.conn) == SCHEMA_VERSION == MIGRATIONS[-1][0]
    assert store.integrity_check() == "ok"


def test_writes_are_idempotent(store: SQLiteStore) -> None:
    assert store.count_alerts(AlertQuery()) == 30
    for b in make_batches():
        store.write(b)  # a replay after a crash writes the same alerts again
    assert store.count_alerts(AlertQuery()) == 30
    n = store.conn.execute("SELECT COUNT(*) FROM alert_techniques").fetchone()[0]
    assert n == 10 * 2 + 10 + 10


def test_get_alert_and_events(store: SQLiteStore) -> None:
    page = store.search_alerts(AlertQuery(rule_ids=["writes"], limit=1, sort="ts"))
    doc = page.items[0]
    assert doc["rule"]["id"] == "writes" and doc["@timestamp"] == "2026-01-01T00:00:00.000000Z"
    assert store.get_alert(doc["event"]["id"]) == doc
    assert store.get_alert("nope") is None
    (event,) = store.alert_events(doc["event"]["id"])
    assert event["role"] == "evidence" and event["function"] == 6 and event["values"] == [0]


def test_filters(store: SQLiteStore) -> None:
    q = lambda **kw: store.count_alerts(AlertQuery(**kw))
    assert q(start=T0 + 100, end=T0 + 200) == 10
    assert q(severities=["critical"]) == 10
    assert q(min_severity="high") == 20
    assert q(rule_ids=["writes", "reads"]) == 20
    assert q(techniques=["T0836"]) == 10
    assert q(techniques=["T0814", "T0801"]) == 20
    assert q(assets=["10.10.2.11"]) == 10
    assert q(ips=["10.10.2.12"]) == 10
    assert q(protocols=["dnp3"]) == 10
    assert q(statuses=["open"]) == 30
    assert q(text="LISTEN") == 10
    assert q(text="t0836") == 10
    assert q(text="100%") == 0
    with pytest.raises(StoreError):
        q(severities=["urgent"])


def test_sorting_and_cursor_pagination(store: SQLiteStore) -> None:
    seen = []
    cursor = None
    while True:
        page = store.search_alerts(AlertQuery(sort="-ts", limit=7, cursor=cursor))
        assert page.total == 30
        seen.extend(d["@timestamp"] for d in page.items)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert len(seen) == 30 and seen == sorted(seen, reverse=True)
    by_sev = []
    cursor = None
    while True:
        page = store.search_alerts(AlertQuery(sort="-severity", limit=4, cursor=cursor, min_severity="high"))
        by_sev.extend((d["event"]["severity"], d["@timestamp"]) for d in page.items)
        if not (cursor := page.next_cursor):
            break
    assert len(by_sev) == 20 and by_sev == sorted(by_sev, reverse=True)
    with pytest.raises(StoreError):
        store.search_alerts(AlertQuery(sort="ts", cursor=page.next_cursor or "eyJ4IjoxfQ"))


def test_counts(store: SQLiteStore) -> None:
    by_sev = {b.key: b.count for b in store.alert_counts("severity")}
    assert by_sev == {"high": 10, "critical": 10, "low": 10}
    by_tech = {b.key: b.count for b in store.alert_counts("technique", AlertQuery(min_severity="high"))}
    assert by_tech == {"T0855": 10, "T0836": 10, "T0814": 10}
    per_100s = store.alert_counts("rule", AlertQuery(rule_ids=["writes"]), interval=100)
    assert [(b.bucket, b.count) for b in per_100s] == [(T0, 4), (T0 + 100, 3), (T0 + 200, 3)]
    assert {b.key for b in store.alert_counts("asset")} == {"10.10.2.11", "10.10.2.12", "10.10.2.13"}
    with pytest.raises(StoreError):
        store.alert_counts("colour")


def test_status_updates_survive_rewrites(store: SQLiteStore) -> None:
    doc = store.search_alerts(AlertQuery(limit=1)).items[0]
    aid = doc["event"]["id"]
    assert store.set_alert_status(aid, "acknowledged")
    assert store.get_alert(aid)["icswatch"]["status"] == "acknowledged"
    for b in make_batches():
        store.write(b)
    assert store.get_alert(aid)["icswatch"]["status"] == "acknowledged"
    assert not store.set_alert_status("nope", "closed")
    with pytest.raises(StoreError):
        store.set_alert_status(aid, "weird")


def test_incidents(store: SQLiteStore) -> None:
    page = store.search_incidents(IncidentQuery(limit=100))
    assert page.total == 3  # one per asset (alerts 10 s apart, window 100 s)
    incs = {d["icswatch"]["incident"]["asset"]: d["icswatch"]["incident"] for d in page.items}
    assert {a: (i["level"], i["level_name"], i["alert_count"]) for a, i in incs.items()} == {
        "10.10.2.11": (3, "较大", 10),  # high writes
        "10.10.2.12": (2, "重大", 10),  # critical listen-only
        "10.10.2.13": (3, "较大", 10),  # low DNP3 reads, but 10 of them
    }
    assert store.search_incidents(IncidentQuery(levels=[2], techniques=["T0814"])).total == 1
    assert store.search_incidents(IncidentQuery(assets=["10.10.2.12"])).total == 1
    assert [d["icswatch"]["incident"]["level"] for d in store.search_incidents(IncidentQuery(sort="-severity")).items] == [2, 3, 3]
    inc = incs["10.10.2.12"]
    iid = inc["id"]
    assert store.set_incident_status(iid, "closed")
    for b in make_batches():  # a replay rewrites the incidents: the analyst's status stays
        store.write(b)
    assert store.get_incident(iid)["icswatch"]["incident"]["status"] == "closed"
    assert store.get_incident(iid)["icswatch"]["incident"]["alert_count"] == 10
    assert store.search_incidents(IncidentQuery(text="t08", sort="-severity", limit=2)).next_cursor


def test_migrations_from_an_old_database(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    assert migrate(conn, target=1) == [1]
    conn.execute(
        "INSERT INTO alerts (id, ts, first_ts, rule_id, rule_name, severity, severity_name, detector, protocol, transport, "
        "src, sport, dst, dport, asset, techniques, search, doc) VALUES "
        "('old', 1, 1, 'r', 'R', 47, 'medium', 'rules', 'modbus', 'tcp', 'a', 1, 'b', 2, 'b', 'T0855', 'r', '{}')"
    )
    conn.close()
    store = SQLiteStore(path)
    assert store.migrated == [2, 3]
    assert [r[0] for r in store.conn.execute("SELECT version FROM schema_version ORDER BY version")] == [1, 2, 3]
    assert store.count_alerts(AlertQuery()) == 1  # the data came along
    assert store.set_alert_status("old", "closed")  # v3's column is there
    store.close()
    assert SQLiteStore(path).migrated == []  # nothing left to do


def test_a_newer_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    SQLiteStore(path).close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("INSERT INTO schema_version VALUES (99, 'later', 'from the future')")
    conn.close()
    with pytest.raises(StoreError, match="newer than this icswatch knows"):
        SQLiteStore(path)


# --- crash safety -----------------------------------------------------------------------------------

CRASH_RULES = """
rules:
  - id: crash-writes
    title: Every write
    severity: high
    techniques: [T0855]
    suppress: {for: 0}
    protocol: modbus
    detection: {sel: {direction: request, category: write}}
"""


def _make_capture(path: Path, writes: int) -> None:
    """A capture with ``writes`` Modbus writes (each one alert), spread over a few minutes."""
    import struct

    from tools.pcapgen.common import Clock, TcpConversation, write_pcap
    from tools.pcapgen.modbus_rules import mbap

    clock = Clock()
    conv = TcpConversation("10.10.9.66", 40000, "10.10.2.11", 502, clock).handshake()
    for i in range(writes):
        pdu = struct.pack("!BHH", 6, i % 1000, i & 0xFFFF)
        conv.exchange(mbap(i, 1, pdu), mbap(i, 1, pdu), gap=0.05)
    write_pcap(path.name, conv.close().packets, path.parent)


# What ``icswatch replay FILE --db DB --rules RULES`` runs (the sensor pipeline feeding the alerting
# runtime with its SQLite store), without the CLI's start-up (it imports every command).
REPLAY = """
import sys
from icswatch.config import load_config
from alerts.runtime import build_alerting
from sensor.pipeline import Pipeline
pcap, db, rules = sys.argv[1:4]
cfg = load_config(None, [f"outputs.sqlite={db}", f"rules.paths=[{rules}]", "outputs.batch_size=5", "outputs.context_events=2"])
runtime = build_alerting(cfg)
pipeline = Pipeline(cfg.sensor, on_event=runtime.on_event, on_tick=runtime.on_tick)
pipeline.replay_file(pcap)
runtime.close()
"""


def _replay_cmd(pcap: Path, db: Path, rules: Path) -> list[str]:
    return [sys.executable, "-c", REPLAY, str(pcap), str(db), str(rules)]


def _stored(db: Path) -> list[tuple[str, float]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT id, ts FROM alerts ORDER BY rowid").fetchall()
    finally:
        conn.close()


@pytest.mark.timeout(120)
def test_sigkill_mid_replay_leaves_a_consistent_prefix(tmp_path: Path) -> None:
    pcap = tmp_path / "writes.pcap"
    _make_capture(pcap, 1500)
    rules = tmp_path / "crash.yaml"
    rules.write_text(CRASH_RULES)
    env = dict(os.environ, PYTHONPATH=str(REPO))

    # The reference: a replay that runs to the end.
    ref_db = tmp_path / "ref.db"
    subprocess.run(_replay_cmd(pcap, ref_db, rules), check=True, env=env, cwd=tmp_path, capture_output=True)
    reference = _stored(ref_db)
    assert len(reference) == 1500

    db = tmp_path / "crash.db"
    for attempt in range(5):
        for f in tmp_path.glob("crash.db*"):
            f.unlink()
        proc = subprocess.Popen(_replay_cmd(pcap, db, rules), env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        count = 0
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                count = len(_stored(db))
            except sqlite3.Error:
                count = 0
            if count >= 100:
                break
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if proc.returncode == -signal.SIGKILL and 0 < count:
            break
    assert proc.returncode == -signal.SIGKILL, "the replay finished before it could be killed"

    # What the killed process left: whole rows, in order, the first N alerts of the reference.
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    rows = conn.execute("SELECT id, ts, doc, techniques FROM alerts ORDER BY rowid").fetchall()
    assert 0 < len(rows) < len(reference)
    assert [(r[0], r[1]) for r in rows] == reference[: len(rows)]
    for aid, _ts, doc, techniques in rows:
        parsed = json.loads(doc)  # no torn documents
        assert parsed["event"]["id"] == aid and parsed["ics"]["evidence"][0]["function"] == 6
        assert techniques == "T0855"
    n_tech = conn.execute("SELECT COUNT(*) FROM alert_techniques").fetchone()[0]
    assert n_tech == len(rows)  # each batch is all or nothing
    orphans = conn.execute("SELECT COUNT(*) FROM alert_events WHERE alert_id NOT IN (SELECT id FROM alerts)").fetchone()[0]
    assert orphans == 0
    before = conn.execute("SELECT COUNT(DISTINCT alert_id) FROM alert_events WHERE role = 'before'").fetchone()[0]
    assert before >= len(rows) - 1  # every alert but the first has the flow's previous events
    conn.close()

    # Restart: the same replay completes the store without duplicates.
    subprocess.run(_replay_cmd(pcap, db, rules), check=True, env=env, cwd=tmp_path, capture_output=True)
    assert _stored(db) == reference
