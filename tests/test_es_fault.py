"""Elasticsearch goes away in the middle of a replay and comes back: afterwards every alert is in the
cluster exactly once (count and ids), nothing lost, nothing duplicated, the spool is empty, and the
spool was replayed while the sensor was still running.

Two ways of going away:

- the server itself is stopped (``noida-db down``), kept down a while, started again on the same
  port and data: runs on the test server this suite starts (skipped on an external cluster, which a
  test must not stop);
- the network is cut (a proxy between the sink and the cluster refuses new connections and resets
  open ones, so a bulk can die half-sent) twice while the replay runs in its own thread: runs on any
  cluster, ``ICSWATCH_TEST_ES_URL`` included.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from es_testutil import (  # noqa: F401
    ATTACK_PCAPS,
    ENV_URL,
    RULE_PCAPS,
    EsServer,
    TcpProxy,
    es_ids,
    es_prefix,
    es_server,
    start_noida,
    start_replay,
)

from alerts.es_sink import ElasticsearchSink
from alerts.es_spool import read_stats
from alerts.sqlite_store import SQLiteStore
from alerts.store import AlertQuery

FILES = RULE_PCAPS + ATTACK_PCAPS


def wait_for(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def check_exactly_once(server: EsServer, prefix: str, summary: Any, db: Path, spool: Path) -> None:
    es = server.client()
    ids = es_ids(es, f"{prefix}-alerts")
    assert len(ids) == summary.total, f"{len(ids)} alert documents for {summary.total} alerts"
    assert len(set(ids)) == len(ids), "duplicates"
    assert set(ids) == {a.id for a in summary.alerts}, "other ids"
    incidents = es_ids(es, f"{prefix}-incidents")
    assert sorted(incidents) == sorted(summary.incidents)
    sq = SQLiteStore(db)
    try:
        assert sq.count_alerts(AlertQuery()) == summary.total
        want_context = sq.conn.execute("SELECT COUNT(*) FROM alert_events").fetchone()[0]
    finally:
        sq.close()
    context = es_ids(es, f"{prefix}-context")
    assert len(context) == len(set(context)) == want_context
    # incidents carry their final state (the newest update won, whatever the outage did to the order)
    resp = es.search(
        index=f"{prefix}-incidents", size=1000, source=["icswatch.incident.id", "icswatch.incident.alert_count"]
    )
    counts = {
        h["_source"]["icswatch"]["incident"]["id"]: h["_source"]["icswatch"]["incident"]["alert_count"]
        for h in resp["hits"]["hits"]
    }
    assert counts == {i.id: i.alert_count for i in summary.incidents.values()}
    assert read_stats(spool)["pending"] == 0


def test_server_stopped_mid_replay_then_restarted(tmp_path: Path) -> None:
    if os.environ.get(ENV_URL):
        pytest.skip("stops the server: runs on the test server only (the proxy test covers an external cluster)")
    server = start_noida(tmp_path / "noida")
    try:
        prefix = f"icswatch-fault-{uuid.uuid4().hex[:6]}"
        spool = tmp_path / "spool.db"
        sink = ElasticsearchSink(server.settings(prefix, spool, retries=1))
        rt, pipe = start_replay([sink], db=tmp_path / "a.db", batch_size=3)
        third = len(FILES) // 3
        for f in FILES[:third]:
            pipe.replay_file(Path(f))
        rt.flush()
        assert sink.flush(20) and sink.stats()["sent"] > 0 and sink.stats()["state"] == "up"

        server.stop()
        for f in FILES[third : 2 * third]:
            pipe.replay_file(Path(f))
        rt.flush()
        sink.flush(20)
        wait_for(lambda: sink.stats()["state"] == "down", 20, "the sink to notice")
        pending = sink.stats()["spool_pending"]
        assert pending > 0, "the sensor went on and the documents were spooled"
        time.sleep(2.0)  # down a while: the sink keeps probing with backoff, nothing is dropped
        failed = sink.stats()["failed_requests"]
        assert failed >= 2 and sink.stats()["spool_pending"] == pending and sink.stats()["spool_dropped"] == 0

        server.start()
        # Back while the sensor is still running: the spool is replayed in the background.
        wait_for(lambda: sink.stats()["spool_pending"] == 0, 30, "the spool to drain while running")
        assert sink.stats()["state"] == "up"
        for f in FILES[2 * third :]:
            pipe.replay_file(Path(f))
        summary = rt.close()
        s = sink.stats()
        assert s["rejected"] == 0 and s["spool_dropped"] == 0 and s["spooled"] >= pending
        check_exactly_once(server, prefix, summary, tmp_path / "a.db", spool)
    finally:
        server.stop()


def test_network_cut_twice_during_a_replay(es_server: EsServer, es_prefix: str, tmp_path: Path) -> None:
    target = urlsplit(es_server.url)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or (443 if target.scheme == "https" else 9200))
    netloc = f"127.0.0.1:{proxy.port}"
    if target.username:
        netloc = f"{target.username}:{target.password or ''}@{netloc}"
    url = f"{target.scheme}://{netloc}"
    spool = tmp_path / "spool.db"
    # Through a loopback proxy the certificate's host name cannot match: no verification on this hop.
    tls = {"verify_certs": False} if target.scheme == "https" else {}
    sink = ElasticsearchSink(es_server.settings(es_prefix, spool, url=url, retries=1, timeout=2.0, **tls))
    rt, pipe = start_replay([sink], db=tmp_path / "a.db", batch_size=2, on_event=lambda ev: time.sleep(0.0008))
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            for f in FILES:
                pipe.replay_file(Path(f))
            result["summary"] = rt.close()
        except BaseException as exc:
            result["error"] = exc

    worker = threading.Thread(target=run)
    worker.start()
    try:
        time.sleep(0.5)
        proxy.down()
        time.sleep(1.0)
        assert worker.is_alive(), "the replay must still be running while the cluster is away"
        proxy.up()
        time.sleep(0.5)
        proxy.down()
        time.sleep(0.8)
        proxy.up()
        worker.join(60)
    finally:
        if worker.is_alive():  # let a failed run finish instead of leaving it to hang
            proxy.up()
            worker.join(60)
    assert not worker.is_alive() and "error" not in result, result.get("error")
    s = sink.stats()
    assert s["spooled"] > 0 and s["failed_requests"] > 0, s  # the cuts were felt
    assert s["spool_pending"] == 0 and s["rejected"] == 0 and s["spool_dropped"] == 0
    check_exactly_once(es_server, es_prefix, result["summary"], tmp_path / "a.db", spool)
    proxy.close()
