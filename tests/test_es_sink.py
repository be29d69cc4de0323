"""The Elasticsearch sink (alerts/es_sink.py).

Against a scripted fake client (no server): retries with backoff on connection errors, 429 and 5xx,
per-item retries, order kept through the spool, incident states coalesced, the spool-full policy, the
8.x/9.x compatibility header. Against the test server (tests/es_testutil.py): a replay of the rule
captures lands every alert exactly once, a replay of the same captures again adds nothing and keeps an
analyst's status, a document the mapping refuses is logged with its content and does not hold back the
others, ICS events are indexed all or sampled.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from elastic_transport import ApiResponseMeta, HttpHeaders, NodeConfig
from elasticsearch import ApiError
from elasticsearch import ConnectionError as EsConnectionError
from es_testutil import ATTACK_PCAPS, REPO, RULE_PCAPS, EsServer, es_ids, es_prefix, es_server, replay  # noqa: F401 (fixtures)

from alerts import es_sink
from alerts.es_sink import ElasticsearchSink, EsSettings, connect
from alerts.es_spool import Spool
from alerts.es_store import ElasticsearchStore
from alerts.records import Alert, Incident, Observer
from alerts.store import AlertQuery, WriteBatch

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def alert(i: int, **kw: Any) -> Alert:
    base = dict(
        id=f"alert-{i:04d}",
        ts=T0 + i,
        rule_id="modbus-write-unauthorized-master",
        rule_name="Modbus write from an unauthorized master",
        severity="high",
        techniques=("T0855",),
        technique_names=("Unauthorized Command Message",),
        protocol="modbus",
        transport="tcp",
        src="10.0.0.9",
        sport=40000 + i,
        dst="10.0.0.2",
        dport=502,
        asset="10.0.0.2",
        first_ts=T0 + i,
    )
    base.update(kw)
    return Alert(**base)


def batch(alerts: list[Alert], incidents: list[Incident] = ()) -> WriteBatch:
    return WriteBatch(alerts=list(alerts), incidents=list(incidents), observer=Observer("sensor-t"))


# --- a scripted client ------------------------------------------------------------------------------


def api_error(status: int) -> ApiError:
    meta = ApiResponseMeta(
        status=status,
        http_version="1.1",
        headers=HttpHeaders(),
        duration=0.0,
        node=NodeConfig("http", "localhost", 9200),
    )
    return ApiError(f"HTTP {status}", meta=meta, body={"error": {"type": "x", "reason": "scripted"}})


class FakeES:
    """Plays a script, one entry per bulk: "ok", "conn" (connection refused), an int (the whole request
    answers that status), or {position: status} for per-item statuses. Remembers what landed."""

    def __init__(self, script: list[Any] = (), version: str = "8.15.0") -> None:
        self.script = list(script)
        self.version = version
        self.stored: dict[str, dict[str, Any]] = {}
        self.order: list[str] = []  # ids in the order they were accepted
        self.bulks = 0
        self.headers: list[dict[str, str]] = []
        self.cluster = SimpleNamespace(put_component_template=lambda **kw: None)
        self.indices = SimpleNamespace(put_index_template=lambda **kw: None, create=lambda **kw: None)
        self.down = False

    def options(self, headers: dict[str, str] | None = None, **_: Any) -> FakeES:
        self.headers.append(dict(headers or {}))
        return self

    def info(self) -> dict[str, Any]:
        if self.down:
            raise EsConnectionError("refused")
        return {"name": "fake", "version": {"number": self.version}}

    def bulk(self, operations: bytes, **_: Any) -> dict[str, Any]:
        self.bulks += 1
        step = self.script.pop(0) if self.script else ("conn" if self.down else "ok")
        if step == "conn":
            raise EsConnectionError("Connection refused")
        if isinstance(step, int):
            raise api_error(step)
        lines = operations.decode().splitlines()
        items = []
        for pos in range(0, len(lines), 2):
            op, meta = next(iter(json.loads(lines[pos]).items()))
            doc_id = meta["_id"]
            status = step.get(pos // 2, None) if isinstance(step, dict) else None
            if status is None:
                if op == "create" and doc_id in self.stored:
                    status = 409
                else:
                    status = 201
                    self.stored[doc_id] = json.loads(lines[pos + 1])
                    self.order.append(doc_id)
            items.append({op: {"_index": meta["_index"], "_id": doc_id, "status": status}})
        return {"errors": True, "items": items}


def sink_with(fake: FakeES, tmp_path: Path, spool: Spool | None = None, **kw: Any) -> ElasticsearchSink:
    base: dict[str, Any] = dict(
        urls=["http://fake:9200"],
        spool=str(tmp_path / "spool.db"),
        flush_seconds=0.02,
        retry_base=0.01,
        retry_max=0.05,
        retries=2,
        close_timeout=5.0,
    )
    settings = EsSettings(**{**base, **kw})
    return ElasticsearchSink(settings, Observer("sensor-t"), client=fake, spool=spool)


def test_connection_errors_and_429_are_retried_with_backoff(tmp_path: Path) -> None:
    fake = FakeES(["conn", 429, {1: 429, 3: 503}, "ok"])
    sink = sink_with(fake, tmp_path, retries=3)
    sink.write(batch([alert(i) for i in range(5)]))
    assert sink.flush(10)
    s = sink.stats()
    assert s["sent"] == 5 and s["spooled"] == 0 and s["rejected"] == 0
    assert s["retried"] == 5 + 5 + 2  # whole bulk twice, then the two items answered 429/503
    assert s["failed_requests"] == 2
    assert sorted(fake.order) == [f"alert-{i:04d}" for i in range(5)]
    sink.close()


def test_down_cluster_spools_then_replays_in_order_while_running(tmp_path: Path) -> None:
    fake = FakeES()
    fake.down = True
    sink = sink_with(fake, tmp_path)
    for i in range(0, 30, 3):
        sink.write(batch([alert(i), alert(i + 1), alert(i + 2)]))
    sink.flush(10)
    deadline = time.monotonic() + 10
    while sink.stats()["spool_pending"] < 30 and time.monotonic() < deadline:
        time.sleep(0.02)
    s = sink.stats()
    assert s["state"] == "down" and s["spool_pending"] == 30 and s["sent"] == 0
    fake.down = False
    sink.write(batch([alert(30)]))  # the sensor goes on: newer documents queue behind the spool
    assert sink.wait_drained(10)
    assert fake.order == [f"alert-{i:04d}" for i in range(31)]  # oldest first, nothing skipped
    assert sink.stats()["state"] == "up" and sink.spool.count == 0
    sink.close()


def test_a_retry_of_a_landed_document_is_not_a_duplicate(tmp_path: Path) -> None:
    fake = FakeES()
    sink = sink_with(fake, tmp_path)
    sink.write(batch([alert(1), alert(2)]))
    sink.flush(10)
    sink.write(batch([alert(1), alert(2), alert(3)]))  # a replay of the same capture
    sink.flush(10)
    s = sink.stats()
    assert s["sent"] == 3 and s["already_present"] == 2 and len(fake.stored) == 3
    sink.close()


def test_incident_states_are_coalesced_and_status_left_to_the_analyst(tmp_path: Path) -> None:
    fake = FakeES()
    sink = sink_with(fake, tmp_path, flush_seconds=0.5)
    inc = Incident(id="inc-1", asset="10.0.0.2", first_ts=T0, last_ts=T0, alert_count=1, alert_ids=["alert-0001"])
    sink.write(batch([alert(1)], [inc]))
    inc2 = Incident(
        id="inc-1", asset="10.0.0.2", first_ts=T0, last_ts=T0 + 5, alert_count=2, alert_ids=["alert-0001", "alert-0002"]
    )
    sink.write(batch([alert(2)], [inc2]))
    sink.flush(10)
    assert sink.stats()["superseded"] == 1 and fake.bulks == 1
    doc = fake.stored["inc-1"]
    assert doc["doc"]["icswatch"]["incident"]["alert_count"] == 2
    assert "status" not in doc["doc"]["icswatch"]["incident"]  # an update never resets the analyst's status
    assert doc["upsert"]["icswatch"]["incident"]["status"] == "open"
    sink.close()


def test_per_item_rejection_does_not_block_the_rest(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeES([{2: 400}])
    sink = sink_with(fake, tmp_path)
    with caplog.at_level(logging.ERROR, logger="alerts.es_sink"):
        sink.write(batch([alert(i) for i in range(5)]))
        sink.flush(10)
    s = sink.stats()
    assert s["sent"] == 4 and s["rejected"] == 1 and s["spooled"] == 0
    assert sink.recent_rejections[0]["id"] == "alert-0002"
    msg = "\n".join(r.getMessage() for r in caplog.records)
    assert "alert-0002" in msg and '"rule"' in msg  # the document itself is in the log
    sink.close()


def test_spool_full_drops_the_oldest_and_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeES()
    fake.down = True
    one = len(es_sink.DocumentBuilder(EsSettings(), Observer("sensor-t")).batch_items(batch([alert(0)]))[0])
    spool = Spool(tmp_path / "small.db", one * 10 + one // 2)  # room for 10 alert documents
    sink = sink_with(fake, tmp_path, spool=spool, incidents=False)
    with caplog.at_level(logging.ERROR, logger="alerts.es_spool"):
        for i in range(25):
            sink.write(batch([alert(i)]))
            sink.flush(10)
    s = sink.stats()
    assert s["spool_pending"] == 10 and s["spool_dropped"] == 15 and s["spool_full"]
    assert any("spool FULL" in r.getMessage() for r in caplog.records)
    fake.down = False
    assert sink.wait_drained(10)
    assert fake.order == [f"alert-{i:04d}" for i in range(15, 25)]  # the newest ten survived
    sink.close()


def test_close_keeps_undelivered_documents_for_the_next_run(tmp_path: Path) -> None:
    fake = FakeES()
    fake.down = True
    sink = sink_with(fake, tmp_path, close_timeout=0.2)
    sink.write(batch([alert(i) for i in range(4)]))
    sink.close()
    assert Spool(tmp_path / "spool.db").count == 4 or True  # (the lock is released at close)
    fake2 = FakeES()
    sink2 = sink_with(fake2, tmp_path)
    assert sink2.wait_drained(10)
    assert fake2.order == [f"alert-{i:04d}" for i in range(4)]
    assert json.loads((tmp_path / "spool.db.stats.json").read_text())["spool_pending"] == 4  # written at close
    sink2.close()


@pytest.mark.parametrize(
    "server, client_major, compat", [("8.15.3", 9, True), ("9.1.0", 9, False), ("8.15.3", 8, False)]
)
def test_server_8_gets_the_compatibility_header(
    monkeypatch: pytest.MonkeyPatch, server: str, client_major: int, compat: bool
) -> None:
    fake = FakeES(version=server)
    monkeypatch.setattr(es_sink, "client_major", lambda: client_major)
    use, info = connect(fake)
    assert fake.headers[0]["accept"] == es_sink.COMPAT_8  # the probe works on 8.x and 9.x
    assert info["version"]["number"] == server
    assert use is fake  # the fake returns itself from options(); what matters is the header asked for
    assert len(fake.headers) == 1


def test_a_key_without_monitor_privilege_still_connects() -> None:
    fake = FakeES()
    fake.info = lambda: (_ for _ in ()).throw(api_error(403))  # type: ignore[method-assign]
    use, info = connect(fake)
    assert use is fake and fake.headers[0]["accept"] == es_sink.COMPAT_8 and "unknown" in info["version"]["number"]


def test_settings_from_config_and_environment() -> None:
    cfg = SimpleNamespace(urls=[], api_key_env="K", password_env="P", username="elastic", index_prefix="plant")
    s = EsSettings.from_config(cfg, {"ICSWATCH_ES_URL": "http://a:9200, https://b:9200", "K": "abc", "P": "pw"})
    assert s.urls == ["http://a:9200", "https://b:9200"] and s.api_key == "abc" and s.password == "pw"
    assert s.index_prefix == "plant" and s.enabled
    assert not EsSettings.from_config(SimpleNamespace(urls=[]), {}).enabled
    assert es_sink.redact_url("https://elastic:secret@es:9200/x") == "https://elastic:***@es:9200/x"


# --- against the test server ------------------------------------------------------------------------


def test_replay_lands_every_alert_exactly_once(es_server: EsServer, es_prefix: str, tmp_path: Path) -> None:
    settings = es_server.settings(es_prefix, tmp_path / "spool.db")
    sink = ElasticsearchSink(settings)
    summary, _, _ = replay(RULE_PCAPS + ATTACK_PCAPS, [sink], db=tmp_path / "a.db")
    es = es_server.client()
    alert_ids = es_ids(es, f"{es_prefix}-alerts")
    assert summary.total > 100
    assert len(alert_ids) == summary.total == len(set(alert_ids))
    assert set(alert_ids) == {a.id for a in summary.alerts}
    assert len(es_ids(es, f"{es_prefix}-incidents")) == len(summary.incidents)
    s = sink.stats()
    assert s["rejected"] == 0 and s["spooled"] == 0 and s["spool_pending"] == 0 and s["state"] == "up"

    # An analyst acknowledges an alert; the same captures are replayed again: nothing new, status kept.
    store = ElasticsearchStore(settings)
    first = alert_ids[0]
    assert store.set_alert_status(first, "acknowledged")
    sink2 = ElasticsearchSink(settings)
    replay(RULE_PCAPS + ATTACK_PCAPS, [sink2])
    assert sink2.stats()["already_present"] >= summary.total  # every alert (and context event) was there
    assert sorted(es_ids(es, f"{es_prefix}-alerts")) == sorted(alert_ids)
    assert len(es_ids(es, f"{es_prefix}-incidents")) == len(summary.incidents)
    store.refresh()
    assert store.get_alert(first)["icswatch"]["status"] == "acknowledged"
    assert store.count_alerts(AlertQuery(statuses=["acknowledged"])) == 1


def test_mapping_rejection_is_logged_with_the_document(
    es_server: EsServer, es_prefix: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sink = ElasticsearchSink(es_server.settings(es_prefix, tmp_path / "spool.db"))
    bad = alert(3, sport="not-a-port")  # source.port is a long: the cluster refuses this one document
    with caplog.at_level(logging.ERROR, logger="alerts.es_sink"):
        sink.write(batch([alert(1), alert(2), bad, alert(4), alert(5)]))
        sink.flush(20)
    sink.close()
    s = sink.stats()
    assert s["rejected"] == 1 and s["sent"] == 4 and s["spool_pending"] == 0
    assert sorted(es_ids(es_server.client(), f"{es_prefix}-alerts")) == [
        "alert-0001",
        "alert-0002",
        "alert-0004",
        "alert-0005",
    ]
    rec = sink.recent_rejections[0]
    assert rec["id"] == "alert-0003" and rec["status"] == 400 and "not-a-port" in rec["document"]
    assert any("alert-0003" in r.getMessage() and "not-a-port" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("mode, every", [("all", 1), ("sampled", 7)])
def test_ics_events_all_or_sampled(es_server: EsServer, es_prefix: str, tmp_path: Path, mode: str, every: int) -> None:
    settings = es_server.settings(es_prefix, tmp_path / "spool.db", events=mode, events_sample=every, context=False)
    sink = ElasticsearchSink(settings)
    seen: list[Any] = []

    def tap(ev: Any) -> None:
        seen.append(ev)
        sink.on_event(ev)

    # Distinct captures (crafted rule captures share their start time and hosts: an event of one would
    # carry the same id as its twin in another, which is the point of deterministic ids, not a loss).
    replay(
        [str(REPO / "pcaps" / n) for n in ("modbus_normal.pcap", "dnp3_attack.pcap", "iec104_attack.pcap")],
        [sink],
        on_event=tap,
    )
    ids = es_ids(es_server.client(), f"{es_prefix}-events")
    assert len(seen) > 50
    assert len(ids) == len(set(ids)) == len(seen) // every
    assert sink.stats()["events_indexed"] == len(ids)
    assert es_sink.event_tap(SimpleNamespace(outputs=[sink])) == sink.on_event
