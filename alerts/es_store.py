"""The alert store on Elasticsearch: the ``AlertStore`` contract (alerts/store.py) over the indices the
sink writes, so the enterprise and province APIs run on either backend.

It answers every query the SQLite store answers, with the same results (``tests/test_es_store.py``
replays the rule captures into both and compares): filters (time range, severity or minimum severity,
rule, technique, asset, address, protocol, status, incident, text), the four sorts, keyset pagination
(``search_after`` behind the same opaque cursor), exact totals, counts by severity / rule / technique /
asset / protocol / status / source / destination, optionally per time bucket (``date_histogram``), an
alert's context events, and the analysts' status changes.

How each query maps:

- filters are ``bool.filter`` clauses on the keyword/ip/date fields of alerts/es_templates.py
  (``QUERY_FIELDS`` lists them; a test checks none is ``text``); addresses match ``source.address`` /
  ``destination.address``, the raw endpoint, so a MAC address of a layer-2 alert matches as in SQLite;
- ``text`` is a case-insensitive substring (``wildcard`` with ``case_insensitive``) of any of the fields
  SQLite searches. SQLite matches the concatenation of those fields, so a query spanning two of them
  ("modbus 10.0.0") matches there and not here; a search box does not ask that;
- sorts end with the document id, as SQLite's do, so pages never skip nor repeat; ``@timestamp`` is
  ``date_nanos`` so alerts a few microseconds apart sort as in SQLite;
- counts are ``terms`` aggregations (at most ``MAX_BUCKETS`` keys per time bucket; exact below that:
  composite aggregations would page further, and are left for when a cluster needs them); time buckets
  are ``fixed_interval`` histograms aligned on the epoch like SQLite's ``CAST(ts / interval) * interval``;
- status changes are partial updates of the one document (``refresh: wait_for``: the analyst sees it).

Writes: the sink (alerts/es_sink.py) is how a sensor writes (queue, bulk, retries, spool). ``write``
here is synchronous, for tools and tests: one bulk per batch, an exception if any document is refused.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Sequence
from typing import Any

from alerts import es_templates
from alerts.es_sink import DocumentBuilder, EsSettings, connect, make_client, parse_action
from alerts.records import SEVERITY_SCORE, STATUSES, Observer, iso_time
from alerts.sqlite_store import MAX_LIMIT, StoreError
from alerts.store import ALERT_SORTS, COUNT_BY, INCIDENT_SORTS, AlertQuery, CountBucket, IncidentQuery, Page, WriteBatch

MAX_BUCKETS = 10_000
MAX_CONTEXT = 10_000

COUNT_FIELDS = {
    "severity": "event.severity_name",
    "rule": "rule.id",
    "technique": "threat.technique.id",
    "asset": "icswatch.asset",
    "protocol": "network.protocol",
    "status": "icswatch.status",
    "src": "source.address",
    "dst": "destination.address",
}
ALERT_TEXT_FIELDS = (
    "rule.id",
    "rule.name",
    "rule.description",
    "source.address",
    "destination.address",
    "icswatch.asset",
    "network.protocol",
    "threat.technique.id",
    "threat.technique.name",
)
INCIDENT_TEXT_FIELDS = (
    "icswatch.incident.asset",
    "icswatch.incident.rule_ids",
    "threat.technique.id",
    "icswatch.incident.sources",
    "icswatch.incident.level_name",
)
ALERT_SORT_FIELDS = {"ts": ["@timestamp", "event.id"], "severity": ["event.severity", "@timestamp", "event.id"]}
INCIDENT_SORT_FIELDS = {
    "last_ts": ["@timestamp", "icswatch.incident.id"],
    "first_ts": ["event.start", "icswatch.incident.id"],
    "severity": ["event.severity", "@timestamp", "icswatch.incident.id"],
}
# Every field a query filters, sorts or aggregates on, per kind: tests/test_es_templates.py checks that
# each one is keyword/ip/date/number in the template itself (a test server accepts terms on text).
QUERY_FIELDS: dict[str, tuple[str, ...]] = {
    "alerts": tuple(
        sorted(
            {
                "@timestamp",
                "event.id",
                "event.severity",
                "event.severity_name",
                "rule.id",
                "threat.technique.id",
                "icswatch.asset",
                "network.protocol",
                "icswatch.status",
                "icswatch.incident_id",
                "source.address",
                "destination.address",
                *COUNT_FIELDS.values(),
                *ALERT_TEXT_FIELDS,
                *(f for fs in ALERT_SORT_FIELDS.values() for f in fs),
            }
        )
    ),
    "incidents": tuple(
        sorted(
            {
                "@timestamp",
                "event.start",
                "event.severity",
                "icswatch.incident.id",
                "icswatch.incident.level",
                "icswatch.incident.asset",
                "icswatch.incident.status",
                "threat.technique.id",
                *INCIDENT_TEXT_FIELDS,
                *(f for fs in INCIDENT_SORT_FIELDS.values() for f in fs),
            }
        )
    ),
    "context": ("icswatch.alert_id", "icswatch.role", "icswatch.seq"),
    # The store does not query events; these are what an events dashboard filters and aggregates on.
    "events": (
        "@timestamp",
        "event.id",
        "event.action",
        "event.outcome",
        "network.protocol",
        "network.transport",
        "source.ip",
        "source.address",
        "destination.ip",
        "destination.address",
        "destination.port",
        "ics.function",
        "ics.function_name",
        "ics.category",
        "ics.direction",
        "ics.result",
        "ics.unit",
        "ics.address",
        "observer.name",
    ),
}


def _encode_cursor(sort: str, values: Sequence[Any]) -> str:
    raw = json.dumps([sort, list(values)], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str, sort: str, n: int) -> list[Any]:
    try:
        got_sort, values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, TypeError) as exc:
        raise StoreError(f"bad cursor: {exc}") from None
    if got_sort != sort or not isinstance(values, list) or len(values) != n:
        raise StoreError("the cursor belongs to a query with another sort order")
    return values


def _wildcard_text(text: str) -> str:
    out = text.lower().replace("\\", "\\\\").replace("*", "\\*").replace("?", "\\?")
    return f"*{out}*"


def _text_clause(text: str, fields: Sequence[str]) -> dict[str, Any]:
    pattern = _wildcard_text(text)
    return {
        "bool": {
            "should": [{"wildcard": {f: {"value": pattern, "case_insensitive": True}}} for f in fields],
            "minimum_should_match": 1,
        }
    }


def _check_severity(name: str) -> None:
    if name not in SEVERITY_SCORE:
        raise StoreError(f"unknown severity {name!r} (low, medium, high, critical)")


class ElasticsearchStore:
    """``AlertStore`` on Elasticsearch. Connects on first use; safe to share between threads."""

    name = "elasticsearch"

    def __init__(
        self,
        settings: EsSettings | None = None,
        observer: Observer | None = None,
        *,
        client: Any = None,
        refresh: bool | str = False,
    ) -> None:
        self.settings = settings or EsSettings()
        self.observer = observer or Observer()
        self.prefix = self.settings.index_prefix
        self._own_client = client is None
        self.client = client if client is not None else make_client(self.settings)
        self._api: Any = None
        self.server: dict[str, Any] = {}
        n = es_templates.names(self.prefix)
        self.alerts = n["aliases"]["alerts"]
        self.incidents = n["aliases"]["incidents"]
        self.context = n["aliases"]["context"]
        self.refresh_writes = refresh
        self._builder = DocumentBuilder(self.settings, self.observer)
        self._templates_done = not self.settings.install_templates
        self.path = ", ".join(self.settings.urls)

    @classmethod
    def from_config(cls, cfg: Any, observer: Observer | None = None, **kw: Any) -> ElasticsearchStore:
        return cls(EsSettings.from_config(cfg), observer, **kw)

    @property
    def es(self) -> Any:
        if self._api is None:
            self._api, self.server = connect(self.client)
        return self._api

    def refresh(self) -> None:
        """Make every write so far visible to searches (tests, tools)."""
        self.es.indices.refresh(index=f"{self.prefix}-*")

    # -- writing (tools, tests) -------------------------------------------------------------------
    def write(self, batch: WriteBatch) -> None:
        items = self._builder.batch_items(batch)
        if not items:
            return
        es = self.es
        if not self._templates_done:
            es_templates.install(es, self.prefix, **self.settings.template_settings())
            self._templates_done = True
        resp = es.bulk(operations=b"".join(items), refresh=self.refresh_writes)
        problems = []
        for body, item in zip(items, resp.get("items") or []):
            op, res = next(iter(item.items()))
            status = int(res.get("status", 0))
            if 200 <= status < 300 or (status == 409 and op == "create"):
                continue
            _, index, doc_id = parse_action(body)
            problems.append(f"{index}/{doc_id}: HTTP {status} {res.get('error')}")
        if problems:
            raise StoreError(f"Elasticsearch refused {len(problems)} document(s): " + "; ".join(problems[:5]))

    def close(self) -> None:
        if self._own_client:
            try:
                self.client.close()
            except Exception:
                pass

    # -- alerts ------------------------------------------------------------------------------------
    def _hit(self, index: str, field: str, value: str) -> dict[str, Any] | None:
        resp = self.es.search(index=index, query={"term": {field: value}}, size=1, ignore_unavailable=True)
        hits = resp["hits"]["hits"]
        return hits[0] if hits else None

    def get_alert(self, alert_id: str) -> dict[str, Any] | None:
        hit = self._hit(self.alerts, "event.id", alert_id)
        return hit["_source"] if hit else None

    def _alert_filter(self, q: AlertQuery) -> list[dict[str, Any]]:
        f: list[dict[str, Any]] = []
        rng: dict[str, Any] = {}
        if q.start is not None:
            rng["gte"] = iso_time(q.start)
        if q.end is not None:
            rng["lt"] = iso_time(q.end)
        if rng:
            f.append({"range": {"@timestamp": rng}})
        for s in q.severities:
            _check_severity(s)
        if q.severities:
            f.append({"terms": {"event.severity_name": list(q.severities)}})
        if q.min_severity is not None:
            _check_severity(q.min_severity)
            f.append({"range": {"event.severity": {"gte": SEVERITY_SCORE[q.min_severity]}}})
        for values, fld in (
            (q.rule_ids, "rule.id"),
            (q.assets, "icswatch.asset"),
            (q.protocols, "network.protocol"),
            (q.statuses, "icswatch.status"),
            (q.techniques, "threat.technique.id"),
        ):
            if values:
                f.append({"terms": {fld: list(values)}})
        if q.ips:
            ips = list(q.ips)
            f.append(
                {
                    "bool": {
                        "should": [{"terms": {"source.address": ips}}, {"terms": {"destination.address": ips}}],
                        "minimum_should_match": 1,
                    }
                }
            )
        if q.incident_id is not None:
            f.append({"term": {"icswatch.incident_id": q.incident_id}})
        if q.text:
            f.append(_text_clause(q.text, ALERT_TEXT_FIELDS))
        return f

    @staticmethod
    def _query(filters: list[dict[str, Any]]) -> dict[str, Any]:
        return {"bool": {"filter": filters}} if filters else {"match_all": {}}

    def search_alerts(self, query: AlertQuery) -> Page:
        if query.sort not in ALERT_SORTS:
            raise StoreError(f"unknown sort {query.sort!r} (one of {', '.join(ALERT_SORTS)})")
        fields = ALERT_SORT_FIELDS[query.sort.lstrip("-")]
        return self._page(
            self.alerts, self._query(self._alert_filter(query)), query.sort, fields, query.limit, query.cursor
        )

    def _page(
        self, index: str, q: dict[str, Any], sort: str, fields: list[str], limit: int, cursor: str | None
    ) -> Page:
        limit = max(1, min(int(limit), MAX_LIMIT))
        order = "desc" if sort.startswith("-") else "asc"
        body: dict[str, Any] = {
            "query": q,
            "sort": [{f: {"order": order}} for f in fields],
            "size": limit + 1,
            "track_total_hits": True,
        }
        if cursor:
            body["search_after"] = _decode_cursor(cursor, sort, len(fields))
        resp = self.es.search(index=index, ignore_unavailable=True, allow_no_indices=True, **body)
        hits = resp["hits"]["hits"]
        total = resp["hits"]["total"]
        total = int(total["value"] if isinstance(total, dict) else total)
        more = len(hits) > limit
        hits = hits[:limit]
        nxt = _encode_cursor(sort, hits[-1]["sort"]) if more and hits else None
        return Page([h["_source"] for h in hits], nxt, total)

    def count_alerts(self, query: AlertQuery) -> int:
        resp = self.es.count(
            index=self.alerts,
            query=self._query(self._alert_filter(query)),
            ignore_unavailable=True,
            allow_no_indices=True,
        )
        return int(resp["count"])

    def alert_counts(
        self, by: str, query: AlertQuery | None = None, interval: float | None = None
    ) -> list[CountBucket]:
        if by not in COUNT_BY:
            raise StoreError(f"cannot count by {by!r} (one of {', '.join(COUNT_BY)})")
        q = query or AlertQuery()
        terms = {"terms": {"field": COUNT_FIELDS[by], "size": MAX_BUCKETS}}
        if interval:
            if interval <= 0:
                raise StoreError("interval must be positive")
            ms = interval * 1000
            if abs(ms - round(ms)) > 1e-9 or round(ms) < 1:
                raise StoreError("interval must be a whole number of milliseconds")
            aggs = {
                "t": {
                    "date_histogram": {"field": "@timestamp", "fixed_interval": f"{round(ms)}ms", "min_doc_count": 1},
                    "aggs": {"k": terms},
                }
            }
        else:
            aggs = {"k": terms}
        resp = self.es.search(
            index=self.alerts,
            query=self._query(self._alert_filter(q)),
            size=0,
            aggs=aggs,
            ignore_unavailable=True,
            allow_no_indices=True,
        )
        out: list[CountBucket] = []
        ag = resp.get("aggregations") or {}
        if interval:
            for tb in ag.get("t", {}).get("buckets", []):
                start = round(int(tb["key"]) / round(interval * 1000)) * interval  # as SQLite computes it
                for kb in tb["k"]["buckets"]:
                    out.append(CountBucket(str(kb["key"]), int(kb["doc_count"]), start))
        else:
            for kb in ag.get("k", {}).get("buckets", []):
                out.append(CountBucket(str(kb["key"]), int(kb["doc_count"]), None))
        out.sort(key=lambda b: (b.bucket if b.bucket is not None else 0, -b.count, b.key))
        return out

    def alert_events(self, alert_id: str) -> list[dict[str, Any]]:
        """The flow's events before the alert, its evidence (from the document), then the events after."""
        doc = self.get_alert(alert_id)
        if doc is None:
            return []
        resp = self.es.search(
            index=self.context,
            query={"term": {"icswatch.alert_id": alert_id}},
            size=MAX_CONTEXT,
            ignore_unavailable=True,
            allow_no_indices=True,
        )
        context: dict[str, list[tuple[int, dict[str, Any]]]] = {"before": [], "after": []}
        for h in resp["hits"]["hits"]:
            ic = h["_source"].get("icswatch", {})
            role = ic.get("role", "before")
            context.setdefault(role, []).append((int(ic.get("seq", 0)), dict(ic.get("evidence") or {}, role=role)))
        before = [d for _, d in sorted(context["before"], key=lambda x: x[0])]
        after = [d for _, d in sorted(context["after"], key=lambda x: x[0])]
        evidence = [dict(d, role="evidence") for d in doc.get("ics", {}).get("evidence", [])]
        return before + evidence + after

    def set_alert_status(self, alert_id: str, status: str) -> bool:
        if status not in STATUSES:
            raise StoreError(f"unknown status {status!r} (one of {', '.join(STATUSES)})")
        hit = self._hit(self.alerts, "event.id", alert_id)
        if hit is None:
            return False
        self.es.update(
            index=hit["_index"],
            id=hit["_id"],
            doc={"icswatch": {"status": status, "status_updated": iso_time(time.time())}},
            refresh="wait_for",
        )
        return True

    # -- incidents ---------------------------------------------------------------------------------
    def get_incident(self, incident_id: str) -> dict[str, Any] | None:
        hit = self._hit(self.incidents, "icswatch.incident.id", incident_id)
        return hit["_source"] if hit else None

    def search_incidents(self, query: IncidentQuery) -> Page:
        if query.sort not in INCIDENT_SORTS:
            raise StoreError(f"unknown sort {query.sort!r} (one of {', '.join(INCIDENT_SORTS)})")
        f: list[dict[str, Any]] = []
        if query.start is not None:
            f.append({"range": {"@timestamp": {"gte": iso_time(query.start)}}})
        if query.end is not None:
            f.append({"range": {"event.start": {"lt": iso_time(query.end)}}})
        if query.levels:
            f.append({"terms": {"icswatch.incident.level": list(query.levels)}})
        if query.min_severity is not None:
            if query.min_severity not in SEVERITY_SCORE:
                raise StoreError(f"unknown severity {query.min_severity!r}")
            f.append({"range": {"event.severity": {"gte": SEVERITY_SCORE[query.min_severity]}}})
        if query.assets:
            f.append({"terms": {"icswatch.incident.asset": list(query.assets)}})
        if query.statuses:
            f.append({"terms": {"icswatch.incident.status": list(query.statuses)}})
        for t in query.techniques:  # every technique asked for (as SQLite)
            f.append({"term": {"threat.technique.id": t}})
        if query.text:
            f.append(_text_clause(query.text, INCIDENT_TEXT_FIELDS))
        fields = INCIDENT_SORT_FIELDS[query.sort.lstrip("-")]
        return self._page(self.incidents, self._query(f), query.sort, fields, query.limit, query.cursor)

    def set_incident_status(self, incident_id: str, status: str) -> bool:
        if status not in STATUSES:
            raise StoreError(f"unknown status {status!r} (one of {', '.join(STATUSES)})")
        hit = self._hit(self.incidents, "icswatch.incident.id", incident_id)
        if hit is None:
            return False
        self.es.update(
            index=hit["_index"],
            id=hit["_id"],
            doc={"icswatch": {"incident": {"status": status, "status_updated": iso_time(time.time())}}},
            refresh="wait_for",
        )
        return True
