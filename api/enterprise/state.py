"""The enterprise API's own state, in one SQLite file (``api.state_db``) next to the alert store.

What the alert store (alerts/store.py) does not hold and the SOC workflow needs:

- ``tokens``: API tokens, only their SHA-256 (the token itself is shown once, when issued);
- ``audit``: every write request (who, what, when, result), including the refused ones;
- ``activity``: the analyst's trail on an alert or an incident (status changes, assignment,
  comments, closing reasons, false-positive decisions, reporting marks): the timeline reads it;
- ``notes``: the current assignee and closing reason of an alert or an incident;
- ``rule_overrides`` and ``suppressions``: rule switches and standing suppressions made through the
  API (applied to the API's rule engine and to replay jobs; exported for the sensors);
- ``incident_marks``: incidents an analyst marked for reporting to the province;
- ``jobs``: pcap replay jobs (state, progress, results);
- ``meta``: counters shared by the worker processes (the rule set's generation).

Schema versioned like the alert store (``api_schema_version``, ordered append-only migrations; a
file written by a newer icswatch is refused). One connection per process, guarded by a lock; WAL so
the worker processes and the replay jobs read while another writes.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alerts.sqlite_db import Migration, apply_migrations, connect, immediate

VERSION_TABLE = "api_schema_version"
JOB_STATES = ("queued", "running", "done", "failed", "cancelled")
FINISHED = ("done", "failed", "cancelled")


class StateError(Exception):
    """The state file cannot be used (a newer schema); the message says why."""


def _m1_tables(c: sqlite3.Connection) -> None:
    c.execute(
        """CREATE TABLE tokens (
            id TEXT PRIMARY KEY,
            hash TEXT NOT NULL UNIQUE,
            name TEXT NOT NULL,
            role TEXT NOT NULL,
            created_at REAL NOT NULL,
            created_by TEXT NOT NULL,
            expires_at REAL,
            revoked_at REAL,
            last_used_at REAL
        )"""
    )
    c.execute(
        """CREATE TABLE audit (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            ts REAL NOT NULL,
            actor TEXT NOT NULL,
            role TEXT NOT NULL,
            method TEXT NOT NULL,
            path TEXT NOT NULL,
            action TEXT NOT NULL,
            status INTEGER NOT NULL,
            detail TEXT NOT NULL,
            client TEXT NOT NULL
        )"""
    )
    c.execute("CREATE INDEX audit_actor ON audit(actor, seq)")
    c.execute(
        """CREATE TABLE activity (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            ts REAL NOT NULL,
            dataset TEXT NOT NULL,
            kind TEXT NOT NULL,
            target TEXT NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            detail TEXT NOT NULL
        )"""
    )
    c.execute("CREATE INDEX activity_target ON activity(dataset, kind, target, seq)")
    c.execute(
        """CREATE TABLE notes (
            dataset TEXT NOT NULL,
            kind TEXT NOT NULL,
            target TEXT NOT NULL,
            assignee TEXT,
            reason TEXT,
            comments INTEGER NOT NULL DEFAULT 0,
            updated_at REAL NOT NULL,
            PRIMARY KEY (dataset, kind, target)
        ) WITHOUT ROWID"""
    )
    c.execute(
        """CREATE TABLE rule_overrides (
            rule_id TEXT PRIMARY KEY,
            enabled INTEGER NOT NULL,
            at REAL NOT NULL,
            by TEXT NOT NULL
        )"""
    )
    c.execute(
        """CREATE TABLE suppressions (
            id TEXT PRIMARY KEY,
            rule TEXT NOT NULL,
            src TEXT,
            dst TEXT,
            until REAL,
            reason TEXT NOT NULL,
            alert_id TEXT,
            created_at REAL NOT NULL,
            created_by TEXT NOT NULL
        )"""
    )
    c.execute(
        """CREATE TABLE incident_marks (
            dataset TEXT NOT NULL,
            incident_id TEXT NOT NULL,
            marked_at REAL NOT NULL,
            marked_by TEXT NOT NULL,
            queued INTEGER NOT NULL,
            note TEXT NOT NULL,
            PRIMARY KEY (dataset, incident_id)
        ) WITHOUT ROWID"""
    )
    c.execute(
        """CREATE TABLE jobs (
            id TEXT PRIMARY KEY,
            state TEXT NOT NULL,
            label TEXT NOT NULL,
            created_at REAL NOT NULL,
            created_by TEXT NOT NULL,
            started_at REAL,
            finished_at REAL,
            size INTEGER NOT NULL,
            sha256 TEXT NOT NULL,
            format TEXT NOT NULL,
            packets INTEGER NOT NULL DEFAULT 0,
            bytes INTEGER NOT NULL DEFAULT 0,
            percent REAL,
            events INTEGER NOT NULL DEFAULT 0,
            alerts INTEGER NOT NULL DEFAULT 0,
            error TEXT,
            warning TEXT,
            owner_pid INTEGER,
            dir TEXT NOT NULL
        )"""
    )
    c.execute("CREATE INDEX jobs_state ON jobs(state, created_at)")
    c.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")


MIGRATIONS: list[Migration] = [
    (1, "tokens, audit, activity, notes, rule overrides, suppressions, incident marks, jobs, meta", _m1_tables),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]


def _newer(version: int) -> StateError:
    return StateError(
        f"the API state file is schema version {version}, newer than this icswatch knows ({SCHEMA_VERSION}): upgrade icswatch"
    )


def migrate(c: sqlite3.Connection) -> list[int]:
    # recheck: another worker process may have migrated between our read and our lock.
    return apply_migrations(c, MIGRATIONS, VERSION_TABLE, _newer, recheck=True)


@dataclass(frozen=True)
class TokenRecord:
    id: str
    name: str
    role: str
    created_at: float
    created_by: str
    expires_at: float | None
    revoked_at: float | None
    last_used_at: float | None

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "role": self.role,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "expires_at": self.expires_at,
            "revoked_at": self.revoked_at,
            "last_used_at": self.last_used_at,
        }


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


class StateStore:
    """Thread-safe access to the state file (one connection and a lock per process)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._lock = threading.RLock()
        self.conn = connect(self.path)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("PRAGMA busy_timeout=30000")
        if self.path != ":memory:":
            try:
                os.chmod(self.path, 0o600)  # token hashes and the audit log: not for other local users
            except OSError:
                pass
        self.migrated = migrate(self.conn)

    def close(self) -> None:
        with self._lock:
            self.conn.close()

    def _write(self, sql: str, params: Iterable[Any] = ()) -> int:
        with self._lock:
            return self.conn.execute(sql, tuple(params)).rowcount

    def _one(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Row | None:
        with self._lock:
            return self.conn.execute(sql, tuple(params)).fetchone()

    def _all(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self.conn.execute(sql, tuple(params)).fetchall()

    def ping(self) -> bool:
        try:
            self._one("SELECT 1")
            return True
        except sqlite3.Error:
            return False

    # -- tokens --------------------------------------------------------------------------------
    def add_token(self, token_id: str, digest: str, name: str, role: str, by: str, expires_at: float | None) -> None:
        self._write(
            "INSERT INTO tokens (id, hash, name, role, created_at, created_by, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (token_id, digest, name, role, time.time(), by, expires_at),
        )

    @staticmethod
    def _token(row: sqlite3.Row) -> TokenRecord:
        return TokenRecord(
            row["id"], row["name"], row["role"], row["created_at"], row["created_by"], row["expires_at"],
            row["revoked_at"], row["last_used_at"],
        )

    def token_by_hash(self, digest: str) -> TokenRecord | None:
        row = self._one("SELECT * FROM tokens WHERE hash = ?", (digest,))
        return self._token(row) if row else None

    def token(self, token_id: str) -> TokenRecord | None:
        row = self._one("SELECT * FROM tokens WHERE id = ?", (token_id,))
        return self._token(row) if row else None

    def tokens(self) -> list[TokenRecord]:
        return [self._token(r) for r in self._all("SELECT * FROM tokens ORDER BY created_at, id")]

    def revoke_token(self, token_id: str) -> bool:
        return self._write("UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (time.time(), token_id)) > 0

    def touch_token(self, token_id: str, now: float) -> None:
        self._write("UPDATE tokens SET last_used_at = ? WHERE id = ?", (now, token_id))

    # -- audit ---------------------------------------------------------------------------------
    def audit(self, actor: str, role: str, method: str, path: str, action: str, status: int, detail: str, client: str) -> None:
        self._write(
            "INSERT INTO audit (ts, actor, role, method, path, action, status, detail, client) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (time.time(), actor[:100], role, method, path[:300], action[:300], status, detail[:500], client[:64]),
        )

    def audit_entries(self, limit: int = 100, before: int | None = None, actor: str | None = None) -> list[dict[str, Any]]:
        where: list[str] = []
        params: list[Any] = []
        if before is not None:
            where.append("seq < ?")
            params.append(before)
        if actor:
            where.append("actor = ?")
            params.append(actor)
        sql = "SELECT * FROM audit" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY seq DESC LIMIT ?"
        return [dict(r) for r in self._all(sql, [*params, limit])]

    def audit_count(self) -> int:
        row = self._one("SELECT COUNT(*) FROM audit")
        return int(row[0]) if row else 0

    # -- activity and notes ----------------------------------------------------------------------
    def record(self, dataset: str, kind: str, target: str, actor: str, action: str, detail: dict[str, Any] | None = None,
               *, assignee: str | None = None, reason: str | None = None, comment: bool = False) -> dict[str, Any]:
        """Append to the activity trail and update the note, in one transaction."""
        now = time.time()
        with self._lock, immediate(self.conn) as c:
            cur = c.execute(
                "INSERT INTO activity (ts, dataset, kind, target, actor, action, detail) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (now, dataset, kind, target, actor, action, _dumps(detail or {})),
            )
            c.execute(
                "INSERT INTO notes (dataset, kind, target, assignee, reason, comments, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(dataset, kind, target) DO UPDATE SET "
                "assignee = COALESCE(excluded.assignee, notes.assignee), reason = COALESCE(excluded.reason, notes.reason), "
                "comments = notes.comments + excluded.comments, updated_at = excluded.updated_at",
                (dataset, kind, target, assignee, reason, 1 if comment else 0, now),
            )
        return {"seq": cur.lastrowid, "ts": now, "actor": actor, "action": action, "detail": detail or {}}

    def activity(self, dataset: str, kind: str, target: str, limit: int = 500) -> list[dict[str, Any]]:
        rows = self._all(
            "SELECT seq, ts, actor, action, detail FROM activity WHERE dataset = ? AND kind = ? AND target = ? ORDER BY seq LIMIT ?",
            (dataset, kind, target, limit),
        )
        return [{"seq": r["seq"], "ts": r["ts"], "actor": r["actor"], "action": r["action"], "detail": json.loads(r["detail"])} for r in rows]

    def notes(self, dataset: str, kind: str, targets: Iterable[str]) -> dict[str, dict[str, Any]]:
        ids = list(targets)
        out: dict[str, dict[str, Any]] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ", ".join("?" for _ in chunk)
            for r in self._all(
                f"SELECT target, assignee, reason, comments FROM notes WHERE dataset = ? AND kind = ? AND target IN ({marks})",
                (dataset, kind, *chunk),
            ):
                out[r["target"]] = {"assignee": r["assignee"], "reason": r["reason"], "comments": r["comments"]}
        return out

    def forget_dataset(self, dataset: str) -> None:
        with self._lock:
            for table in ("activity", "notes", "incident_marks"):
                self.conn.execute(f"DELETE FROM {table} WHERE dataset = ?", (dataset,))

    # -- rules -----------------------------------------------------------------------------------
    def set_rule_enabled(self, rule_id: str, enabled: bool, by: str) -> None:
        self._write(
            "INSERT INTO rule_overrides (rule_id, enabled, at, by) VALUES (?, ?, ?, ?) ON CONFLICT(rule_id) DO UPDATE SET "
            "enabled = excluded.enabled, at = excluded.at, by = excluded.by",
            (rule_id, int(enabled), time.time(), by),
        )
        self.bump("rules_generation")

    def rule_overrides(self) -> dict[str, dict[str, Any]]:
        return {r["rule_id"]: {"enabled": bool(r["enabled"]), "at": r["at"], "by": r["by"]} for r in self._all("SELECT * FROM rule_overrides")}

    def add_suppression(self, sid: str, rule: str, src: str | None, dst: str | None, until: float | None, reason: str,
                        alert_id: str | None, by: str) -> dict[str, Any]:
        now = time.time()
        self._write(
            "INSERT INTO suppressions (id, rule, src, dst, until, reason, alert_id, created_at, created_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (sid, rule, src, dst, until, reason, alert_id, now, by),
        )
        self.bump("rules_generation")
        return {"id": sid, "rule": rule, "src": src, "dst": dst, "until": until, "reason": reason, "alert_id": alert_id,
                "created_at": now, "created_by": by}

    def suppressions(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self._all("SELECT * FROM suppressions ORDER BY created_at, id")]

    def delete_suppression(self, sid: str) -> bool:
        n = self._write("DELETE FROM suppressions WHERE id = ?", (sid,))
        if n:
            self.bump("rules_generation")
        return n > 0

    # -- incident marks ----------------------------------------------------------------------------
    def mark_incident(self, dataset: str, incident_id: str, by: str, queued: int, note: str) -> dict[str, Any]:
        now = time.time()
        self._write(
            "INSERT INTO incident_marks (dataset, incident_id, marked_at, marked_by, queued, note) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(dataset, incident_id) DO UPDATE SET marked_at = excluded.marked_at, marked_by = excluded.marked_by, "
            "queued = incident_marks.queued + excluded.queued, note = excluded.note",
            (dataset, incident_id, now, by, queued, note),
        )
        return self.incident_mark(dataset, incident_id) or {}

    def incident_mark(self, dataset: str, incident_id: str) -> dict[str, Any] | None:
        row = self._one("SELECT * FROM incident_marks WHERE dataset = ? AND incident_id = ?", (dataset, incident_id))
        return dict(row) if row else None

    # -- meta ------------------------------------------------------------------------------------
    def bump(self, key: str) -> int:
        with self._lock:
            self.conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, '1') ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1",
                (key,),
            )
            return int(self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0])

    def meta(self, key: str, default: str = "0") -> str:
        row = self._one("SELECT value FROM meta WHERE key = ?", (key,))
        return str(row[0]) if row else default

    # -- jobs ------------------------------------------------------------------------------------
    def create_job(self, job_id: str, label: str, by: str, size: int, sha256: str, fmt: str, directory: str) -> None:
        self._write(
            "INSERT INTO jobs (id, state, label, created_at, created_by, size, sha256, format, dir) VALUES (?, 'queued', ?, ?, ?, ?, ?, ?, ?)",
            (job_id, label, time.time(), by, size, sha256, fmt, directory),
        )

    def job(self, job_id: str) -> dict[str, Any] | None:
        row = self._one("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return dict(row) if row else None

    def jobs(self, limit: int = 100) -> list[dict[str, Any]]:
        return [dict(r) for r in self._all("SELECT * FROM jobs ORDER BY created_at DESC, id LIMIT ?", (limit,))]

    def job_counts(self) -> dict[str, int]:
        return {r["state"]: r["n"] for r in self._all("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")}

    def active_jobs(self) -> int:
        row = self._one("SELECT COUNT(*) FROM jobs WHERE state IN ('queued', 'running')")
        return int(row[0]) if row else 0

    def claim_job(self, pid: int) -> dict[str, Any] | None:
        """The oldest queued job, now running and owned by ``pid`` (atomic across processes)."""
        with self._lock, immediate(self.conn) as c:
            row = c.execute("SELECT id FROM jobs WHERE state = 'queued' ORDER BY created_at, id LIMIT 1").fetchone()
            if row is None:
                return None  # leaving the block commits the (empty) transaction
            c.execute(
                "UPDATE jobs SET state = 'running', started_at = ?, owner_pid = ? WHERE id = ?", (time.time(), pid, row["id"])
            )
        return self.job(row["id"])

    def job_progress(self, job_id: str, packets: int, nbytes: int, percent: float | None) -> None:
        self._write(
            "UPDATE jobs SET packets = ?, bytes = ?, percent = ? WHERE id = ? AND state = 'running'",
            (packets, nbytes, percent, job_id),
        )

    def finish_job(self, job_id: str, state: str, *, error: str | None = None, warning: str | None = None,
                   packets: int | None = None, nbytes: int | None = None, events: int | None = None,
                   alerts: int | None = None) -> bool:
        assert state in FINISHED
        sets = ["state = ?", "finished_at = ?", "error = ?", "warning = ?"]
        params: list[Any] = [state, time.time(), error, warning]
        for col, v in (("packets", packets), ("bytes", nbytes), ("events", events), ("alerts", alerts)):
            if v is not None:
                sets.append(f"{col} = ?")
                params.append(v)
        if state == "done":
            sets.append("percent = 100.0")
        n = self._write(f"UPDATE jobs SET {', '.join(sets)} WHERE id = ? AND state IN ('queued', 'running')", (*params, job_id))
        return n > 0

    def orphaned_jobs(self, alive: Callable[[int], bool]) -> list[str]:
        """Running jobs whose owner process is gone (a restart): failed, with the reason."""
        out = []
        for r in self._all("SELECT id, owner_pid FROM jobs WHERE state = 'running'"):
            gone = r["owner_pid"] is None or not alive(int(r["owner_pid"]))
            if gone and self.finish_job(r["id"], "failed", error="interrupted: the API process that ran this job stopped"):
                out.append(r["id"])
        return out

    def delete_job(self, job_id: str) -> bool:
        return self._write("DELETE FROM jobs WHERE id = ?", (job_id,)) > 0

    def old_jobs(self, keep: int) -> list[dict[str, Any]]:
        """Finished jobs beyond the newest ``keep`` (to delete)."""
        rows = self._all(
            "SELECT * FROM jobs WHERE state IN ('done', 'failed', 'cancelled') ORDER BY created_at DESC, id LIMIT -1 OFFSET ?",
            (keep,),
        )
        return [dict(r) for r in rows]
