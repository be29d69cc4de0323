"""The Elasticsearch store answers as the SQLite store does: the rule and attack captures are replayed
once into both (SQLite directly, Elasticsearch through the sink), then every query the dashboards and
the APIs make is asked of both and the answers compared: counts by severity / rule / technique / asset
(and the other keys) overall and over time, paging in every sort order, filters, text search, the
context of an alert, incidents, status changes."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from es_testutil import ATTACK_PCAPS, RULE_PCAPS, EsServer, es_server, replay  # noqa: F401 (fixture)

from alerts.es_sink import ElasticsearchSink
from alerts.es_store import ElasticsearchStore
from alerts.sqlite_store import SQLiteStore, StoreError
from alerts.store import COUNT_BY, AlertQuery, AlertStore, IncidentQuery


@pytest.fixture(scope="module")
def stores(es_server: EsServer, tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("es-store")
    prefix = f"icswatch-test-{uuid.uuid4().hex[:8]}"
    settings = es_server.settings(prefix, tmp / "spool.db")
    sink = ElasticsearchSink(settings)
    summary, _, _ = replay(RULE_PCAPS + ATTACK_PCAPS, [sink], db=tmp / "alerts.db", batch_size=7)
    assert sink.stats()["spool_pending"] == 0 and sink.stats()["rejected"] == 0
    sq = SQLiteStore(tmp / "alerts.db")
    es = ElasticsearchStore(settings)
    es.refresh()
    yield sq, es, summary
    sq.close()
    es.close()
    es_server.cleanup(prefix)


def same(x: Any) -> Any:
    """Floats to 12 significant digits: the test server re-prints ``_source`` numbers with fewer digits
    than Python (399.2999877929687 for 399.29998779296875); a real cluster returns the bytes it got."""
    if isinstance(x, float):
        return float(f"{x:.12g}")
    if isinstance(x, dict):
        return {k: same(v) for k, v in x.items()}
    if isinstance(x, list):
        return [same(v) for v in x]
    return x


def rows(buckets: list[Any]) -> list[tuple[str, int, Any]]:
    return [(b.key, b.count, b.bucket) for b in buckets]


def test_it_is_an_alert_store(stores: Any) -> None:
    _, es, _ = stores
    assert isinstance(es, AlertStore)


@pytest.mark.parametrize("by", COUNT_BY)
def test_dashboard_counts_are_the_same(stores: Any, by: str) -> None:
    sq, es, summary = stores
    assert sq.count_alerts(AlertQuery()) == es.count_alerts(AlertQuery()) == summary.total
    for interval in (None, 60, 3600, 86400, 0.5):
        assert rows(es.alert_counts(by, None, interval)) == rows(sq.alert_counts(by, None, interval)), (by, interval)
    q = AlertQuery(min_severity="medium", start=1767225600.0)
    assert rows(es.alert_counts(by, q, 600)) == rows(sq.alert_counts(by, q, 600))


def test_the_dashboard_figures_match_the_run(stores: Any) -> None:
    _, es, summary = stores
    assert {b.key: b.count for b in es.alert_counts("severity")} == dict(summary.by_severity)
    assert {b.key: b.count for b in es.alert_counts("rule")} == dict(summary.by_rule)
    assert {b.key: b.count for b in es.alert_counts("technique")} == dict(summary.by_technique)


@pytest.mark.parametrize("sort", ["-ts", "ts", "-severity", "severity"])
def test_paging_walks_the_same_alerts_in_the_same_order(stores: Any, sort: str) -> None:
    sq, es, summary = stores

    def walk(store: Any, q: AlertQuery) -> list[str]:
        out: list[str] = []
        cursor = None
        while True:
            q.cursor = cursor
            page = store.search_alerts(q)
            out += [d["event"]["id"] for d in page.items]
            assert page.total == store.count_alerts(q)
            cursor = page.next_cursor
            if not cursor:
                return out

    a = walk(sq, AlertQuery(sort=sort, limit=17))
    b = walk(es, AlertQuery(sort=sort, limit=17))
    assert a == b and len(a) == summary.total
    assert walk(sq, AlertQuery(sort=sort, limit=5, protocols=["modbus"])) == walk(
        es, AlertQuery(sort=sort, limit=5, protocols=["modbus"])
    )
    with pytest.raises(StoreError):
        es.search_alerts(
            AlertQuery(
                sort="ts" if sort != "ts" else "-ts",
                cursor=sq.search_alerts(AlertQuery(sort=sort, limit=1)).next_cursor,
            )
        )


def test_filters_and_text_search_are_the_same(stores: Any) -> None:
    sq, es, _ = stores
    some = sq.search_alerts(AlertQuery(limit=1, sort="-severity")).items[0]
    queries = [
        AlertQuery(severities=["high", "critical"]),
        AlertQuery(min_severity="high"),
        AlertQuery(rule_ids=[some["rule"]["id"], "no-such-rule"]),
        AlertQuery(techniques=["T0855", "T0836"]),
        AlertQuery(assets=[some["icswatch"]["asset"]]),
        AlertQuery(ips=[some["source"]["ip"]]),
        AlertQuery(protocols=["modbus", "dnp3"]),
        AlertQuery(statuses=["open"]),
        AlertQuery(incident_id=some["icswatch"]["incident_id"]),
        AlertQuery(start=1767225600.5, end=1767229200.0),
        AlertQuery(text="Modbus"),
        AlertQuery(text="write"),
        AlertQuery(text="T08"),
        AlertQuery(text="10.10.2"),
        AlertQuery(text="100%_*?"),
    ]
    for q in queries:
        assert es.count_alerts(q) == sq.count_alerts(q), q
        assert [d["event"]["id"] for d in es.search_alerts(q).items] == [
            d["event"]["id"] for d in sq.search_alerts(q).items
        ], q
    for bad in (AlertQuery(severities=["huge"]), AlertQuery(min_severity="huge"), AlertQuery(sort="rule")):
        with pytest.raises(StoreError):
            es.search_alerts(bad)
    with pytest.raises(StoreError):
        es.alert_counts("colour")


def test_alert_documents_and_context_are_the_same(stores: Any) -> None:
    sq, es, _ = stores
    mine = es.search_alerts(AlertQuery(limit=1000)).items
    theirs = sq.search_alerts(AlertQuery(limit=1000)).items
    assert len(mine) == len(theirs)
    for m, doc in zip(mine, theirs):
        for key in ("@timestamp", "event", "rule", "threat", "network", "observer", "ics", "icswatch"):
            assert same(m[key]) == same(doc[key]), (doc["event"]["id"], key)
        assert m["source"]["address"] == doc["source"]["ip"]
    for doc in theirs[::8]:  # the context of every 8th alert (two searches each)
        aid = doc["event"]["id"]
        assert same(es.get_alert(aid)) == same(mine[theirs.index(doc)])
        assert same(es.alert_events(aid)) == same(sq.alert_events(aid))
    assert es.get_alert("nope") is None and es.alert_events("nope") == []


@pytest.mark.parametrize("sort", ["-last_ts", "last_ts", "-severity", "severity", "first_ts", "-first_ts"])
def test_incidents_are_the_same(stores: Any, sort: str) -> None:
    sq, es, summary = stores
    for q in (
        IncidentQuery(sort=sort, limit=1000),
        IncidentQuery(sort=sort, levels=[2, 3]),
        IncidentQuery(sort=sort, min_severity="medium"),
        IncidentQuery(sort=sort, techniques=["T0855"]),
        IncidentQuery(sort=sort, text="modbus"),
        IncidentQuery(sort=sort, start=1767225600.0, end=1767240000.0),
    ):
        a, b = sq.search_incidents(q), es.search_incidents(q)
        assert [d["event"]["id"] for d in a.items] == [d["event"]["id"] for d in b.items], q
        assert a.total == b.total
    assert sq.search_incidents(IncidentQuery(limit=1000)).total == len(summary.incidents)
    page = es.search_incidents(IncidentQuery(sort=sort, limit=4))
    nxt = es.search_incidents(IncidentQuery(sort=sort, limit=4, cursor=page.next_cursor))
    assert [d["event"]["id"] for d in page.items + nxt.items] == [
        d["event"]["id"] for d in sq.search_incidents(IncidentQuery(sort=sort, limit=8)).items
    ]


def test_status_changes_are_seen_by_queries(stores: Any) -> None:
    sq, es, _ = stores
    ids = [d["event"]["id"] for d in sq.search_alerts(AlertQuery(limit=3, sort="ts")).items]
    for aid, status in zip(ids, ("acknowledged", "closed", "false_positive")):
        assert sq.set_alert_status(aid, status) and es.set_alert_status(aid, status)
    assert rows(es.alert_counts("status")) == rows(sq.alert_counts("status"))
    assert es.get_alert(ids[1])["icswatch"]["status"] == "closed"
    assert not es.set_alert_status("nope", "closed")
    with pytest.raises(StoreError):
        es.set_alert_status(ids[0], "done")
    inc = sq.search_incidents(IncidentQuery(limit=1)).items[0]["event"]["id"]
    assert sq.set_incident_status(inc, "acknowledged") and es.set_incident_status(inc, "acknowledged")
    q = IncidentQuery(statuses=["acknowledged"])
    assert (
        [d["event"]["id"] for d in es.search_incidents(q).items]
        == [d["event"]["id"] for d in sq.search_incidents(q).items]
        == [inc]
    )
    assert es.get_incident(inc)["icswatch"]["incident"]["status"] == "acknowledged"
