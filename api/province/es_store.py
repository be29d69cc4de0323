"""The platform's store on Elasticsearch (``store: es``): the ``ProvinceStore`` contract
(api/province/store.py) with incidents, their history, advisories, acknowledgements and the audit log
in Elasticsearch (api/province/es_indices.py), and the registry, credentials, tokens and the replay
cache in the SQLite file, as store.py prescribes: they are small, relational, and read on every
signed request.

How each rule of the contract holds:

- **idempotent intake**: an incident is a document whose id is ``<enterprise_id>/<incident_id>``,
  written with ``create``: a second report of the same incident gets 409 from Elasticsearch and the
  stored one is returned. ``intake_batch`` spends the batch's nonces in one SQLite transaction, then
  writes the fresh reports in one ``_bulk`` of ``create`` actions; a report is acknowledged only
  when its action succeeded (Elasticsearch answers a bulk once its translog is written; with the
  default ``index.translog.durability: request`` that is a flush to the disk).
- **updates**: compare-and-set on the document (``if_seq_no`` / ``if_primary_term``). The applied
  update ids and the history live in the incident document itself, so "already applied" and the new
  revision are decided by the same atomic write (two documents could not be).
- **acknowledgements**: compare-and-set on the recipient document; the first one counts.
- **reading what was just written**: gets by id are real time. Searches see a write once the index
  refreshes (1 s by default); a search that follows a write *of this process* refreshes the index first,
  so an analyst sees what this platform has accepted. With several worker processes, a search may miss
  another worker's writes of the last second.
- **the situational picture**: the same figures as SQLite (tests/test_province_es_store.py compares
  them on the same reports): totals by ``filter`` aggregations and ``cardinality`` (exact up to 40,000
  enterprises), counts by ``terms`` (every key, sorted as SQLite sorts them: count descending, then
  key), the timeline by a ``histogram`` on discovery time (buckets aligned on the epoch like SQLite's
  ``CAST(t / interval) * interval``), late and open reports by sorted searches.
- **text search** is a substring of the same lowercased text SQLite searches (``wildcard`` on a
  keyword), so both stores find the same incidents.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Sequence
from dataclasses import astuple
from datetime import datetime, timezone
from typing import Any

from api.province import es_indices
from api.province.records import (
    MAX_LIMIT,
    OPEN_STATUSES,
    decode_cursor,
    encode_cursor,
    incident_brief,
    incident_record,
    search_text,
)
from api.province.settings import ProvinceSettings
from api.province.sqlite_store import SQLiteProvinceStore
from api.province.store import (
    Advisory,
    AuditEntry,
    AuditFilter,
    Credential,
    Enterprise,
    IncidentFilter,
    IncidentRecord,
    IntakeItem,
    IntakeOutcome,
    Page,
    Recipient,
    SituationQuery,
    StoreError,
    Token,
    UpdateOutcome,
    UpdateRecord,
)

MAX_TERMS = 10_000  # keys per terms aggregation (cities, industries, protocols...: far fewer in a province)
CARDINALITY_PRECISION = 40_000  # cardinality is exact below this many distinct values
MAX_CAS_RETRIES = 10
SCAN_PAGE = 1000
BRIEF_FIELDS = ["enterprise_id", "incident_id", "title", "level", "status", "city", "industry", "deadline"]
BRIEF_FIELDS += ["received_at", "late"]


def es_settings(settings: ProvinceSettings, urls: list[str]) -> Any:
    """The client settings (alerts/es_sink.py's, shared with the enterprise side) for the platform's."""
    from alerts.es_sink import EsSettings

    return EsSettings.from_config(
        _Section(
            urls=urls,
            index_prefix=settings.es_index_prefix,
            username=settings.es_username,
            ca_file=settings.es_ca_file,
            timeout=settings.es_timeout,
        )
    )


class _Section:
    """Attributes in the shape ``EsSettings.from_config`` reads (the API key and password come from the
    environment there: ICSWATCH_ES_API_KEY, ICSWATCH_ES_PASSWORD)."""

    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat()


def _wildcard(text: str) -> str:
    escaped = text.lower().replace("\\", "\\\\").replace("*", "\\*").replace("?", "\\?")
    return f"*{escaped}*"


def _query(filters: list[dict[str, Any]]) -> dict[str, Any]:
    return {"bool": {"filter": filters}} if filters else {"match_all": {}}


def _time_range(field: str, since: float | None, until: float | None) -> list[dict[str, Any]]:
    """The filter ``since <= field < until`` (either bound may be absent); none without bounds."""
    rng: dict[str, Any] = {}
    if since is not None:
        rng["gte"] = since
    if until is not None:
        rng["lt"] = until
    return [{"range": {field: rng}}] if rng else []


def _total(resp: Any) -> int:
    total = resp["hits"]["total"]
    return int(total["value"] if isinstance(total, dict) else total)


def _sorted_counts(buckets: list[dict[str, Any]], limit: int | None = None) -> list[dict[str, Any]]:
    rows = sorted(
        ({"key": b["key"], "count": int(b["doc_count"])} for b in buckets), key=lambda r: (-r["count"], r["key"])
    )
    return rows[:limit] if limit else rows


class ElasticsearchProvinceStore:
    """``ProvinceStore`` with incidents, advisories and the audit log in Elasticsearch."""

    name = "elasticsearch"
    intake_in_loop = False  # a bulk is a network round trip: the intake's writer thread runs it

    def __init__(
        self, registry: SQLiteProvinceStore, settings: Any, *, client: Any = None, replicas: int | None = None
    ) -> None:
        from alerts.es_sink import connect, make_client

        self.registry = registry
        self.settings = settings
        self.prefix = settings.index_prefix
        self._own_client = client is None
        self.client = client if client is not None else make_client(settings)
        try:
            self.es, self.server = connect(self.client)
            es_indices.install(self.es, self.prefix, replicas)
        except Exception as exc:
            if self._own_client:
                self.client.close()
            from alerts.es_sink import describe, redact_url

            where = ", ".join(redact_url(u) for u in settings.urls)
            raise StoreError(f"Elasticsearch at {where} cannot be used: {describe(exc)}") from None
        self.idx = es_indices.names(self.prefix)
        self._dirty: set[str] = set()
        self._dirty_lock = threading.Lock()

    def close(self) -> None:
        if self._own_client:
            try:
                self.client.close()
            except Exception:  # noqa: BLE001 - closing anyway
                pass
        self.registry.close()

    # -- read-after-write --------------------------------------------------------------------------
    def _wrote(self, kind: str) -> None:
        with self._dirty_lock:
            self._dirty.add(kind)

    def _fresh(self, kind: str) -> str:
        """The index of ``kind``, refreshed first if this process wrote to it since the last refresh."""
        with self._dirty_lock:
            dirty = kind in self._dirty
            self._dirty.discard(kind)  # before the refresh: a write landing during it marks it again
        if dirty:
            self.es.indices.refresh(index=self.idx[kind])
        return self.idx[kind]

    def refresh(self) -> None:
        """Make every write so far visible to searches (tests, tools)."""
        for kind in es_indices.KINDS:
            self._wrote(kind)
            self._fresh(kind)

    # -- registry, credentials, tokens, nonces: the SQLite file ------------------------------------
    def get_meta(self, key: str) -> str | None:
        return self.registry.get_meta(key)

    def set_meta(self, key: str, value: str) -> None:
        self.registry.set_meta(key, value)

    def add_enterprise(self, e: Enterprise) -> None:
        self.registry.add_enterprise(e)

    def update_enterprise(self, enterprise_id: str, fields: dict[str, Any], now: float) -> Enterprise | None:
        return self.registry.update_enterprise(enterprise_id, fields, now)

    def get_enterprise(self, enterprise_id: str) -> Enterprise | None:
        return self.registry.get_enterprise(enterprise_id)

    def list_enterprises(
        self, city: str | None = None, industry: str | None = None, limit: int = 100, cursor: str | None = None
    ) -> Page:
        return self.registry.list_enterprises(city, industry, limit, cursor)

    def match_enterprises(
        self, all_: bool, cities: Sequence[str], industries: Sequence[str], ids: Sequence[str]
    ) -> list[str]:
        return self.registry.match_enterprises(all_, cities, industries, ids)

    def add_credential(self, c: Credential) -> None:
        self.registry.add_credential(c)

    def get_credential(self, key_id: str) -> Credential | None:
        return self.registry.get_credential(key_id)

    def credential_and_enterprise(self, key_id: str) -> tuple[Credential, Enterprise | None] | None:
        return self.registry.credential_and_enterprise(key_id)

    def list_credentials(self, enterprise_id: str) -> list[Credential]:
        return self.registry.list_credentials(enterprise_id)

    def set_credential(self, key_id: str, *, expires_at: float | None = None, revoked_at: float | None = None) -> bool:
        return self.registry.set_credential(key_id, expires_at=expires_at, revoked_at=revoked_at)

    def touch_credential(self, key_id: str, ts: float) -> None:
        self.registry.touch_credential(key_id, ts)

    def add_token(self, t: Token) -> None:
        self.registry.add_token(t)

    def get_token(self, token_hash: str) -> Token | None:
        return self.registry.get_token(token_hash)

    def list_tokens(self) -> list[Token]:
        return self.registry.list_tokens()

    def revoke_token(self, token_id: str, ts: float) -> bool:
        return self.registry.revoke_token(token_id, ts)

    def touch_token(self, token_id: str, ts: float) -> None:
        self.registry.touch_token(token_id, ts)

    def use_nonce(self, key_id: str, nonce: str, ts: float, now: float, window: float) -> bool:
        return self.registry.use_nonce(key_id, nonce, ts, now, window)

    # -- incidents -----------------------------------------------------------------------------------
    @staticmethod
    def _key(enterprise_id: str, incident_id: str) -> str:
        return f"{enterprise_id}/{incident_id}"

    @staticmethod
    def _source(rec: IncidentRecord) -> dict[str, Any]:
        return {
            "key": f"{rec.enterprise_id}/{rec.incident_id}",
            "enterprise_id": rec.enterprise_id,
            "incident_id": rec.incident_id,
            "title": rec.doc.get("title", ""),
            "city": rec.city,
            "industry": rec.industry,
            "cii": rec.cii,
            "level": rec.level,
            "status": rec.status,
            "discovered_at": rec.discovered_at,
            "received_at": rec.received_at,
            "updated_at": rec.updated_at,
            "deadline": rec.deadline,
            "late": rec.late,
            "reportable_at": rec.reportable_at,
            "revision": rec.revision,
            "protocols": sorted(set(rec.protocols)),
            "techniques": sorted(set(rec.techniques)),
            "asset_types": sorted(set(rec.asset_types)),
            "search": search_text(rec),
            "update_ids": [],
            "updates": [],
            "doc": rec.doc,
            "@timestamp": _iso(rec.received_at),
        }

    @staticmethod
    def _record(src: dict[str, Any]) -> IncidentRecord:
        return incident_record(src, src["doc"])

    def _get(self, kind: str, doc_id: str) -> dict[str, Any] | None:
        """The document ``doc_id`` of the ``kind`` index with its metadata (a real-time get), or None."""
        from elasticsearch import NotFoundError

        try:
            return dict(self.es.get(index=self.idx[kind], id=doc_id))
        except NotFoundError:
            return None

    def _get_source(self, enterprise_id: str, incident_id: str) -> dict[str, Any] | None:
        return self._get("incidents", self._key(enterprise_id, incident_id))

    def _search_page(
        self, kind: str, filters: list[dict[str, Any]], sort: list[dict[str, str]], limit: int, cursor: str | None,
        **extra: Any,
    ) -> tuple[list[dict[str, Any]], str | None, int]:
        """One page of a sorted search of the ``kind`` index (``search_after`` the cursor's sort values):
        its hits (at most ``limit``), the next page's cursor (None on the last) and the total."""
        body: dict[str, Any] = {
            "query": _query(filters),
            "sort": sort,
            "size": limit + 1,
            "track_total_hits": True,
            **extra,
        }
        if cursor:
            body["search_after"] = decode_cursor(cursor, len(sort))
        resp = self.es.search(index=self._fresh(kind), **body)
        hits = resp["hits"]["hits"]
        more = len(hits) > limit
        hits = hits[:limit]
        return hits, (encode_cursor(hits[-1]["sort"]) if more and hits else None), _total(resp)

    def insert_incident(self, rec: IncidentRecord) -> tuple[bool, IncidentRecord]:
        from elasticsearch import ConflictError

        try:
            self.es.create(
                index=self.idx["incidents"],
                id=self._key(rec.enterprise_id, rec.incident_id),
                document=self._source(rec),
            )
        except ConflictError:
            got = self._get_source(rec.enterprise_id, rec.incident_id)
            if got is None:  # deleted in between: an operator's doing, not a race of ours
                raise StoreError("the incident vanished while it was being reported") from None
            return False, self._record(got["_source"])
        finally:
            self._wrote("incidents")
        return True, rec

    def intake_batch(self, items: Sequence[IntakeItem], now: float, window: float) -> list[IntakeOutcome]:
        # 1. the nonces, in one SQLite transaction (a replay writes nothing, here or below)
        claims = self.registry.intake_batch([IntakeItem(i.key_id, i.nonce, i.ts, None) for i in items], now, window)
        out = [IntakeOutcome(fresh=c.fresh) for c in claims]
        writes = [
            n for n, (item, c) in enumerate(zip(items, claims, strict=True)) if c.fresh and item.record is not None
        ]
        if not writes:
            return out
        # 2. the fresh reports, in one bulk of create actions on deterministic ids
        operations: list[dict[str, Any]] = []
        for n in writes:
            rec = items[n].record
            assert rec is not None
            operations.append(
                {"create": {"_index": self.idx["incidents"], "_id": self._key(rec.enterprise_id, rec.incident_id)}}
            )
            operations.append(self._source(rec))
        try:
            resp = self.es.bulk(
                operations=operations, filter_path="errors,items.*.status,items.*.error.type,items.*.error.reason"
            )
        finally:
            self._wrote("incidents")
        results = resp.get("items") or []
        if len(results) != len(writes):
            raise StoreError("Elasticsearch answered the bulk with a different number of items")
        duplicates: list[int] = []
        for n, result in zip(writes, results, strict=True):
            _, res = next(iter(result.items()))
            status = int(res.get("status", 0))
            if 200 <= status < 300:
                out[n].created, out[n].stored = True, items[n].record
            elif status == 409:
                duplicates.append(n)
            else:
                err = res.get("error") or {}
                out[n].error = f"HTTP {status} {err.get('type', '')}: {err.get('reason', '')}"[:300]
        # 3. the incidents that were there already (or came earlier in this batch): real-time gets
        if duplicates:
            ids = [self._key(items[n].record.enterprise_id, items[n].record.incident_id) for n in duplicates]  # type: ignore[union-attr]
            docs = self.es.mget(index=self.idx["incidents"], ids=ids)["docs"]
            for n, d in zip(duplicates, docs, strict=True):
                if d.get("found"):
                    out[n].stored = self._record(d["_source"])
                else:
                    out[n].error = "the incident was reported but cannot be read back"
        return out

    def get_incident(self, enterprise_id: str, incident_id: str) -> IncidentRecord | None:
        got = self._get_source(enterprise_id, incident_id)
        return self._record(got["_source"]) if got else None

    def find_incident(self, incident_id: str) -> list[IncidentRecord]:
        resp = self.es.search(
            index=self._fresh("incidents"),
            query={"term": {"incident_id": incident_id}},
            sort=[{"key": "asc"}],
            size=10,
        )
        return [self._record(h["_source"]) for h in resp["hits"]["hits"]]

    def apply_update(self, rec: IncidentRecord, update: UpdateRecord, expected_revision: int) -> UpdateOutcome:
        from elasticsearch import ConflictError

        got = self._get_source(rec.enterprise_id, rec.incident_id)
        if got is None:
            return "missing"
        src = got["_source"]
        if update.update_id in (src.get("update_ids") or []):
            return "duplicate"
        if int(src["revision"]) != expected_revision:
            return "conflict"
        new = self._source(rec)
        new["update_ids"] = [*(src.get("update_ids") or []), update.update_id]
        new["updates"] = [
            *(src.get("updates") or []),
            {
                "update_id": update.update_id,
                "received_at": update.received_at,
                "actor": update.actor,
                "revision": update.revision,
                "changes": update.changes,
            },
        ]
        try:
            self.es.index(
                index=self.idx["incidents"],
                id=self._key(rec.enterprise_id, rec.incident_id),
                document=new,
                if_seq_no=got["_seq_no"],
                if_primary_term=got["_primary_term"],
            )
        except ConflictError:
            return "conflict"  # another update landed since the read: the service merges again
        finally:
            self._wrote("incidents")
        return "applied"

    def incident_history(self, enterprise_id: str, incident_id: str) -> list[UpdateRecord]:
        got = self._get_source(enterprise_id, incident_id)
        if got is None:
            return []
        updates = sorted(got["_source"].get("updates") or [], key=lambda u: u["revision"])
        return [
            UpdateRecord(u["update_id"], u["received_at"], u["actor"], u["changes"], u["revision"]) for u in updates
        ]

    def search_incidents(self, f: IncidentFilter) -> Page:
        filters: list[dict[str, Any]] = []
        if f.enterprise_id is not None:
            filters.append({"term": {"enterprise_id": f.enterprise_id}})
        for field, values in (
            ("city", f.cities),
            ("industry", f.industries),
            ("level", f.levels),
            ("status", f.statuses),
        ):
            if values:
                filters.append({"terms": {field: list(values)}})
        if f.late is not None:
            filters.append({"term": {"late": bool(f.late)}})
        filters += _time_range("received_at", f.since, f.until)
        if f.text:
            filters.append({"wildcard": {"search": {"value": _wildcard(f.text), "case_insensitive": True}}})
        limit = max(1, min(int(f.limit), MAX_LIMIT))
        hits, nxt, total = self._search_page(
            "incidents", filters, [{"received_at": "desc"}, {"key": "desc"}], limit, f.cursor
        )
        return Page([self._record(h["_source"]) for h in hits], nxt, total)

    def situation(self, q: SituationQuery, now: float) -> dict[str, Any]:
        filters = _time_range("discovered_at", q.since, q.until)
        if q.cities:
            filters.append({"terms": {"city": list(q.cities)}})
        if q.industries:
            filters.append({"terms": {"industry": list(q.industries)}})
        top = max(1, min(q.top, 100))
        interval = max(60.0, float(q.interval))
        index = self._fresh("incidents")

        def terms(field: str) -> dict[str, Any]:
            return {"terms": {"field": field, "size": MAX_TERMS}}

        resp = self.es.search(
            index=index,
            query=_query(filters),
            size=0,
            track_total_hits=True,
            aggs={
                "open": {"filter": {"terms": {"status": list(OPEN_STATUSES)}}},
                "late": {"filter": {"term": {"late": True}}},
                "mandatory": {"filter": {"exists": {"field": "deadline"}}},
                "cii": {"filter": {"term": {"cii": True}}},
                "enterprises": {
                    "cardinality": {"field": "enterprise_id", "precision_threshold": CARDINALITY_PRECISION}
                },
                "by_city": terms("city"),
                "by_industry": terms("industry"),
                "by_level": terms("level"),
                "by_status": terms("status"),
                "by_protocol": terms("protocols"),
                "by_technique": terms("techniques"),
                "by_asset_type": terms("asset_types"),
                "timeline": {
                    "histogram": {"field": "discovered_at", "interval": interval, "min_doc_count": 1},
                    "aggs": {"level": terms("level")},
                },
            },
        )
        ag = resp.get("aggregations") or {}
        out: dict[str, Any] = {
            "totals": {
                "incidents": _total(resp),
                "open": int(ag["open"]["doc_count"]),
                "late": int(ag["late"]["doc_count"]),
                "mandatory": int(ag["mandatory"]["doc_count"]),
                "enterprises": int(ag["enterprises"]["value"]),
                "cii": int(ag["cii"]["doc_count"]),
            }
        }
        for name in ("by_city", "by_industry", "by_level", "by_status"):
            out[name] = _sorted_counts(ag[name]["buckets"])
        for name in ("by_protocol", "by_technique", "by_asset_type"):
            out[name] = _sorted_counts(ag[name]["buckets"], top)
        out["timeline"] = sorted(
            (
                {"bucket": float(tb["key"]), "level": int(lb["key"]), "count": int(lb["doc_count"])}
                for tb in ag["timeline"]["buckets"]
                for lb in tb["level"]["buckets"]
            ),
            key=lambda r: (r["bucket"], r["level"]),
        )
        out["interval"] = interval
        late = self.es.search(
            index=index,
            query=_query([*filters, {"term": {"late": True}}]),
            sort=[{"received_at": "desc"}, {"key": "desc"}],
            size=top,
            source=BRIEF_FIELDS,
        )
        opened = self.es.search(
            index=index,
            query=_query([*filters, {"terms": {"status": list(OPEN_STATUSES)}}]),
            sort=[{"level": "asc"}, {"received_at": "desc"}, {"key": "desc"}],
            size=top,
            source=BRIEF_FIELDS,
        )
        out["late_reports"] = [self._brief(h["_source"]) for h in late["hits"]["hits"]]
        out["open_reports"] = [self._brief(h["_source"]) for h in opened["hits"]["hits"]]
        return out

    @staticmethod
    def _brief(src: dict[str, Any]) -> dict[str, Any]:
        return incident_brief(src, src.get("title", ""))

    # -- advisories ----------------------------------------------------------------------------------
    @staticmethod
    def _advisory(src: dict[str, Any]) -> Advisory:
        return Advisory(
            src["id"],
            src["title"],
            src["body"],
            src["kind"],
            src["severity"],
            src["targets"],
            src["issued_by"],
            src["issued_at"],
            src.get("expires_at"),
            list(src.get("techniques") or []),
            list(src.get("references") or []),
        )

    @staticmethod
    def _recipient(src: dict[str, Any]) -> Recipient:
        return Recipient(
            src["advisory_id"],
            src["enterprise_id"],
            src.get("delivered_at"),
            src.get("acked_at"),
            src.get("ack_note") or "",
            src.get("acked_by") or "",
        )

    def add_advisory(self, a: Advisory, recipients: Sequence[str]) -> None:
        # The recipients first, the advisory last: it is listed only once everything it points to exists.
        ops: list[dict[str, Any]] = []
        for e in recipients:
            ops.append({"create": {"_index": self.idx["recipients"], "_id": f"{a.id}/{e}"}})
            ops.append(
                {
                    "advisory_id": a.id,
                    "enterprise_id": e,
                    "delivered_at": None,
                    "acked_at": None,
                    "ack_note": "",
                    "acked_by": "",
                }
            )
        try:
            for i in range(0, len(ops), 2 * SCAN_PAGE):
                resp = self.es.bulk(
                    operations=ops[i : i + 2 * SCAN_PAGE], filter_path="errors,items.*.status,items.*.error.type"
                )
                if resp.get("errors"):
                    bad = [it for it in resp["items"] if next(iter(it.values())).get("status", 0) >= 300]
                    raise StoreError(f"Elasticsearch refused {len(bad)} recipient(s) of {a.id}")
            self.es.create(
                index=self.idx["advisories"],
                id=a.id,
                document={
                    "id": a.id,
                    "title": a.title,
                    "body": a.body,
                    "kind": a.kind,
                    "severity": a.severity,
                    "targets": a.targets,
                    "issued_by": a.issued_by,
                    "issued_at": a.issued_at,
                    "expires_at": a.expires_at,
                    "techniques": list(a.techniques),
                    "references": list(a.references),
                    "recipients": list(recipients),
                    "@timestamp": _iso(a.issued_at),
                },
            )
        finally:
            self._wrote("recipients")
            self._wrote("advisories")

    def get_advisory(self, advisory_id: str) -> Advisory | None:
        got = self._get("advisories", advisory_id)
        return self._advisory(got["_source"]) if got else None

    def list_advisories(self, enterprise_id: str | None, limit: int = 100, cursor: str | None = None) -> Page:
        limit = max(1, min(limit, MAX_LIMIT))
        filters = [{"term": {"recipients": enterprise_id}}] if enterprise_id is not None else []
        hits, nxt, total = self._search_page(
            "advisories", filters, [{"issued_at": "desc"}, {"id": "desc"}], limit, cursor,
            source={"excludes": ["recipients"]},
        )
        return Page([self._advisory(h["_source"]) for h in hits], nxt, total)

    def _recipient_doc(self, advisory_id: str, enterprise_id: str) -> dict[str, Any] | None:
        return self._get("recipients", f"{advisory_id}/{enterprise_id}")

    def recipient(self, advisory_id: str, enterprise_id: str) -> Recipient | None:
        got = self._recipient_doc(advisory_id, enterprise_id)
        return self._recipient(got["_source"]) if got else None

    def recipients(self, advisory_id: str) -> list[Recipient]:
        index = self._fresh("recipients")
        out: list[Recipient] = []
        after: list[Any] | None = None
        while True:
            kw: dict[str, Any] = {"search_after": after} if after else {}
            resp = self.es.search(
                index=index,
                query={"term": {"advisory_id": advisory_id}},
                sort=[{"enterprise_id": "asc"}],
                size=SCAN_PAGE,
                **kw,
            )
            hits = resp["hits"]["hits"]
            out.extend(self._recipient(h["_source"]) for h in hits)
            if len(hits) < SCAN_PAGE:
                return out
            after = hits[-1]["sort"]

    def ack_counts(self, advisory_ids: Sequence[str]) -> dict[str, tuple[int, int]]:
        if not advisory_ids:
            return {}
        resp = self.es.search(
            index=self._fresh("recipients"),
            query={"terms": {"advisory_id": list(advisory_ids)}},
            size=0,
            aggs={
                "adv": {
                    "terms": {"field": "advisory_id", "size": len(advisory_ids)},
                    "aggs": {"acked": {"filter": {"exists": {"field": "acked_at"}}}},
                }
            },
        )
        buckets = (resp.get("aggregations") or {}).get("adv", {}).get("buckets", [])
        return {b["key"]: (int(b["doc_count"]), int(b["acked"]["doc_count"])) for b in buckets}

    def _cas_recipient(self, advisory_id: str, enterprise_id: str, change: Any) -> Recipient | None:
        """Read, change (``change(source) -> new source or None for no change``), write if unchanged since."""
        from elasticsearch import ConflictError

        for _ in range(MAX_CAS_RETRIES):
            got = self._recipient_doc(advisory_id, enterprise_id)
            if got is None:
                return None
            new = change(dict(got["_source"]))
            if new is None:
                return self._recipient(got["_source"])
            try:
                self.es.index(
                    index=self.idx["recipients"],
                    id=f"{advisory_id}/{enterprise_id}",
                    document=new,
                    if_seq_no=got["_seq_no"],
                    if_primary_term=got["_primary_term"],
                )
            except ConflictError:
                continue
            finally:
                self._wrote("recipients")
            return self._recipient(new)
        raise StoreError(f"recipient {advisory_id}/{enterprise_id} is being changed concurrently; retry")

    def mark_delivered(self, advisory_ids: Sequence[str], enterprise_id: str, ts: float) -> None:
        if not advisory_ids:
            return
        docs = self.es.mget(index=self.idx["recipients"], ids=[f"{a}/{enterprise_id}" for a in advisory_ids])["docs"]

        def deliver(src: dict[str, Any]) -> dict[str, Any] | None:
            if src.get("delivered_at") is not None:
                return None
            src["delivered_at"] = ts
            return src

        for a, d in zip(advisory_ids, docs, strict=True):
            if d.get("found") and d["_source"].get("delivered_at") is None:
                self._cas_recipient(a, enterprise_id, deliver)

    def ack_advisory(self, advisory_id: str, enterprise_id: str, ts: float, note: str, actor: str) -> Recipient | None:
        def ack(src: dict[str, Any]) -> dict[str, Any] | None:
            if src.get("acked_at") is not None:
                return None  # the first acknowledgement counts; a repeat (a retry) changes nothing
            src.update(acked_at=ts, ack_note=note, acked_by=actor)
            if src.get("delivered_at") is None:
                src["delivered_at"] = ts
            return src

        return self._cas_recipient(advisory_id, enterprise_id, ack)

    # -- audit -----------------------------------------------------------------------------------------
    @staticmethod
    def _audit_key(e: AuditEntry) -> tuple[str, int]:
        """(document id, seq) of an entry, both derived from the entry itself, so a batch written again
        after an ambiguous failure (a timeout after the cluster took it) is not doubled. ``seq`` orders
        entries as SQLite's row number does: microseconds since the epoch x 1000, plus three digits of
        the entry's hash to keep entries of the same microsecond apart; the id breaks any tie left."""
        digest = hashlib.sha256(json.dumps(astuple(e), separators=(",", ":")).encode()).hexdigest()
        micros = int(e.ts * 1_000_000)
        return f"{micros:016d}-{digest[:16]}", micros * 1000 + int(digest[:8], 16) % 1000

    def write_audit(self, entries: Sequence[AuditEntry]) -> None:
        if not entries:
            return
        ops: list[dict[str, Any]] = []
        for e in entries:
            key, seq = self._audit_key(e)
            ops.append({"create": {"_index": self.idx["audit"], "_id": key}})
            ops.append(
                {
                    "key": key,
                    "seq": seq,
                    "ts": e.ts,
                    "actor": e.actor,
                    "role": e.role,
                    "enterprise_id": e.enterprise_id,
                    "method": e.method,
                    "path": e.path,
                    "action": e.action,
                    "resource": e.resource,
                    "status": e.status,
                    "result": e.result,
                    "detail": e.detail,
                    "client": e.client,
                    "request_id": e.request_id,
                    "@timestamp": _iso(e.ts),
                }
            )
        try:
            resp = self.es.bulk(operations=ops, filter_path="errors,items.*.status,items.*.error.type")
        finally:
            self._wrote("audit")
        if resp.get("errors"):
            # 409: written by an earlier attempt of the same batch, which is what a retry wants.
            statuses = [int(next(iter(it.values())).get("status", 0)) for it in resp["items"]]
            bad = sum(1 for st in statuses if st >= 300 and st != 409)
            if bad:
                raise StoreError(f"Elasticsearch refused {bad} audit entries")

    def search_audit(self, f: AuditFilter) -> Page:
        filters: list[dict[str, Any]] = []
        for field, value in (
            ("actor", f.actor),
            ("enterprise_id", f.enterprise_id),
            ("result", f.result),
            ("action", f.action),
        ):
            if value:
                filters.append({"term": {field: value}})
        filters += _time_range("ts", f.since, f.until)
        limit = max(1, min(f.limit, MAX_LIMIT))
        hits, nxt, total = self._search_page("audit", filters, [{"seq": "desc"}, {"key": "desc"}], limit, f.cursor)
        items = []
        for h in hits:
            src = dict(h["_source"])
            src.pop("key", None)
            src.pop("@timestamp", None)
            items.append(src)
        return Page(items, nxt, total)
