"""The platform's default store: one SQLite file in WAL mode (``ProvinceStore``, api/province/store.py).

Schema versioned in ``province_schema_version`` (MIGRATIONS, append-only, each in its own
transaction; a file written by a newer icswatch is refused). The incident table carries the columns
the situational picture groups on (city, industry, level, status, late, times) with an index per
aggregate, and three narrow side tables (incident x protocol / technique / asset type) so those
counts are index scans rather than JSON parsing.

Connections: one writer connection shared by the app's threads behind a lock (SQLite serialises
writers anyway), and one read-only connection per thread for the queries. WAL readers wait neither
for the writer nor for each other, so the report intake (on the event loop) never waits behind a
dashboard query in a worker thread, and the other way round.

Several processes (``icswatch province serve --workers N``) share the file: their transactions also
take an exclusive ``flock`` on ``<db>-writelock``, so a writer that finds the database busy sleeps in
the kernel until the other one commits, instead of in SQLite's busy handler, which polls with sleeps
of 1, 2, 5, 10... ms (on the event loop, that would stall every request of the worker).

Housekeeping runs in a thread of its own (``_Maintenance``), never inside a request: checkpoints
(copying the WAL back into the database, with a flush of both files; otherwise whichever commit
crosses SQLite's 1,000-page mark waits for two disk flushes, on the event loop), and the replay cache's
pruning, in small transactions (at 1,000 reports/s the cache holds 300,000 nonces, and deleting a
second's worth of expired ones, or counting them, takes tens of milliseconds).

Durability: ``synchronous=NORMAL`` (the default) commits without waiting for the disk: a committed
report survives a crash of the platform process (the WAL is in the OS page cache), but a power cut or
a kernel crash can lose the transactions of the last moments (at most what was committed since the
last checkpoint's flush). ``FULL`` flushes the WAL to the disk at every commit, so an acknowledged
report survives a power cut too; the intake's group commit (api/province/intake.py) then shares one
flush between the reports that arrived together. docs/linkage.md ("Durability") has the figures.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

from alerts.sqlite_db import (
    Migration,
    apply_migrations,
    close_checkpointed,
    connect,
    keyset_page,
    like_contains,
)
from api.province.records import (
    MAX_LIMIT,
    OPEN_STATUSES,
    decode_cursor,
    encode_cursor,
    incident_brief,
    incident_record,
    search_text,
)
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
    StoreConflict,
    StoreError,
    Token,
    UpdateOutcome,
    UpdateRecord,
)

log = logging.getLogger(__name__)

VERSION_TABLE = "province_schema_version"
MAINTENANCE_SECONDS = 0.5  # checkpoint and prune this often (the WAL holds about this much intake)
WAL_SIZE_LIMIT = 64 * 1024 * 1024  # bytes the WAL file is truncated to when it restarts
WRITER_CACHE_KIB = 65536  # the writer's page cache: the replay cache's random keys stay in memory
NONCE_PRUNE_CHUNK = 500  # nonces deleted per transaction (a few ms of the write lock)
NONCE_BOUND_EVERY = 20  # maintenance rounds between two counts of the replay cache
MAX_NONCES = 1_000_000  # replay cache bound (rows); pruned by age first
NONCE_PRUNE_EVERY = 1024
# The registry's columns, in the order of the table and of ``Enterprise``.
ENTERPRISE_COLUMNS = (
    "id", "name", "uscc", "city", "industry", "security_class", "cii", "contacts", "active", "created_at", "updated_at",
)


def _m1_registry(c: sqlite3.Connection) -> None:
    c.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    c.execute(
        """CREATE TABLE enterprises (
            id TEXT PRIMARY KEY, name TEXT NOT NULL, uscc TEXT NOT NULL UNIQUE, city TEXT NOT NULL,
            industry TEXT NOT NULL, security_class INTEGER NOT NULL, cii INTEGER NOT NULL,
            contacts TEXT NOT NULL, active INTEGER NOT NULL DEFAULT 1,
            created_at REAL NOT NULL, updated_at REAL NOT NULL)"""
    )
    c.execute("CREATE INDEX enterprises_city ON enterprises(city)")
    c.execute("CREATE INDEX enterprises_industry ON enterprises(industry)")
    c.execute(
        """CREATE TABLE credentials (
            key_id TEXT PRIMARY KEY, enterprise_id TEXT NOT NULL REFERENCES enterprises(id),
            secret_box BLOB NOT NULL, created_at REAL NOT NULL, expires_at REAL, revoked_at REAL,
            last_used_at REAL, note TEXT NOT NULL DEFAULT '')"""
    )
    c.execute("CREATE INDEX credentials_enterprise ON credentials(enterprise_id)")
    c.execute(
        """CREATE TABLE tokens (
            token_id TEXT PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE, name TEXT NOT NULL, role TEXT NOT NULL,
            created_at REAL NOT NULL, expires_at REAL, revoked_at REAL, last_used_at REAL)"""
    )
    c.execute(
        """CREATE TABLE nonces (key_id TEXT NOT NULL, nonce TEXT NOT NULL, ts REAL NOT NULL,
            PRIMARY KEY (key_id, nonce)) WITHOUT ROWID"""
    )
    c.execute("CREATE INDEX nonces_ts ON nonces(ts)")


def _m2_incidents(c: sqlite3.Connection) -> None:
    c.execute(
        """CREATE TABLE incidents (
            pk INTEGER PRIMARY KEY, enterprise_id TEXT NOT NULL, incident_id TEXT NOT NULL,
            city TEXT NOT NULL, industry TEXT NOT NULL, cii INTEGER NOT NULL, level INTEGER NOT NULL,
            status TEXT NOT NULL, discovered_at REAL NOT NULL, received_at REAL NOT NULL, updated_at REAL NOT NULL,
            deadline REAL, late INTEGER NOT NULL, reportable_at REAL, revision INTEGER NOT NULL,
            search TEXT NOT NULL, doc TEXT NOT NULL,
            UNIQUE (enterprise_id, incident_id))"""
    )
    for name in ("protocol", "technique", "asset_type"):
        c.execute(
            f"""CREATE TABLE incident_{name}s (pk INTEGER NOT NULL REFERENCES incidents(pk) ON DELETE CASCADE,
                {name} TEXT NOT NULL, PRIMARY KEY ({name}, pk)) WITHOUT ROWID"""
        )
        c.execute(f"CREATE INDEX incident_{name}s_pk ON incident_{name}s(pk)")
    c.execute(
        """CREATE TABLE incident_updates (
            pk INTEGER NOT NULL REFERENCES incidents(pk) ON DELETE CASCADE, update_id TEXT NOT NULL,
            received_at REAL NOT NULL, actor TEXT NOT NULL, revision INTEGER NOT NULL, changes TEXT NOT NULL,
            PRIMARY KEY (pk, update_id)) WITHOUT ROWID"""
    )


def _m3_advisories(c: sqlite3.Connection) -> None:
    c.execute(
        """CREATE TABLE advisories (
            id TEXT PRIMARY KEY, title TEXT NOT NULL, body TEXT NOT NULL, kind TEXT NOT NULL, severity TEXT NOT NULL,
            targets TEXT NOT NULL, issued_by TEXT NOT NULL, issued_at REAL NOT NULL, expires_at REAL,
            techniques TEXT NOT NULL, refs TEXT NOT NULL)"""
    )
    c.execute("CREATE INDEX advisories_issued ON advisories(issued_at)")
    c.execute(
        """CREATE TABLE advisory_recipients (
            advisory_id TEXT NOT NULL REFERENCES advisories(id) ON DELETE CASCADE, enterprise_id TEXT NOT NULL,
            delivered_at REAL, acked_at REAL, ack_note TEXT NOT NULL DEFAULT '', acked_by TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (advisory_id, enterprise_id)) WITHOUT ROWID"""
    )
    c.execute("CREATE INDEX advisory_recipients_enterprise ON advisory_recipients(enterprise_id, advisory_id)")


def _m4_audit(c: sqlite3.Connection) -> None:
    c.execute(
        """CREATE TABLE audit (
            seq INTEGER PRIMARY KEY, ts REAL NOT NULL, actor TEXT NOT NULL, role TEXT NOT NULL,
            enterprise_id TEXT NOT NULL, method TEXT NOT NULL, path TEXT NOT NULL, action TEXT NOT NULL,
            resource TEXT NOT NULL, status INTEGER NOT NULL, result TEXT NOT NULL, detail TEXT NOT NULL,
            client TEXT NOT NULL, request_id TEXT NOT NULL)"""
    )
    c.execute("CREATE INDEX audit_ts ON audit(ts)")
    c.execute("CREATE INDEX audit_actor ON audit(actor, seq)")
    c.execute("CREATE INDEX audit_result ON audit(result, seq)")


def _m5_aggregate_indexes(c: sqlite3.Connection) -> None:
    # The situational picture filters on discovery time and groups on one column: (column, time).
    for sql in (
        "CREATE INDEX incidents_received ON incidents(received_at)",
        "CREATE INDEX incidents_discovered ON incidents(discovered_at)",
        "CREATE INDEX incidents_city ON incidents(city, discovered_at)",
        "CREATE INDEX incidents_industry ON incidents(industry, discovered_at)",
        "CREATE INDEX incidents_level ON incidents(level, discovered_at)",
        "CREATE INDEX incidents_status ON incidents(status, discovered_at)",
        "CREATE INDEX incidents_late ON incidents(late, received_at)",
        "CREATE INDEX incidents_enterprise ON incidents(enterprise_id, received_at)",
        "CREATE INDEX incidents_incident_id ON incidents(incident_id)",
    ):
        c.execute(sql)


MIGRATIONS: list[Migration] = [
    (1, "meta, enterprises, credentials, tokens, nonces", _m1_registry),
    (2, "incidents, their protocols/techniques/asset types, updates", _m2_incidents),
    (3, "advisories and recipients", _m3_advisories),
    (4, "audit log", _m4_audit),
    (5, "aggregate indexes", _m5_aggregate_indexes),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]


def _newer(version: int) -> StoreError:
    return StoreError(f"the database schema is version {version}, newer than this icswatch knows ({SCHEMA_VERSION})")


def migrate(c: sqlite3.Connection) -> list[int]:
    return apply_migrations(c, MIGRATIONS, VERSION_TABLE, _newer)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def _in(column: str, values: Sequence[Any], where: list[str], params: list[Any]) -> None:
    if values:
        where.append(f"{column} IN ({', '.join('?' for _ in values)})")
        params.extend(values)


def _between(column: str, since: float | None, until: float | None, where: list[str], params: list[Any]) -> None:
    """``since <= column < until``, for the bounds given."""
    if since is not None:
        where.append(f"{column} >= ?")
        params.append(since)
    if until is not None:
        where.append(f"{column} < ?")
        params.append(until)


class SQLiteProvinceStore:
    name = "sqlite"

    def __init__(self, path: str | Path, synchronous: str = "NORMAL", max_nonces: int = MAX_NONCES) -> None:
        self.path = str(path)
        self._memory = self.path == ":memory:"  # one connection only: another would open another database
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL"):
            raise StoreError("synchronous must be OFF, NORMAL or FULL")
        self.synchronous = synchronous.upper()
        # Without a flush per commit an intake batch is a few hundred microseconds of CPU: cheaper to run
        # on the event loop than to hand to a thread. With FULL it waits for the disk: a thread's job.
        self.intake_in_loop = self.synchronous != "FULL"
        self._lock = threading.RLock()
        self.conn = connect(self.path)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute(f"PRAGMA synchronous={self.synchronous}")
        self.conn.execute("PRAGMA foreign_keys=ON")
        self.migrated = migrate(self.conn)
        self.max_nonces = max_nonces
        self._nonce_inserts = 0
        self._nonces_pruned_at = 0
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._writelock_fd: int | None = None
        self._maintenance: _Maintenance | None = None
        self.nonce_window = 300.0  # the replay window last asked for (settings.clock_skew)
        self.conn.execute(f"PRAGMA cache_size=-{WRITER_CACHE_KIB}")
        if not self._memory:
            self._writelock_fd = os.open(self.path + "-writelock", os.O_RDWR | os.O_CREAT, 0o600)
            self.conn.execute("PRAGMA wal_autocheckpoint=0")
            self.conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
            self._maintenance = _Maintenance(self)

    def close(self) -> None:
        if self._maintenance is not None:
            self._maintenance.close()
        with self._readers_lock:
            readers, self._readers = self._readers, []
        for r in readers:
            try:
                r.close()
            except sqlite3.Error:
                pass
        with self._lock:
            close_checkpointed(self.conn)
            if self._writelock_fd is not None:
                os.close(self._writelock_fd)
                self._writelock_fd = None

    def _tx(self) -> "_Tx":
        return _Tx(self)

    def _reader(self) -> sqlite3.Connection:
        """This thread's read-only connection (made on first use)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path)
            conn.execute("PRAGMA query_only=ON")
            with self._readers_lock:
                self._readers.append(conn)
            self._local.conn = conn
        return conn

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A connection for queries: this thread's reader (the writer's, under its lock, for :memory:)."""
        if self._memory:
            with self._lock:
                yield self.conn
        else:
            yield self._reader()

    # -- meta ---------------------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        with self._read() as c:
            row = c.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self._lock:
            self.conn.execute(
                "INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value)
            )

    # -- enterprises --------------------------------------------------------------------------------
    @staticmethod
    def _enterprise(r: sqlite3.Row, prefix: str = "") -> Enterprise:
        """``prefix``: the column aliases of a join (``e_id``, ``e_name``...), which keep the enterprise's
        columns apart from the other table's."""
        v = {name: r[prefix + name] for name in ENTERPRISE_COLUMNS}
        return Enterprise(
            v["id"],
            v["name"],
            v["uscc"],
            v["city"],
            v["industry"],
            v["security_class"],
            bool(v["cii"]),
            json.loads(v["contacts"]),
            bool(v["active"]),
            v["created_at"],
            v["updated_at"],
        )

    def add_enterprise(self, e: Enterprise) -> None:
        try:
            with self._lock:
                self.conn.execute(
                    "INSERT INTO enterprises VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        e.id,
                        e.name,
                        e.uscc,
                        e.city,
                        e.industry,
                        e.security_class,
                        int(e.cii),
                        _dumps(e.contacts),
                        int(e.active),
                        e.created_at,
                        e.updated_at,
                    ),
                )
        except sqlite3.IntegrityError as exc:
            what = "unified social credit code" if "uscc" in str(exc) else "id"
            raise StoreConflict(f"an enterprise with this {what} exists") from None

    def update_enterprise(self, enterprise_id: str, fields: dict[str, Any], now: float) -> Enterprise | None:
        allowed = {"name", "city", "industry", "security_class", "cii", "contacts", "active"}
        sets, params = [], []
        for k, v in fields.items():
            if k not in allowed:
                raise StoreError(f"cannot change {k!r}")
            sets.append(f"{k} = ?")
            params.append(_dumps(v) if k == "contacts" else int(v) if isinstance(v, bool) else v)
        with self._lock:
            if sets:
                self.conn.execute(
                    f"UPDATE enterprises SET {', '.join(sets)}, updated_at = ? WHERE id = ?",
                    (*params, now, enterprise_id),
                )
            return self.get_enterprise(enterprise_id)

    def get_enterprise(self, enterprise_id: str) -> Enterprise | None:
        with self._read() as c:
            r = c.execute("SELECT * FROM enterprises WHERE id = ?", (enterprise_id,)).fetchone()
        return self._enterprise(r) if r else None

    def list_enterprises(
        self, city: str | None = None, industry: str | None = None, limit: int = 100, cursor: str | None = None
    ) -> Page:
        where, params = [], []
        if city:
            where.append("city = ?")
            params.append(city)
        if industry:
            where.append("industry = ?")
            params.append(industry)
        after = decode_cursor(cursor, 1) if cursor else None
        limit = max(1, min(limit, MAX_LIMIT))
        with self._read() as c:
            rows, more, total = keyset_page(c, "*", "enterprises", where, params, ["id"], False, limit, after)
        items = [self._enterprise(r) for r in rows]
        return Page(items, encode_cursor([items[-1].id]) if more else None, total)

    def match_enterprises(
        self, all_: bool, cities: Sequence[str], industries: Sequence[str], ids: Sequence[str]
    ) -> list[str]:
        if all_:
            sql, params = "SELECT id FROM enterprises WHERE active = 1", []
        else:
            ors, params = [], []
            for col, vals in (("city", cities), ("industry", industries), ("id", ids)):
                if vals:
                    ors.append(f"{col} IN ({', '.join('?' for _ in vals)})")
                    params.extend(vals)
            if not ors:
                return []
            sql = f"SELECT id FROM enterprises WHERE active = 1 AND ({' OR '.join(ors)})"
        with self._read() as c:
            return [r[0] for r in c.execute(sql + " ORDER BY id", params)]

    # -- credentials and tokens -----------------------------------------------------------------------
    @staticmethod
    def _credential(r: sqlite3.Row) -> Credential:
        return Credential(
            r["key_id"],
            r["enterprise_id"],
            bytes(r["secret_box"]),
            r["created_at"],
            r["expires_at"],
            r["revoked_at"],
            r["last_used_at"],
            r["note"],
        )

    def add_credential(self, c: Credential) -> None:
        with self._lock:
            self.conn.execute(
                "INSERT INTO credentials VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    c.key_id,
                    c.enterprise_id,
                    c.secret_box,
                    c.created_at,
                    c.expires_at,
                    c.revoked_at,
                    c.last_used_at,
                    c.note,
                ),
            )

    def get_credential(self, key_id: str) -> Credential | None:
        with self._read() as c:
            r = c.execute("SELECT * FROM credentials WHERE key_id = ?", (key_id,)).fetchone()
        return self._credential(r) if r else None

    def credential_and_enterprise(self, key_id: str) -> tuple[Credential, Enterprise | None] | None:
        # One query on the hot path of every signed request instead of two.
        with self._read() as c:
            r = c.execute(
                "SELECT c.*, e.id AS e_id, e.name AS e_name, e.uscc AS e_uscc, e.city AS e_city, "
                "e.industry AS e_industry, e.security_class AS e_security_class, e.cii AS e_cii, "
                "e.contacts AS e_contacts, e.active AS e_active, e.created_at AS e_created_at, "
                "e.updated_at AS e_updated_at FROM credentials c "
                "LEFT JOIN enterprises e ON e.id = c.enterprise_id WHERE c.key_id = ?",
                (key_id,),
            ).fetchone()
        if r is None:
            return None
        ent = self._enterprise(r, prefix="e_") if r["e_id"] is not None else None
        return self._credential(r), ent

    def list_credentials(self, enterprise_id: str) -> list[Credential]:
        with self._read() as c:
            rows = c.execute(
                "SELECT * FROM credentials WHERE enterprise_id = ? ORDER BY created_at", (enterprise_id,)
            ).fetchall()
        return [self._credential(r) for r in rows]

    def set_credential(self, key_id: str, *, expires_at: float | None = None, revoked_at: float | None = None) -> bool:
        sets, params = [], []
        if expires_at is not None:
            sets.append("expires_at = ?")
            params.append(expires_at)
        if revoked_at is not None:
            sets.append("revoked_at = ?")
            params.append(revoked_at)
        if not sets:
            return False
        with self._lock:
            cur = self.conn.execute(f"UPDATE credentials SET {', '.join(sets)} WHERE key_id = ?", (*params, key_id))
        return cur.rowcount > 0

    def touch_credential(self, key_id: str, ts: float) -> None:
        with self._tx() as c:  # a transaction for the cross-process write lock: this runs on the event loop
            c.execute("UPDATE credentials SET last_used_at = ? WHERE key_id = ?", (ts, key_id))

    @staticmethod
    def _token(r: sqlite3.Row) -> Token:
        return Token(
            r["token_id"],
            r["token_hash"],
            r["name"],
            r["role"],
            r["created_at"],
            r["expires_at"],
            r["revoked_at"],
            r["last_used_at"],
        )

    def add_token(self, t: Token) -> None:
        with self._lock:
            self.conn.execute(
                "INSERT INTO tokens VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (t.token_id, t.token_hash, t.name, t.role, t.created_at, t.expires_at, t.revoked_at, t.last_used_at),
            )

    def get_token(self, token_hash: str) -> Token | None:
        with self._read() as c:
            r = c.execute("SELECT * FROM tokens WHERE token_hash = ?", (token_hash,)).fetchone()
        return self._token(r) if r else None

    def list_tokens(self) -> list[Token]:
        with self._read() as c:
            return [self._token(r) for r in c.execute("SELECT * FROM tokens ORDER BY created_at")]

    def revoke_token(self, token_id: str, ts: float) -> bool:
        with self._lock:
            cur = self.conn.execute(
                "UPDATE tokens SET revoked_at = ? WHERE token_id = ? AND revoked_at IS NULL", (ts, token_id)
            )
        return cur.rowcount > 0

    def touch_token(self, token_id: str, ts: float) -> None:
        with self._tx() as c:
            c.execute("UPDATE tokens SET last_used_at = ? WHERE token_id = ?", (ts, token_id))

    # -- nonces -------------------------------------------------------------------------------------
    def use_nonce(self, key_id: str, nonce: str, ts: float, now: float, window: float) -> bool:
        with self._tx() as c:
            cur = c.execute("INSERT OR IGNORE INTO nonces VALUES (?, ?, ?)", (key_id, nonce, ts))
            fresh = cur.rowcount == 1
            self._nonce_inserts += 1
            self._maybe_prune_nonces(now, window)
        return fresh

    def _maybe_prune_nonces(self, now: float, window: float) -> None:
        """Inline pruning, for a database in memory only: a file has its maintenance thread."""
        self.nonce_window = window
        if self._maintenance is None and self._nonce_inserts - self._nonces_pruned_at >= NONCE_PRUNE_EVERY:
            self._nonces_pruned_at = self._nonce_inserts
            self._prune_nonces(now, window)

    def prune_nonces_step(self, now: float, count: bool) -> int:
        """One small transaction of the maintenance thread: delete up to NONCE_PRUNE_CHUNK nonces that left
        the window (or, with ``count`` and the cache over ``max_nonces``, the oldest). Returns how many."""
        with self._tx() as c:
            cur = c.execute(
                "DELETE FROM nonces WHERE (key_id, nonce) IN "
                "(SELECT key_id, nonce FROM nonces WHERE ts < ? ORDER BY ts LIMIT ?)",
                (now - self.nonce_window - 1.0, NONCE_PRUNE_CHUNK),
            )
            deleted = cur.rowcount
            if deleted < NONCE_PRUNE_CHUNK and count:
                over = int(c.execute("SELECT COUNT(*) FROM nonces").fetchone()[0]) - self.max_nonces
                if over > 0:
                    cur = c.execute(
                        "DELETE FROM nonces WHERE (key_id, nonce) IN "
                        "(SELECT key_id, nonce FROM nonces ORDER BY ts LIMIT ?)",
                        (min(over, NONCE_PRUNE_CHUNK),),
                    )
                    deleted += cur.rowcount
        return deleted

    def _prune_nonces(self, now: float, window: float) -> None:
        # A nonce only has to be remembered while its timestamp would still pass the window check.
        self.conn.execute("DELETE FROM nonces WHERE ts < ?", (now - window - 1.0,))
        n = self.conn.execute("SELECT COUNT(*) FROM nonces").fetchone()[0]
        if n > self.max_nonces:
            # Over the bound (a flood of valid requests within one window): the oldest go first. Their
            # timestamps are the nearest to leaving the window anyway.
            self.conn.execute(
                "DELETE FROM nonces WHERE (key_id, nonce) IN (SELECT key_id, nonce FROM nonces ORDER BY ts LIMIT ?)",
                (n - self.max_nonces,),
            )

    def nonce_count(self) -> int:
        with self._read() as c:
            return int(c.execute("SELECT COUNT(*) FROM nonces").fetchone()[0])

    # -- incidents ----------------------------------------------------------------------------------
    @staticmethod
    def _incident(r: sqlite3.Row) -> IncidentRecord:
        return incident_record(dict(r), json.loads(r["doc"]))

    def _write_sides(self, c: sqlite3.Connection, pk: int, rec: IncidentRecord, fresh: bool = False) -> None:
        for name, values in (
            ("protocol", rec.protocols),
            ("technique", rec.techniques),
            ("asset_type", rec.asset_types),
        ):
            if not fresh:
                c.execute(f"DELETE FROM incident_{name}s WHERE pk = ?", (pk,))
            c.executemany(
                f"INSERT OR IGNORE INTO incident_{name}s (pk, {name}) VALUES (?, ?)", [(pk, v) for v in set(values)]
            )

    # An incident's columns: those fixed at intake, then those an update rewrites (the last nine, in
    # the order of ``_changing_values``, which both statements take).
    _INSERT_INCIDENT = (
        "INSERT OR IGNORE INTO incidents (enterprise_id, incident_id, city, industry, cii, discovered_at, received_at, "
        "level, status, updated_at, deadline, late, reportable_at, revision, search, doc) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    _UPDATE_INCIDENT = (
        "UPDATE incidents SET level = ?, status = ?, updated_at = ?, deadline = ?, late = ?, reportable_at = ?, "
        "revision = ?, search = ?, doc = ? WHERE pk = ?"
    )

    @staticmethod
    def _changing_values(rec: IncidentRecord) -> tuple[Any, ...]:
        return (
            rec.level,
            rec.status,
            rec.updated_at,
            rec.deadline,
            int(rec.late),
            rec.reportable_at,
            rec.revision,
            search_text(rec),
            _dumps(rec.doc),
        )

    def _insert_row(self, c: sqlite3.Connection, rec: IncidentRecord) -> int | None:
        """The new row's pk, or None when (enterprise_id, incident_id) is already there."""
        cur = c.execute(
            self._INSERT_INCIDENT,
            (
                rec.enterprise_id,
                rec.incident_id,
                rec.city,
                rec.industry,
                int(rec.cii),
                rec.discovered_at,
                rec.received_at,
                *self._changing_values(rec),
            ),
        )
        return int(cur.lastrowid or 0) if cur.rowcount == 1 else None

    def _existing(self, c: sqlite3.Connection, enterprise_id: str, incident_id: str) -> IncidentRecord:
        row = c.execute(
            "SELECT * FROM incidents WHERE enterprise_id = ? AND incident_id = ?", (enterprise_id, incident_id)
        ).fetchone()
        return self._incident(row)

    def intake_batch(self, items: Sequence[IntakeItem], now: float, window: float) -> list[IntakeOutcome]:
        """Nonces and new incidents of several reports in one transaction: one commit (and with FULL one
        flush) for the batch instead of two per report, and the pages every insert touches (the right
        end of each index) written to the WAL once. Items are applied in order, exactly as ``use_nonce``
        then ``insert_incident`` one after the other would."""
        out: list[IntakeOutcome] = []
        sides: dict[str, set[tuple[int, str]]] = {"protocol": set(), "technique": set(), "asset_type": set()}
        with self._tx() as c:
            for item in items:
                cur = c.execute("INSERT OR IGNORE INTO nonces VALUES (?, ?, ?)", (item.key_id, item.nonce, item.ts))
                if cur.rowcount != 1:
                    out.append(IntakeOutcome(fresh=False))
                    continue
                self._nonce_inserts += 1
                rec = item.record
                if rec is None:
                    out.append(IntakeOutcome(fresh=True))
                    continue
                pk = self._insert_row(c, rec)
                if pk is None:
                    out.append(
                        IntakeOutcome(
                            fresh=True, created=False, stored=self._existing(c, rec.enterprise_id, rec.incident_id)
                        )
                    )
                    continue
                for name, values in (
                    ("protocol", rec.protocols),
                    ("technique", rec.techniques),
                    ("asset_type", rec.asset_types),
                ):
                    sides[name].update((pk, v) for v in values)
                out.append(IntakeOutcome(fresh=True, created=True, stored=rec))
            for name, rows in sides.items():
                if rows:
                    c.executemany(f"INSERT OR IGNORE INTO incident_{name}s (pk, {name}) VALUES (?, ?)", list(rows))
            self._maybe_prune_nonces(now, window)
        return out

    def insert_incident(self, rec: IncidentRecord) -> tuple[bool, IncidentRecord]:
        with self._tx() as c:
            pk = self._insert_row(c, rec)
            if pk is not None:
                self._write_sides(c, pk, rec, fresh=True)
                return True, rec
            return False, self._existing(c, rec.enterprise_id, rec.incident_id)

    def get_incident(self, enterprise_id: str, incident_id: str) -> IncidentRecord | None:
        with self._read() as c:
            r = c.execute(
                "SELECT * FROM incidents WHERE enterprise_id = ? AND incident_id = ?", (enterprise_id, incident_id)
            ).fetchone()
        return self._incident(r) if r else None

    def find_incident(self, incident_id: str) -> list[IncidentRecord]:
        with self._read() as c:
            rows = c.execute("SELECT * FROM incidents WHERE incident_id = ? LIMIT 10", (incident_id,)).fetchall()
        return [self._incident(r) for r in rows]

    def apply_update(self, rec: IncidentRecord, update: UpdateRecord, expected_revision: int) -> UpdateOutcome:
        with self._tx() as c:
            row = c.execute(
                "SELECT pk, revision FROM incidents WHERE enterprise_id = ? AND incident_id = ?",
                (rec.enterprise_id, rec.incident_id),
            ).fetchone()
            if row is None:
                return "missing"
            pk = int(row["pk"])
            if c.execute(
                "SELECT 1 FROM incident_updates WHERE pk = ? AND update_id = ?", (pk, update.update_id)
            ).fetchone():
                return "duplicate"
            if int(row["revision"]) != expected_revision:
                return "conflict"
            c.execute(self._UPDATE_INCIDENT, (*self._changing_values(rec), pk))
            self._write_sides(c, pk, rec)
            c.execute(
                "INSERT INTO incident_updates VALUES (?, ?, ?, ?, ?, ?)",
                (pk, update.update_id, update.received_at, update.actor, update.revision, _dumps(update.changes)),
            )
        return "applied"

    def incident_history(self, enterprise_id: str, incident_id: str) -> list[UpdateRecord]:
        with self._read() as c:
            rows = c.execute(
                "SELECT u.* FROM incident_updates u JOIN incidents i ON i.pk = u.pk "
                "WHERE i.enterprise_id = ? AND i.incident_id = ? ORDER BY u.revision",
                (enterprise_id, incident_id),
            ).fetchall()
        return [
            UpdateRecord(r["update_id"], r["received_at"], r["actor"], json.loads(r["changes"]), r["revision"])
            for r in rows
        ]

    def search_incidents(self, f: IncidentFilter) -> Page:
        where: list[str] = []
        params: list[Any] = []
        if f.enterprise_id is not None:
            where.append("enterprise_id = ?")
            params.append(f.enterprise_id)
        _in("city", list(f.cities), where, params)
        _in("industry", list(f.industries), where, params)
        _in("level", list(f.levels), where, params)
        _in("status", list(f.statuses), where, params)
        if f.late is not None:
            where.append("late = ?")
            params.append(int(f.late))
        _between("received_at", f.since, f.until, where, params)
        if f.text:
            where.append("search LIKE ? ESCAPE '\\'")
            params.append(like_contains(f.text))
        keys = ["received_at", "pk"]
        after = decode_cursor(f.cursor, 2) if f.cursor else None
        limit = max(1, min(int(f.limit), MAX_LIMIT))
        with self._read() as c:
            rows, more, total = keyset_page(c, "*", "incidents", where, params, keys, True, limit, after)
        nxt = encode_cursor([rows[-1][k] for k in keys]) if more and rows else None
        return Page([self._incident(r) for r in rows], nxt, total)

    def situation(self, q: SituationQuery, now: float) -> dict[str, Any]:
        where: list[str] = []
        params: list[Any] = []
        _between("i.discovered_at", q.since, q.until, where, params)
        _in("i.city", list(q.cities), where, params)
        _in("i.industry", list(q.industries), where, params)
        w = (" WHERE " + " AND ".join(where)) if where else ""
        top = max(1, min(q.top, 100))
        interval = max(60.0, float(q.interval))
        open_marks = ", ".join("?" for _ in OPEN_STATUSES)
        out: dict[str, Any] = {}
        with self._read() as c:
            t = c.execute(
                f"SELECT COUNT(*) AS incidents, COALESCE(SUM(i.status IN ({open_marks})), 0) AS open, "
                "COALESCE(SUM(i.late), 0) AS late, COALESCE(SUM(i.deadline IS NOT NULL), 0) AS mandatory, "
                "COUNT(DISTINCT i.enterprise_id) AS enterprises, COALESCE(SUM(i.cii), 0) AS cii "
                f"FROM incidents i{w}",
                [*OPEN_STATUSES, *params],
            ).fetchone()
            out["totals"] = {k: int(t[k]) for k in t.keys()}

            def group(col: str, limit: int | None = None) -> list[dict[str, Any]]:
                sql = f"SELECT {col} AS key, COUNT(*) AS n FROM incidents i{w} GROUP BY key ORDER BY n DESC, key"
                if limit:
                    sql += f" LIMIT {int(limit)}"
                return [{"key": r["key"], "count": int(r["n"])} for r in c.execute(sql, params)]

            def side(name: str) -> list[dict[str, Any]]:
                sql = (
                    f"SELECT s.{name} AS key, COUNT(*) AS n FROM incident_{name}s s JOIN incidents i ON i.pk = s.pk{w} "
                    f"GROUP BY key ORDER BY n DESC, key LIMIT {top}"
                )
                return [{"key": r["key"], "count": int(r["n"])} for r in c.execute(sql, params)]

            out["by_city"] = group("i.city")
            out["by_industry"] = group("i.industry")
            out["by_level"] = group("i.level")
            out["by_status"] = group("i.status")
            out["by_protocol"] = side("protocol")
            out["by_technique"] = side("technique")
            out["by_asset_type"] = side("asset_type")
            out["timeline"] = [
                {"bucket": r["b"], "level": r["level"], "count": int(r["n"])}
                for r in c.execute(
                    f"SELECT CAST(i.discovered_at / ? AS INTEGER) * ? AS b, i.level AS level, COUNT(*) AS n "
                    f"FROM incidents i{w} GROUP BY b, level ORDER BY b, level",
                    [interval, interval, *params],
                )
            ]
            cols = (
                "i.enterprise_id, i.incident_id, i.level, i.status, i.city, i.industry, i.deadline, "
                "i.received_at, i.late, i.doc"
            )
            lw = (w + " AND " if w else " WHERE ") + "i.late = 1"
            late_rows = c.execute(
                f"SELECT {cols} FROM incidents i{lw} ORDER BY i.received_at DESC LIMIT {top}", params
            ).fetchall()
            ow = (w + " AND " if w else " WHERE ") + f"i.status IN ({open_marks})"
            open_rows = c.execute(
                f"SELECT {cols} FROM incidents i{ow} ORDER BY i.level, i.received_at DESC LIMIT {top}",
                [*params, *OPEN_STATUSES],
            ).fetchall()
        out["interval"] = interval
        out["late_reports"] = [self._brief(r) for r in late_rows]
        out["open_reports"] = [self._brief(r) for r in open_rows]
        return out

    @staticmethod
    def _brief(r: sqlite3.Row) -> dict[str, Any]:
        return incident_brief(dict(r), json.loads(r["doc"]).get("title", ""))

    # -- advisories -----------------------------------------------------------------------------------
    @staticmethod
    def _advisory(r: sqlite3.Row) -> Advisory:
        return Advisory(
            r["id"],
            r["title"],
            r["body"],
            r["kind"],
            r["severity"],
            json.loads(r["targets"]),
            r["issued_by"],
            r["issued_at"],
            r["expires_at"],
            json.loads(r["techniques"]),
            json.loads(r["refs"]),
        )

    @staticmethod
    def _recipient(r: sqlite3.Row) -> Recipient:
        return Recipient(
            r["advisory_id"], r["enterprise_id"], r["delivered_at"], r["acked_at"], r["ack_note"], r["acked_by"]
        )

    def add_advisory(self, a: Advisory, recipients: Sequence[str]) -> None:
        with self._tx() as c:
            c.execute(
                "INSERT INTO advisories VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    a.id,
                    a.title,
                    a.body,
                    a.kind,
                    a.severity,
                    _dumps(a.targets),
                    a.issued_by,
                    a.issued_at,
                    a.expires_at,
                    _dumps(a.techniques),
                    _dumps(a.references),
                ),
            )
            c.executemany(
                "INSERT INTO advisory_recipients (advisory_id, enterprise_id) VALUES (?, ?)",
                [(a.id, e) for e in recipients],
            )

    def get_advisory(self, advisory_id: str) -> Advisory | None:
        with self._read() as c:
            r = c.execute("SELECT * FROM advisories WHERE id = ?", (advisory_id,)).fetchone()
        return self._advisory(r) if r else None

    def list_advisories(self, enterprise_id: str | None, limit: int = 100, cursor: str | None = None) -> Page:
        limit = max(1, min(limit, MAX_LIMIT))
        where, params = [], []
        if enterprise_id is not None:
            where.append("a.id IN (SELECT advisory_id FROM advisory_recipients WHERE enterprise_id = ?)")
            params.append(enterprise_id)
        after = decode_cursor(cursor, 2) if cursor else None
        with self._read() as c:
            rows, more, total = keyset_page(
                c, "a.*", "advisories a", where, params, ["a.issued_at", "a.id"], True, limit, after
            )
        items = [self._advisory(r) for r in rows]
        return Page(items, encode_cursor([items[-1].issued_at, items[-1].id]) if more and items else None, total)

    def recipient(self, advisory_id: str, enterprise_id: str) -> Recipient | None:
        with self._read() as c:
            r = c.execute(
                "SELECT * FROM advisory_recipients WHERE advisory_id = ? AND enterprise_id = ?",
                (advisory_id, enterprise_id),
            ).fetchone()
        return self._recipient(r) if r else None

    def recipients(self, advisory_id: str) -> list[Recipient]:
        with self._read() as c:
            rows = c.execute(
                "SELECT * FROM advisory_recipients WHERE advisory_id = ? ORDER BY enterprise_id", (advisory_id,)
            ).fetchall()
        return [self._recipient(r) for r in rows]

    def ack_counts(self, advisory_ids: Sequence[str]) -> dict[str, tuple[int, int]]:
        """advisory id -> (recipients, acknowledged)."""
        if not advisory_ids:
            return {}
        marks = ", ".join("?" for _ in advisory_ids)
        with self._read() as c:
            rows = c.execute(
                f"SELECT advisory_id, COUNT(*) AS n, COUNT(acked_at) AS a FROM advisory_recipients "
                f"WHERE advisory_id IN ({marks}) GROUP BY advisory_id",
                list(advisory_ids),
            ).fetchall()
        return {r["advisory_id"]: (int(r["n"]), int(r["a"])) for r in rows}

    def mark_delivered(self, advisory_ids: Sequence[str], enterprise_id: str, ts: float) -> None:
        if not advisory_ids:
            return
        with self._lock:
            self.conn.executemany(
                "UPDATE advisory_recipients SET delivered_at = ? WHERE advisory_id = ? AND enterprise_id = ? "
                "AND delivered_at IS NULL",
                [(ts, a, enterprise_id) for a in advisory_ids],
            )

    def ack_advisory(self, advisory_id: str, enterprise_id: str, ts: float, note: str, actor: str) -> Recipient | None:
        with self._tx() as c:
            # The first acknowledgement counts; a repeat (a retry) changes nothing.
            c.execute(
                "UPDATE advisory_recipients SET acked_at = ?, ack_note = ?, acked_by = ?, "
                "delivered_at = COALESCE(delivered_at, ?) "
                "WHERE advisory_id = ? AND enterprise_id = ? AND acked_at IS NULL",
                (ts, note, actor, ts, advisory_id, enterprise_id),
            )
            r = c.execute(
                "SELECT * FROM advisory_recipients WHERE advisory_id = ? AND enterprise_id = ?",
                (advisory_id, enterprise_id),
            ).fetchone()
        return self._recipient(r) if r else None

    # -- audit ----------------------------------------------------------------------------------------
    def write_audit(self, entries: Sequence[AuditEntry]) -> None:
        if not entries:
            return
        with self._tx() as c:
            c.executemany(
                "INSERT INTO audit (ts, actor, role, enterprise_id, method, path, action, resource, status, result, "
                "detail, client, request_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        e.ts,
                        e.actor,
                        e.role,
                        e.enterprise_id,
                        e.method,
                        e.path,
                        e.action,
                        e.resource,
                        e.status,
                        e.result,
                        e.detail,
                        e.client,
                        e.request_id,
                    )
                    for e in entries
                ],
            )

    def search_audit(self, f: AuditFilter) -> Page:
        where: list[str] = []
        params: list[Any] = []
        for col, val in (
            ("actor", f.actor),
            ("enterprise_id", f.enterprise_id),
            ("result", f.result),
            ("action", f.action),
        ):
            if val:
                where.append(f"{col} = ?")
                params.append(val)
        _between("ts", f.since, f.until, where, params)
        after = [int(decode_cursor(f.cursor, 1)[0])] if f.cursor else None
        limit = max(1, min(f.limit, MAX_LIMIT))
        with self._read() as c:
            rows, more, total = keyset_page(c, "*", "audit", where, params, ["seq"], True, limit, after)
        items = [dict(r) for r in rows]
        return Page(items, encode_cursor([rows[-1]["seq"]]) if more and rows else None, total)


class _Tx:
    """``with store._tx() as c:`` one IMMEDIATE transaction under the store's lock and, for a file, the
    cross-process write lock (module docstring)."""

    def __init__(self, store: SQLiteProvinceStore) -> None:
        self.store = store

    def __enter__(self) -> sqlite3.Connection:
        store = self.store
        store._lock.acquire()
        fd = store._writelock_fd
        try:
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                store.conn.execute("BEGIN IMMEDIATE")
            except BaseException:
                if fd is not None:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                raise
        except BaseException:
            store._lock.release()
            raise
        return store.conn

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        store = self.store
        try:
            store.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
        finally:
            if store._writelock_fd is not None:
                fcntl.flock(store._writelock_fd, fcntl.LOCK_UN)
            store._lock.release()


class _Maintenance:
    """The store's housekeeping thread (module docstring): every ``MAINTENANCE_SECONDS``, prune the replay
    cache in small transactions, then checkpoint the WAL (PASSIVE: it never blocks a writer or a reader)
    if the database changed (``data_version``: any connection's commit, another process's included)."""

    def __init__(self, store: SQLiteProvinceStore) -> None:
        self.store = store
        self.checkpoints = 0
        self.pruned = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="province-maintenance", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import time

        conn = sqlite3.connect(self.store.path, isolation_level=None, check_same_thread=False, timeout=30.0)
        seen = None
        rounds = 0
        try:
            while not self._stop.wait(MAINTENANCE_SECONDS):
                rounds += 1
                try:
                    while not self._stop.is_set():
                        n = self.store.prune_nonces_step(time.time(), count=rounds % NONCE_BOUND_EVERY == 0)
                        self.pruned += n
                        if n < NONCE_PRUNE_CHUNK:
                            break
                    version = conn.execute("PRAGMA data_version").fetchone()[0]
                    if version != seen:
                        seen = version
                        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                        self.checkpoints += 1
                except sqlite3.Error as exc:  # busy (another process's checkpoint), closing: the next round
                    log.debug("province store maintenance: %s", exc)
        finally:
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(30)
