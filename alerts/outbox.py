"""The enterprise side of the linkage: which incidents are reported, and the durable outbox they wait in.

``OutboxWriter`` is an alert output (``write(batch)`` / ``close()``, alerts/store.py): the alerting
runtime hands it every batch, and for each new or changed incident it decides whether the incident is
to be reported (its national level is at or above ``linkage.report_min_level``, or an analyst marked
it), builds the report (alerts/forwarder.py), applies the redaction policy, and queues the exact bytes
that will leave the plant. The first report of an incident is a ``POST /api/v1/incidents``; later
growth (level raised, more alerts, new techniques) becomes a ``PATCH`` carrying a full snapshot of the
fields that changed state, with an ``update_id`` the platform uses to apply each update once.

``Outbox`` is a SQLite file (WAL; schema versioned like the alert store) that survives crashes and
restarts. An entry leaves the queue only when the platform answered 2xx (``sent``) or refused its
content for good (``failed``: shown by ``icswatch linkage status``, re-queued by ``linkage send
--retry-failed``). Entries of one incident are delivered in order: an update never overtakes the
report it updates.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

from alerts.forwarder import (
    MAX_SAMPLES,
    REPORT_SCHEMA_VERSION,
    UPDATABLE_FIELDS,
    RedactionPolicy,
    Redactor,
    alert_sample,
    build_report,
    report_changes,
)
from alerts.sqlite_db import Migration, apply_migrations, connect, immediate
from alerts.store import WriteBatch

STATES = ("pending", "sent", "failed")
LEASE_SECONDS = 60.0  # a claimed entry is not handed to another worker for this long
MAX_RULES = 64  # per-rule alert counts kept per incident
VERSION_TABLE = "outbox_schema_version"


class OutboxError(Exception):
    """The outbox cannot be used as asked; the message says why."""


def _m1_tables(c: sqlite3.Connection) -> None:
    c.execute(
        """CREATE TABLE entries (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            kind TEXT NOT NULL,                -- report | update | ack
            incident_id TEXT NOT NULL,         -- '' for acknowledgements
            ref TEXT NOT NULL,                 -- update id / advisory id / incident id
            method TEXT NOT NULL,
            path TEXT NOT NULL,
            body BLOB NOT NULL,                -- the exact bytes signed and sent
            state TEXT NOT NULL DEFAULT 'pending',
            attempts INTEGER NOT NULL DEFAULT 0,
            next_at REAL NOT NULL,
            leased_until REAL,
            created_at REAL NOT NULL,
            sent_at REAL,
            last_status INTEGER,
            last_error TEXT,
            duplicate INTEGER NOT NULL DEFAULT 0
        )"""
    )
    c.execute("CREATE INDEX entries_due ON entries(state, next_at)")
    c.execute("CREATE INDEX entries_incident ON entries(incident_id, seq)")
    c.execute(
        """CREATE TABLE incidents (
            incident_id TEXT PRIMARY KEY,
            discovered_at REAL NOT NULL,
            level INTEGER NOT NULL,
            marked TEXT,                        -- NULL, 'auto' or 'analyst'
            reported INTEGER NOT NULL DEFAULT 0,
            revision INTEGER NOT NULL DEFAULT 0,
            last_report TEXT,
            samples TEXT NOT NULL DEFAULT '[]',
            rule_counts TEXT NOT NULL DEFAULT '{}',
            updated_at REAL NOT NULL
        )"""
    )
    c.execute(
        """CREATE TABLE advisories (
            id TEXT PRIMARY KEY,
            doc TEXT NOT NULL,
            fetched_at REAL NOT NULL,
            acked_at REAL,
            ack_note TEXT
        )"""
    )
    c.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL)")


MIGRATIONS: list[Migration] = [
    (1, "outbox entries, reported incidents, advisories, meta", _m1_tables),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]


def _newer(version: int) -> OutboxError:
    return OutboxError(f"the outbox schema is version {version}, newer than this icswatch knows ({SCHEMA_VERSION})")


def migrate(c: sqlite3.Connection) -> list[int]:
    return apply_migrations(c, MIGRATIONS, VERSION_TABLE, _newer)


@dataclass
class Entry:
    seq: int
    kind: str
    incident_id: str
    ref: str
    method: str
    path: str
    body: bytes
    attempts: int


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


class Outbox:
    """The durable queue (SQLite, WAL). Thread-safe; several processes may share the file."""

    def __init__(self, path: str | Path, synchronous: str = "NORMAL") -> None:
        self.path = str(path)
        self._lock = threading.RLock()
        self._work = threading.Event()
        self.conn = connect(self.path)
        self.conn.execute("PRAGMA journal_mode=WAL")
        if synchronous.upper() not in ("NORMAL", "FULL"):
            raise OutboxError("synchronous must be NORMAL or FULL")
        self.conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
        migrate(self.conn)

    def close(self) -> None:
        with self._lock:
            self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock, immediate(self.conn) as c:
            yield c

    # -- wake-ups (within one process; other processes poll) ----------------------------------------
    def notify(self) -> None:
        self._work.set()

    def wait_for_work(self, timeout: float) -> None:
        self._work.wait(timeout)
        self._work.clear()

    # -- meta --------------------------------------------------------------------------------------
    def salt(self) -> bytes:
        """The redaction salt: made once, kept in this file, never sent."""
        with self.transaction() as c:
            row = c.execute("SELECT value FROM meta WHERE key = 'redaction_salt'").fetchone()
            if row is not None:
                return bytes(row[0])
            salt = secrets.token_bytes(32)
            c.execute("INSERT INTO meta VALUES ('redaction_salt', ?)", (salt,))
            return salt

    # -- queueing ----------------------------------------------------------------------------------
    def enqueue(
        self,
        c: sqlite3.Connection,
        kind: str,
        incident_id: str,
        ref: str,
        method: str,
        path: str,
        body: bytes,
        now: float,
    ) -> int:
        """Inside a ``transaction()``: add one entry."""
        cur = c.execute(
            "INSERT INTO entries (kind, incident_id, ref, method, path, body, next_at, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (kind, incident_id, ref, method, path, body, now, now),
        )
        return int(cur.lastrowid or 0)

    def unsent_update(self, c: sqlite3.Connection, incident_id: str) -> sqlite3.Row | None:
        """The incident's last update if it was never tried: it can still absorb a newer state."""
        return c.execute(
            "SELECT seq, ref FROM entries WHERE incident_id = ? AND kind = 'update' AND state = 'pending' "
            "AND attempts = 0 AND leased_until IS NULL ORDER BY seq DESC LIMIT 1",
            (incident_id,),
        ).fetchone()

    # -- delivery ----------------------------------------------------------------------------------
    def claim(self, limit: int, now: float | None = None) -> list[Entry]:
        """Due entries, oldest first, skipping any whose incident has an earlier entry not yet sent;
        leased for LEASE_SECONDS so a second worker does not send them at the same time."""
        now = time.time() if now is None else now
        with self.transaction() as c:
            rows = c.execute(
                "SELECT seq, kind, incident_id, ref, method, path, body, attempts FROM entries AS e "
                "WHERE state = 'pending' AND next_at <= ? AND (leased_until IS NULL OR leased_until < ?) "
                "AND NOT (incident_id != '' AND EXISTS (SELECT 1 FROM entries AS p WHERE p.incident_id = e.incident_id "
                "AND p.seq < e.seq AND p.state != 'sent')) ORDER BY seq LIMIT ?",
                (now, now, limit),
            ).fetchall()
            c.executemany(
                "UPDATE entries SET leased_until = ? WHERE seq = ?", [(now + LEASE_SECONDS, r["seq"]) for r in rows]
            )
        return [
            Entry(
                r["seq"], r["kind"], r["incident_id"], r["ref"], r["method"], r["path"], bytes(r["body"]), r["attempts"]
            )
            for r in rows
        ]

    def release_claims(self) -> None:
        with self._lock:
            self.conn.execute(
                "UPDATE entries SET leased_until = NULL WHERE state = 'pending' AND leased_until IS NOT NULL"
            )

    def mark_sent(self, seq: int, status: int, duplicate: bool, now: float | None = None) -> None:
        with self._lock:
            self.conn.execute(
                "UPDATE entries SET state = 'sent', attempts = attempts + 1, sent_at = ?, last_status = ?, "
                "duplicate = ?, leased_until = NULL, last_error = NULL WHERE seq = ?",
                (time.time() if now is None else now, status, int(duplicate), seq),
            )

    def mark_retry(self, seq: int, status: int, error: str, next_at: float) -> None:
        with self._lock:
            self.conn.execute(
                "UPDATE entries SET attempts = attempts + 1, next_at = ?, last_status = ?, last_error = ?, "
                "leased_until = NULL WHERE seq = ?",
                (next_at, status, error[:500], seq),
            )

    def mark_failed(self, seq: int, status: int, error: str) -> None:
        with self._lock:
            self.conn.execute(
                "UPDATE entries SET state = 'failed', attempts = attempts + 1, last_status = ?, last_error = ?, "
                "leased_until = NULL WHERE seq = ?",
                (status, error[:500], seq),
            )

    def retry_failed(self) -> int:
        """Put refused entries back in the queue (after the cause was fixed)."""
        with self._lock:
            cur = self.conn.execute(
                "UPDATE entries SET state = 'pending', next_at = ?, leased_until = NULL WHERE state = 'failed'",
                (time.time(),),
            )
        self.notify()
        return cur.rowcount

    def retry_now(self) -> int:
        """Make every pending entry due now (``linkage send`` after an outage was fixed)."""
        with self._lock:
            cur = self.conn.execute("UPDATE entries SET next_at = ? WHERE state = 'pending'", (time.time(),))
        self.notify()
        return cur.rowcount

    # -- views ------------------------------------------------------------------------------------
    def pending_count(self) -> int:
        with self._lock:
            return int(self.conn.execute("SELECT COUNT(*) FROM entries WHERE state = 'pending'").fetchone()[0])

    def next_due(self) -> float | None:
        with self._lock:
            v = self.conn.execute("SELECT MIN(next_at) FROM entries WHERE state = 'pending'").fetchone()[0]
        return float(v) if v is not None else None

    def status(self) -> dict[str, Any]:
        """Counts by state and kind, the oldest pending entry, the last error: ``linkage status``."""
        with self._lock:
            c = self.conn
            by_state = {s: 0 for s in STATES}
            for r in c.execute("SELECT state, COUNT(*) AS n FROM entries GROUP BY state"):
                by_state[r["state"]] = int(r["n"])
            by_kind = {
                f"{r['kind']}:{r['state']}": int(r["n"])
                for r in c.execute("SELECT kind, state, COUNT(*) AS n FROM entries GROUP BY kind, state")
            }
            oldest = c.execute("SELECT MIN(created_at) FROM entries WHERE state = 'pending'").fetchone()[0]
            last_err = c.execute(
                "SELECT seq, last_status, last_error FROM entries WHERE last_error IS NOT NULL "
                "ORDER BY seq DESC LIMIT 1"
            ).fetchone()
            reported = c.execute("SELECT COUNT(*) FROM incidents WHERE reported = 1").fetchone()[0]
            seen = c.execute("SELECT COUNT(*) FROM incidents").fetchone()[0]
            dups = c.execute("SELECT COUNT(*) FROM entries WHERE duplicate = 1").fetchone()[0]
            advisories = c.execute("SELECT COUNT(*), COUNT(acked_at) FROM advisories").fetchone()
        return {
            "entries": by_state,
            "by_kind": by_kind,
            "oldest_pending_age_s": round(time.time() - oldest, 1) if oldest else None,
            "last_error": dict(last_err) if last_err else None,
            "incidents_seen": int(seen),
            "incidents_reported": int(reported),
            "duplicates_acknowledged": int(dups),
            "advisories": {"known": int(advisories[0]), "acknowledged": int(advisories[1])},
        }

    def entries(self, state: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        sql = (
            "SELECT seq, kind, incident_id, ref, method, path, state, attempts, next_at, created_at, sent_at, "
            "last_status, last_error, duplicate, length(body) AS bytes FROM entries"
        )
        params: list[Any] = []
        if state:
            sql += " WHERE state = ?"
            params.append(state)
        sql += " ORDER BY seq DESC LIMIT ?"
        params.append(limit)
        with self._lock:
            return [dict(r) for r in self.conn.execute(sql, params)]

    def body(self, seq: int) -> bytes | None:
        with self._lock:
            row = self.conn.execute("SELECT body FROM entries WHERE seq = ?", (seq,)).fetchone()
        return bytes(row[0]) if row else None

    # -- advisories ---------------------------------------------------------------------------------
    def save_advisories(self, items: list[Mapping[str, Any]], now: float | None = None) -> int:
        now = time.time() if now is None else now
        with self.transaction() as c:
            for it in items:
                c.execute(
                    "INSERT INTO advisories (id, doc, fetched_at, acked_at) VALUES (?, ?, ?, NULL) "
                    "ON CONFLICT(id) DO UPDATE SET doc = excluded.doc, fetched_at = excluded.fetched_at",
                    (str(it.get("id")), _dumps(dict(it)), now),
                )
        return len(items)

    def advisories(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self.conn.execute(
                "SELECT doc, acked_at, ack_note FROM advisories ORDER BY fetched_at DESC, id"
            ).fetchall()
        out = []
        for r in rows:
            d = json.loads(r["doc"])
            d["local_acked_at"] = r["acked_at"]
            out.append(d)
        return out

    def acknowledge(self, advisory_id: str, note: str = "", now: float | None = None) -> int:
        """Queue the acknowledgement of an advisory (delivered like reports: durable, retried, once)."""
        now = time.time() if now is None else now
        body = _dumps({"note": note[:1000]}).encode()
        with self.transaction() as c:
            c.execute("UPDATE advisories SET acked_at = ?, ack_note = ? WHERE id = ?", (now, note[:1000], advisory_id))
            seq = self.enqueue(c, "ack", "", advisory_id, "POST", f"/api/v1/advisories/{advisory_id}/ack", body, now)
        self.notify()
        return seq


class OutboxWriter:
    """Alert output that queues incident reports and updates (see the module docstring)."""

    name = "linkage"

    def __init__(
        self,
        outbox: Outbox,
        redactor: Redactor,
        *,
        enterprise_id: str,
        site: str = "",
        sensor: str = "",
        min_level: int = 3,
        auto: bool = True,
        asset_lookup: Callable[[str], Mapping[str, Any] | None] | None = None,
        clock: Callable[[], float] = time.time,
        owns_outbox: bool = True,
    ) -> None:
        self.outbox = outbox
        self.path = outbox.path
        self.redactor = redactor
        self.enterprise_id = enterprise_id
        self.site = site
        self.sensor = sensor
        self.min_level = min_level
        self.auto = auto
        self.asset_lookup = asset_lookup
        self.clock = clock
        self.owns_outbox = owns_outbox
        self.queued = 0

    @classmethod
    def from_config(cls, config: Any, outbox: Outbox | None = None, **kw: Any) -> "OutboxWriter":
        lk = config.linkage
        owns = outbox is None
        box = outbox or Outbox(lk.outbox)
        return cls(
            box,
            Redactor(RedactionPolicy.from_config(lk), box.salt()),
            enterprise_id=config.sensor.enterprise_id,
            site=config.sensor.site,
            sensor=config.sensor.name,
            min_level=lk.report_min_level,
            auto=lk.auto_report,
            owns_outbox=owns,
            **kw,
        )

    # -- AlertOutput ------------------------------------------------------------------------------
    def write(self, batch: WriteBatch) -> None:
        if not batch.incidents:
            return
        now = self.clock()
        by_incident: dict[str, list[dict[str, Any]]] = {}
        for a in batch.alerts:
            if a.incident_id:
                by_incident.setdefault(a.incident_id, []).append(batch.doc(a))
        queued = 0
        with self.outbox.transaction() as c:
            for inc in batch.incidents:
                state = self._state(c, inc.id, now)
                self._fold(state, by_incident.get(inc.id, ()))
                state["level"] = inc.level
                if state["marked"] is None and self.auto and inc.level <= self.min_level:
                    state["marked"] = "auto"
                if state["marked"]:
                    queued += self._queue(c, state, inc.to_ecs(batch.observer), now)
                self._save(c, state, now)
        self.queued += queued
        if queued:
            self.outbox.notify()

    def close(self) -> None:
        if self.owns_outbox:
            self.outbox.close()

    # -- an analyst's decision -----------------------------------------------------------------------
    def mark(
        self, incident_doc: Mapping[str, Any], alert_docs: Iterable[Mapping[str, Any]] = (), by: str = "analyst"
    ) -> int:
        """Report this incident whatever its level (``icswatch linkage mark``, the enterprise API).
        Returns the number of entries queued (0: it was already reported in this state)."""
        now = self.clock()
        inc = (incident_doc.get("icswatch") or {}).get("incident") or {}
        incident_id = str(inc.get("id") or (incident_doc.get("event") or {}).get("id") or "")
        if not incident_id:
            raise ValueError("not an incident document: no icswatch.incident.id")
        with self.outbox.transaction() as c:
            state = self._state(c, incident_id, now, discovered=_epoch(incident_doc))
            self._fold(state, alert_docs)
            state["level"] = int(inc.get("level", 4))
            state["marked"] = state["marked"] or by
            n = self._queue(c, state, incident_doc, now)
            self._save(c, state, now)
        self.queued += n
        if n:
            self.outbox.notify()
        return n

    # -- internals --------------------------------------------------------------------------------
    def _state(
        self, c: sqlite3.Connection, incident_id: str, now: float, discovered: float | None = None
    ) -> dict[str, Any]:
        row = c.execute("SELECT * FROM incidents WHERE incident_id = ?", (incident_id,)).fetchone()
        if row is None:
            # Discovery is when this plant first knew of the incident: the first time the sensor
            # wrote it (or, for an incident marked later by hand, its first alert if that is older).
            first = now if discovered is None else min(now, discovered)
            return {
                "incident_id": incident_id,
                "discovered_at": first,
                "level": 4,
                "marked": None,
                "reported": 0,
                "revision": 0,
                "last_report": None,
                "samples": [],
                "rule_counts": {},
                "new": True,
            }
        state = dict(row)
        state["samples"] = json.loads(state["samples"])
        state["rule_counts"] = json.loads(state["rule_counts"])
        state["last_report"] = json.loads(state["last_report"]) if state["last_report"] else None
        state["new"] = False
        return state

    @staticmethod
    def _fold(state: dict[str, Any], alert_docs: Any) -> None:
        samples: list[dict[str, Any]] = state["samples"]
        counts: dict[str, int] = state["rule_counts"]
        known = {(s.get("rule_id"), s.get("at"), s.get("src"), s.get("dst")) for s in samples}
        for doc in alert_docs:
            s = alert_sample(doc)
            rid = s["rule_id"]
            if rid in counts or len(counts) < MAX_RULES:
                counts[rid] = counts.get(rid, 0) + 1
            key = (rid, s.get("at"), s.get("src"), s.get("dst"))
            if key in known:
                continue
            # Keep the first samples (how it started) and let the last one slide (how it stands).
            if len(samples) >= MAX_SAMPLES:
                samples[-1] = s
            else:
                samples.append(s)
            known.add(key)

    def _queue(self, c: sqlite3.Connection, state: dict[str, Any], incident_doc: Mapping[str, Any], now: float) -> int:
        raw = build_report(
            incident_doc,
            state["samples"],
            state["rule_counts"],
            enterprise_id=self.enterprise_id,
            site=self.site,
            sensor=self.sensor,
            discovered_at=state["discovered_at"],
            asset_lookup=self.asset_lookup,
        )
        report = self.redactor.apply(raw)
        incident_id = state["incident_id"]
        if not state["reported"]:
            body = _dumps(report).encode()
            self.outbox.enqueue(c, "report", incident_id, incident_id, "POST", "/api/v1/incidents", body, now)
            state["reported"] = 1
            state["last_report"] = report
            return 1
        changes = report_changes(state["last_report"] or {}, report)
        if not changes:
            return 0
        # A snapshot of every updatable field, not a diff: a later update can then replace an
        # earlier one that was never tried, and a retried update sets the same values again.
        snapshot = {k: report[k] for k in UPDATABLE_FIELDS if k in report}
        state["last_report"] = report
        unsent = self.outbox.unsent_update(c, incident_id)
        if unsent is not None:
            body = _dumps({"schema_version": REPORT_SCHEMA_VERSION, "update_id": unsent["ref"], **snapshot}).encode()
            c.execute("UPDATE entries SET body = ? WHERE seq = ?", (body, unsent["seq"]))
            return 0
        state["revision"] += 1
        update_id = f"{incident_id}-r{state['revision']}"
        body = _dumps({"schema_version": REPORT_SCHEMA_VERSION, "update_id": update_id, **snapshot}).encode()
        self.outbox.enqueue(c, "update", incident_id, update_id, "PATCH", f"/api/v1/incidents/{incident_id}", body, now)
        return 1

    @staticmethod
    def _save(c: sqlite3.Connection, state: dict[str, Any], now: float) -> None:
        c.execute(
            "INSERT INTO incidents (incident_id, discovered_at, level, marked, reported, revision, last_report, "
            "samples, "
            "rule_counts, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(incident_id) DO UPDATE SET "
            "level = excluded.level, marked = excluded.marked, reported = excluded.reported, "
            "revision = excluded.revision, "
            "last_report = excluded.last_report, samples = excluded.samples, rule_counts = excluded.rule_counts, "
            "updated_at = excluded.updated_at",
            (
                state["incident_id"],
                state["discovered_at"],
                state["level"],
                state["marked"],
                state["reported"],
                state["revision"],
                _dumps(state["last_report"]) if state["last_report"] is not None else None,
                _dumps(state["samples"]),
                _dumps(state["rule_counts"]),
                now,
            ),
        )


def _epoch(incident_doc: Mapping[str, Any]) -> float | None:
    """The incident's first alert time (ECS ``event.start``) as epoch seconds, if readable."""
    from datetime import datetime

    start = (incident_doc.get("event") or {}).get("start")
    if not start:
        return None
    try:
        return datetime.fromisoformat(str(start).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
