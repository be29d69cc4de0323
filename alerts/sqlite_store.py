"""The embedded alert store: SQLite in WAL mode, no server. The default output of ``icswatch replay``.

Tables (schema versioned, see MIGRATIONS): ``alerts`` (one row per alert, the ECS document in
``doc`` plus the columns queries filter on, the evidence events inside it), ``alert_techniques``
(alert x technique, for technique filters and counts), ``incidents`` (upserted as they grow),
``alert_events`` (the same flow's events just before and after each alert: its context).

Writes: one transaction per ``WriteBatch`` (``BEGIN IMMEDIATE`` ... ``COMMIT``). Inserts are
``INSERT OR IGNORE`` on deterministic ids, so replaying a capture again after a crash adds only what
is missing. Crash safety: WAL + a transaction per batch means a process killed at any instant
(kill -9) leaves exactly the batches committed before it: a prefix of the alerts, never a torn
row. ``synchronous=NORMAL`` (the default) is durable against a process crash; use FULL to also
survive a power cut.

Migrations: ``schema_version`` records each applied version; ``migrate`` applies the missing ones in
order, each in its own transaction, and refuses a database written by a newer icswatch.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from alerts.records import SEVERITY_SCORE, STATUSES, Observer, evidence_of
from alerts.sqlite_db import (
    Migration,
    apply_migrations,
    close_checkpointed,
    connect,
    immediate,
    keyset_page,
    like_contains,
    stored_version,
)
from alerts.store import (
    ALERT_SORTS,
    COUNT_BY,
    INCIDENT_SORTS,
    AlertQuery,
    CountBucket,
    IncidentQuery,
    Page,
    WriteBatch,
)

MAX_LIMIT = 1000
VERSION_TABLE = "schema_version"


class StoreError(Exception):
    """The store cannot be used as asked (newer schema, bad query); the message says why."""


# --- schema ---------------------------------------------------------------------------------------


def _m1_tables(c: sqlite3.Connection) -> None:
    c.execute(
        """CREATE TABLE alerts (
            id TEXT PRIMARY KEY,
            ts REAL NOT NULL,
            first_ts REAL NOT NULL,
            rule_id TEXT NOT NULL,
            rule_name TEXT NOT NULL,
            severity INTEGER NOT NULL,
            severity_name TEXT NOT NULL,
            detector TEXT NOT NULL,
            protocol TEXT NOT NULL,
            transport TEXT NOT NULL,
            src TEXT NOT NULL,
            sport INTEGER NOT NULL,
            dst TEXT NOT NULL,
            dport INTEGER NOT NULL,
            asset TEXT NOT NULL,
            incident_id TEXT,
            status TEXT NOT NULL DEFAULT 'open',
            techniques TEXT NOT NULL,
            search TEXT NOT NULL,
            doc TEXT NOT NULL
        )"""
    )
    c.execute(
        """CREATE TABLE alert_techniques (
            technique TEXT NOT NULL,
            alert_id TEXT NOT NULL REFERENCES alerts(id) ON DELETE CASCADE,
            PRIMARY KEY (technique, alert_id)
        ) WITHOUT ROWID"""
    )
    c.execute(
        """CREATE TABLE incidents (
            id TEXT PRIMARY KEY,
            asset TEXT NOT NULL,
            first_ts REAL NOT NULL,
            last_ts REAL NOT NULL,
            level INTEGER NOT NULL,
            level_name TEXT NOT NULL,
            severity INTEGER NOT NULL,
            severity_name TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'open',
            alert_count INTEGER NOT NULL,
            techniques TEXT NOT NULL,
            search TEXT NOT NULL,
            doc TEXT NOT NULL
        )"""
    )
    c.execute(
        """CREATE TABLE alert_events (
            alert_id TEXT NOT NULL REFERENCES alerts(id) ON DELETE CASCADE,
            role TEXT NOT NULL,
            seq INTEGER NOT NULL,
            event_id INTEGER NOT NULL,
            ts REAL NOT NULL,
            flow_id INTEGER NOT NULL,
            doc TEXT NOT NULL,
            PRIMARY KEY (alert_id, role, seq)
        ) WITHOUT ROWID"""
    )


def _m2_indexes(c: sqlite3.Connection) -> None:
    # Every API query is "some filter, newest first": each index ends with ts.
    for sql in (
        "CREATE INDEX alerts_ts ON alerts(ts)",
        "CREATE INDEX alerts_severity_ts ON alerts(severity, ts)",
        "CREATE INDEX alerts_rule_ts ON alerts(rule_id, ts)",
        "CREATE INDEX alerts_asset_ts ON alerts(asset, ts)",
        "CREATE INDEX alerts_status_ts ON alerts(status, ts)",
        "CREATE INDEX alerts_protocol_ts ON alerts(protocol, ts)",
        "CREATE INDEX alerts_src_ts ON alerts(src, ts)",
        "CREATE INDEX alerts_dst_ts ON alerts(dst, ts)",
        "CREATE INDEX alerts_incident ON alerts(incident_id)",
        "CREATE INDEX alert_techniques_alert ON alert_techniques(alert_id)",
        "CREATE INDEX incidents_last_ts ON incidents(last_ts)",
        "CREATE INDEX incidents_level_last_ts ON incidents(level, last_ts)",
        "CREATE INDEX incidents_asset_last_ts ON incidents(asset, last_ts)",
        "CREATE INDEX incidents_status_last_ts ON incidents(status, last_ts)",
    ):
        c.execute(sql)


def _m3_status_times(c: sqlite3.Connection) -> None:
    # When an analyst last changed a status (wall-clock epoch seconds); NULL until then.
    c.execute("ALTER TABLE alerts ADD COLUMN updated_at REAL")
    c.execute("ALTER TABLE incidents ADD COLUMN updated_at REAL")


# Ordered, append-only: never edit a released migration, add the next one.
MIGRATIONS: list[Migration] = [
    (1, "alerts, techniques, incidents, alert events", _m1_tables),
    (2, "query indexes (time range, severity, rule, asset, status, protocol, address, incident)", _m2_indexes),
    (3, "status change times", _m3_status_times),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]


def schema_version(c: sqlite3.Connection) -> int:
    return stored_version(c, VERSION_TABLE)


def _newer(version: int) -> StoreError:
    return StoreError(
        f"the database schema is version {version}, newer than this icswatch knows ({SCHEMA_VERSION}): upgrade icswatch"
    )


def migrate(c: sqlite3.Connection, target: int | None = None) -> list[int]:
    """Bring the schema to ``target`` (default: the latest); return the versions applied."""
    return apply_migrations(c, MIGRATIONS, VERSION_TABLE, _newer, target=target)


# --- the store --------------------------------------------------------------------------------------

_ALERT_SQL = (
    "INSERT OR IGNORE INTO alerts (id, ts, first_ts, rule_id, rule_name, severity, severity_name, detector, protocol, "
    "transport, src, sport, dst, dport, asset, incident_id, status, techniques, search, doc) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_TECH_SQL = "INSERT OR IGNORE INTO alert_techniques (technique, alert_id) VALUES (?, ?)"
_EVENT_SQL = (
    "INSERT OR IGNORE INTO alert_events (alert_id, role, seq, event_id, ts, flow_id, doc) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
# Incidents grow: a row is replaced only by a state holding at least as many alerts (so a replay
# restarted after a crash does not roll an incident back while it catches up). Status is the analyst's.
_INCIDENT_SQL = (
    "INSERT INTO incidents (id, asset, first_ts, last_ts, level, level_name, severity, severity_name, status, "
    "alert_count, techniques, search, doc) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'open', ?, ?, ?, ?) "
    "ON CONFLICT(id) DO UPDATE SET first_ts = excluded.first_ts, last_ts = excluded.last_ts, level = excluded.level, "
    "level_name = excluded.level_name, severity = excluded.severity, severity_name = excluded.severity_name, "
    "alert_count = excluded.alert_count, techniques = excluded.techniques, search = excluded.search, doc = excluded.doc "
    "WHERE excluded.alert_count >= incidents.alert_count"
)


# json.dumps with arguments builds a new encoder on every call: one encoder, built once, writes the same text
_dumps: Callable[[Any], str] = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _encode_cursor(sort: str, values: Sequence[Any]) -> str:
    return base64.urlsafe_b64encode(_dumps([sort, list(values)]).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str, sort: str, n: int) -> list[Any]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        got_sort, values = json.loads(raw)
    except (ValueError, TypeError) as exc:
        raise StoreError(f"bad cursor: {exc}") from None
    if got_sort != sort or not isinstance(values, list) or len(values) != n:
        raise StoreError("the cursor belongs to a query with another sort order")
    return values


def _in(column: str, values: Sequence[Any], where: list[str], params: list[Any]) -> None:
    if values:
        where.append(f"{column} IN ({', '.join('?' for _ in values)})")
        params.extend(values)


def _window(start_column: str, start: float | None, end_column: str, end: float | None, where: list[str],
            params: list[Any]) -> None:
    """``start_column >= start`` and ``end_column < end``, for the bounds given (an incident spans a
    time range: it overlaps the window when it ends after the start and begins before the end)."""
    if start is not None:
        where.append(f"{start_column} >= ?")
        params.append(start)
    if end is not None:
        where.append(f"{end_column} < ?")
        params.append(end)


class SQLiteStore:
    """SQLite implementation of ``AlertStore`` (alerts/store.py). Safe to share between threads."""

    name = "sqlite"

    def __init__(self, path: str | Path, observer: Observer | None = None, synchronous: str = "NORMAL") -> None:
        self.path = str(path)
        self.observer = observer or Observer()
        self._lock = threading.RLock()
        self.conn = connect(self.path)
        mode = self.conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL"):
            raise StoreError(f"synchronous must be OFF, NORMAL or FULL, not {synchronous!r}")
        self.conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
        self.conn.execute("PRAGMA foreign_keys=ON")
        self.journal_mode = mode
        self.migrated = migrate(self.conn)
        self.batches = 0
        self.alerts_written = 0

    # -- writing -------------------------------------------------------------------------------
    def write(self, batch: WriteBatch) -> None:
        alert_rows = []
        tech_rows = []
        for a in batch.alerts:
            doc = batch.doc(a)
            search = " ".join(
                (a.rule_id, a.rule_name, a.description, a.src, a.dst, a.asset, a.protocol, *a.techniques, *a.technique_names)
            ).lower()
            alert_rows.append(
                (
                    a.id,
                    a.ts,
                    a.first_ts or a.ts,
                    a.rule_id,
                    a.rule_name,
                    a.severity_score,
                    a.severity,
                    a.detector,
                    a.protocol,
                    a.transport,
                    a.src,
                    a.sport,
                    a.dst,
                    a.dport,
                    a.asset,
                    a.incident_id,
                    a.status,
                    ",".join(a.techniques),
                    search,
                    _dumps(doc),
                )
            )
            tech_rows.extend((t, a.id) for t in a.techniques)
        incident_rows = []
        for inc in batch.incidents:
            doc = inc.to_ecs(batch.observer)
            incident_rows.append(
                (
                    inc.id,
                    inc.asset,
                    inc.first_ts,
                    inc.last_ts,
                    inc.level,
                    inc.level_name,
                    inc.severity_score,
                    inc.severity,
                    inc.alert_count,
                    ",".join(inc.techniques),
                    " ".join((inc.asset, *inc.rule_ids, *inc.techniques, *inc.sources, inc.level_name)).lower(),
                    _dumps(doc),
                )
            )
        # Evidence events are in the alert's document already (ics.evidence); only the context is stored apart.
        event_rows = [
            (alert_id, role, seq, ev.id, ev.ts, ev.flow_id, _dumps(evidence_of(ev)))
            for alert_id, role, seq, ev in batch.events
            if role != "evidence"
        ]
        with self._lock:
            with immediate(self.conn) as c:
                if alert_rows:
                    c.executemany(_ALERT_SQL, alert_rows)
                    c.executemany(_TECH_SQL, tech_rows)
                if incident_rows:
                    c.executemany(_INCIDENT_SQL, incident_rows)
                if event_rows:
                    # Events of alerts that are not stored (none today) would break the foreign key.
                    c.executemany(_EVENT_SQL, event_rows)
            self.batches += 1
            self.alerts_written += len(alert_rows)

    def close(self) -> None:
        with self._lock:
            close_checkpointed(self.conn)

    # -- alerts ----------------------------------------------------------------------------------
    @staticmethod
    def _alert_doc(row: sqlite3.Row) -> dict[str, Any]:
        doc = json.loads(row["doc"])
        ic = doc.setdefault("icswatch", {})
        ic["status"] = row["status"]
        ic["incident_id"] = row["incident_id"]
        return doc

    def get_alert(self, alert_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self.conn.execute("SELECT doc, status, incident_id FROM alerts WHERE id = ?", (alert_id,)).fetchone()
        return self._alert_doc(row) if row else None

    def _alert_where(self, q: AlertQuery) -> tuple[list[str], list[Any]]:
        where: list[str] = []
        params: list[Any] = []
        _window("ts", q.start, "ts", q.end, where, params)
        for s in q.severities:
            if s not in SEVERITY_SCORE:
                raise StoreError(f"unknown severity {s!r} (low, medium, high, critical)")
        _in("severity_name", list(q.severities), where, params)
        if q.min_severity is not None:
            if q.min_severity not in SEVERITY_SCORE:
                raise StoreError(f"unknown severity {q.min_severity!r} (low, medium, high, critical)")
            where.append("severity >= ?")
            params.append(SEVERITY_SCORE[q.min_severity])
        _in("rule_id", list(q.rule_ids), where, params)
        _in("asset", list(q.assets), where, params)
        _in("protocol", list(q.protocols), where, params)
        _in("status", list(q.statuses), where, params)
        if q.ips:
            marks = ", ".join("?" for _ in q.ips)
            where.append(f"(src IN ({marks}) OR dst IN ({marks}))")
            params.extend(q.ips)
            params.extend(q.ips)
        if q.techniques:
            marks = ", ".join("?" for _ in q.techniques)
            where.append(f"id IN (SELECT alert_id FROM alert_techniques WHERE technique IN ({marks}))")
            params.extend(q.techniques)
        if q.incident_id is not None:
            where.append("incident_id = ?")
            params.append(q.incident_id)
        if q.text:
            where.append("search LIKE ? ESCAPE '\\'")
            params.append(like_contains(q.text))
        return where, params

    def search_alerts(self, query: AlertQuery) -> Page:
        if query.sort not in ALERT_SORTS:
            raise StoreError(f"unknown sort {query.sort!r} (one of {', '.join(ALERT_SORTS)})")
        limit = max(1, min(int(query.limit), MAX_LIMIT))
        where, params = self._alert_where(query)
        keys = ["severity", "ts", "id"] if query.sort.endswith("severity") else ["ts", "id"]
        after = _decode_cursor(query.cursor, query.sort, len(keys)) if query.cursor else None
        with self._lock:
            rows, more, total = keyset_page(
                self.conn, "id, ts, severity, doc, status, incident_id", "alerts", where, params, keys,
                query.sort.startswith("-"), limit, after,
            )
        nxt = _encode_cursor(query.sort, [rows[-1][k] for k in keys]) if more and rows else None
        return Page([self._alert_doc(r) for r in rows], nxt, total)

    def count_alerts(self, query: AlertQuery) -> int:
        where, params = self._alert_where(query)
        sql = "SELECT COUNT(*) FROM alerts" + (" WHERE " + " AND ".join(where) if where else "")
        with self._lock:
            return int(self.conn.execute(sql, params).fetchone()[0])

    def alert_counts(self, by: str, query: AlertQuery | None = None, interval: float | None = None) -> list[CountBucket]:
        if by not in COUNT_BY:
            raise StoreError(f"cannot count by {by!r} (one of {', '.join(COUNT_BY)})")
        q = query or AlertQuery()
        where, params = self._alert_where(q)
        column = {"severity": "severity_name", "rule": "rule_id", "technique": "t.technique"}.get(by, by)
        source = "alerts"
        if by == "technique":
            source = "alerts JOIN alert_techniques t ON t.alert_id = alerts.id"
            where = [w.replace("id IN (", "alerts.id IN (", 1) if w.startswith("id IN") else w for w in where]
        bucket = "NULL"
        if interval:
            if interval <= 0:
                raise StoreError("interval must be positive")
            bucket = "CAST(ts / ? AS INTEGER) * ?"
            params = [interval, interval, *params]
        sql = (
            f"SELECT {column} AS key, {bucket} AS bucket, COUNT(*) AS n FROM {source}"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " GROUP BY key, bucket ORDER BY bucket, n DESC, key"
        )
        with self._lock:
            rows = self.conn.execute(sql, params).fetchall()
        return [CountBucket(str(r["key"]), int(r["n"]), r["bucket"]) for r in rows]

    def alert_events(self, alert_id: str) -> list[dict[str, Any]]:
        """The flow's events before the alert, its evidence (from the document), then the events after."""
        with self._lock:
            row = self.conn.execute("SELECT doc FROM alerts WHERE id = ?", (alert_id,)).fetchone()
            rows = self.conn.execute(
                "SELECT role, doc FROM alert_events WHERE alert_id = ? ORDER BY role = 'after', seq", (alert_id,)
            ).fetchall()
        if row is None:
            return []
        context = {"before": [], "after": []}
        for r in rows:
            d = json.loads(r["doc"])
            d["role"] = r["role"]
            context.setdefault(r["role"], []).append(d)
        evidence = [dict(d, role="evidence") for d in json.loads(row["doc"]).get("ics", {}).get("evidence", [])]
        return context["before"] + evidence + context["after"]

    def set_alert_status(self, alert_id: str, status: str) -> bool:
        return self._set_status("alerts", alert_id, status)

    def _set_status(self, table: str, row_id: str, status: str) -> bool:
        """An analyst's status for one row of ``table`` (alerts or incidents), with the time of the change."""
        if status not in STATUSES:
            raise StoreError(f"unknown status {status!r} (one of {', '.join(STATUSES)})")
        with self._lock:
            cur = self.conn.execute(
                f"UPDATE {table} SET status = ?, updated_at = strftime('%s', 'now') WHERE id = ?", (status, row_id)
            )
            return cur.rowcount > 0

    # -- incidents -------------------------------------------------------------------------------
    @staticmethod
    def _incident_doc(row: sqlite3.Row) -> dict[str, Any]:
        doc = json.loads(row["doc"])
        doc.setdefault("icswatch", {}).setdefault("incident", {})["status"] = row["status"]
        return doc

    def get_incident(self, incident_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self.conn.execute("SELECT doc, status FROM incidents WHERE id = ?", (incident_id,)).fetchone()
        return self._incident_doc(row) if row else None

    def search_incidents(self, query: IncidentQuery) -> Page:
        if query.sort not in INCIDENT_SORTS:
            raise StoreError(f"unknown sort {query.sort!r} (one of {', '.join(INCIDENT_SORTS)})")
        where: list[str] = []
        params: list[Any] = []
        _window("last_ts", query.start, "first_ts", query.end, where, params)
        _in("level", list(query.levels), where, params)
        if query.min_severity is not None:
            if query.min_severity not in SEVERITY_SCORE:
                raise StoreError(f"unknown severity {query.min_severity!r}")
            where.append("severity >= ?")
            params.append(SEVERITY_SCORE[query.min_severity])
        _in("asset", list(query.assets), where, params)
        _in("status", list(query.statuses), where, params)
        for t in query.techniques:
            where.append("(',' || techniques || ',') LIKE ?")
            params.append(f"%,{t},%")
        if query.text:
            where.append("search LIKE ? ESCAPE '\\'")
            params.append(like_contains(query.text))
        field = query.sort.lstrip("-")
        keys = ["severity", "last_ts", "id"] if field == "severity" else [field, "id"]
        after = _decode_cursor(query.cursor, query.sort, len(keys)) if query.cursor else None
        limit = max(1, min(int(query.limit), MAX_LIMIT))
        with self._lock:
            rows, more, total = keyset_page(
                self.conn, f"id, {', '.join(k for k in keys if k != 'id')}, doc, status", "incidents", where, params,
                keys, query.sort.startswith("-"), limit, after,
            )
        nxt = _encode_cursor(query.sort, [rows[-1][k] for k in keys]) if more and rows else None
        return Page([self._incident_doc(r) for r in rows], nxt, total)

    def set_incident_status(self, incident_id: str, status: str) -> bool:
        return self._set_status("incidents", incident_id, status)

    # -- maintenance -----------------------------------------------------------------------------
    def integrity_check(self) -> str:
        with self._lock:
            return str(self.conn.execute("PRAGMA integrity_check").fetchone()[0])
