"""The Elasticsearch sink's durable spool: documents waiting for the cluster, on disk, in order.

When Elasticsearch cannot take documents (down, unreachable, answering 429/5xx past the retries), the
sink writes them here and keeps the sensor running; a background thread replays them, oldest first,
as soon as the cluster answers again, and deletes each document only once Elasticsearch has
acknowledged it (or rejected it for good). A process that stops with documents spooled leaves them in
the file; the next run with the same ``elasticsearch.spool`` path delivers them first.

Storage: one SQLite file in WAL mode, one table ``docs(seq INTEGER PRIMARY KEY, body BLOB)``.
``seq`` is the sink's sequence number, given to a document when the sensor hands it over, so the
spool is always read in the order the sensor produced the documents, whichever thread spooled them
and when (a bulk that failed in flight is spooled after newer documents but read before them).
``body`` is the document's two NDJSON lines (the bulk action and the source), ready to send.
Writes are one transaction per call; ``synchronous=NORMAL``: durable against a process crash.

Bounds and the full policy: the spool holds at most ``max_bytes`` of documents (bodies). A document
that would overflow it makes room by **dropping the oldest documents first** (lowest ``seq``): the
newest alerts are the ones an analyst needs next, and an incident's newest state supersedes its older
ones. Every dropped document is counted (``dropped``), and an ERROR is logged when the spool becomes
full and again at most once a minute while it keeps dropping ("Elasticsearch spool FULL ..."). A
single document larger than the whole spool is dropped (counted) rather than kept.

Delivery is at least once, duplicates are impossible: every document has a deterministic ``_id`` and
is written with ``create`` (alerts, events, context) or an ``update`` that carries the full state
(incidents), so a document delivered twice (acknowledged by Elasticsearch but not yet deleted from the
spool when the process died) lands once.

One process per spool file: an exclusive lock on ``<spool>.lock`` refuses a second sensor that was
given the same path (the two would interleave their sequence numbers).
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

WARN_EVERY = 60.0  # seconds between two "spool full" errors while it keeps dropping


class SpoolError(Exception):
    """The spool cannot be opened (in use by another process, unreadable file); the message says why."""


class Spool:
    """Bounded FIFO of serialised bulk items keyed by sequence number. Thread-safe."""

    def __init__(self, path: str | Path, max_bytes: int = 512 << 20, *, lock: bool = True) -> None:
        if max_bytes <= 0:
            raise SpoolError("the spool needs a positive size bound")
        self.path = str(path)
        self.max_bytes = int(max_bytes)
        self._lock = threading.Lock()
        self._lockfile: IO[str] | None = None
        memory = self.path == ":memory:"
        if not memory:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            if lock:
                self._take_lock()
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30.0)
            if not memory:
                self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA auto_vacuum=INCREMENTAL")  # effective on a new file only
            self._db.execute("CREATE TABLE IF NOT EXISTS docs (seq INTEGER PRIMARY KEY, body BLOB NOT NULL)")
            n, size, top = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(body)), 0), MAX(seq) FROM docs"
            ).fetchone()
        except sqlite3.Error as exc:
            self._release_lock()
            raise SpoolError(f"{self.path}: cannot open the Elasticsearch spool: {exc}") from None
        self.count = int(n)
        self.bytes = int(size)
        self.max_seq = int(top or 0)  # the sink continues its numbering after the last spooled document
        self.spooled = 0  # documents written to the spool by this process
        self.dropped = 0  # documents dropped because the spool was full (oldest first)
        self.delivered = 0  # documents removed after Elasticsearch took (or refused) them
        self.full_since: float | None = None
        self._last_warning = 0.0

    # -- lock -----------------------------------------------------------------------------------
    def _take_lock(self) -> None:
        fh = open(self.path + ".lock", "a+", encoding="utf-8")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            raise SpoolError(
                f"{self.path}: the Elasticsearch spool is in use by another icswatch process; "
                "give each sensor its own elasticsearch.spool path"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        self._lockfile = fh

    def _release_lock(self) -> None:
        if self._lockfile is not None:
            try:
                fcntl.flock(self._lockfile.fileno(), fcntl.LOCK_UN)
            finally:
                self._lockfile.close()
                self._lockfile = None

    # -- writing --------------------------------------------------------------------------------
    def append(self, items: Sequence[tuple[int, bytes]]) -> int:
        """Spool ``(seq, body)`` items (any order; read back by ``seq``). Returns how many documents
        were dropped to make room (oldest ``seq`` first, spooled or incoming), counting any item larger
        than the whole spool."""
        if not items:
            return 0
        keep = [(seq, body) for seq, body in items if len(body) <= self.max_bytes]
        dropped = len(items) - len(keep)
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                cur = db.executemany("INSERT OR IGNORE INTO docs (seq, body) VALUES (?, ?)", keep)
                if cur.rowcount == len(keep):
                    self.count += len(keep)
                    self.bytes += sum(len(b) for _, b in keep)
                else:  # a sequence number seen before (cannot happen with one process per file): recount
                    self._recount()
                if self.bytes > self.max_bytes:
                    dropped += self._drop_oldest(self.bytes - self.max_bytes)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                self._recount()
                raise
            self.spooled += len(keep)
            if keep:
                self.max_seq = max(self.max_seq, max(s for s, _ in keep))
            if dropped:
                self._dropped(dropped)
            elif self.full_since is not None and self.bytes < self.max_bytes * 0.9:
                log.warning("Elasticsearch spool has room again (%d documents, %.1f MB)", self.count, self.bytes / 1e6)
                self.full_since = None
        return dropped

    def _recount(self) -> None:
        n, size = self._db.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(body)), 0) FROM docs").fetchone()
        self.count, self.bytes = int(n), int(size)

    def _drop_oldest(self, need: int) -> int:
        """Delete the lowest sequence numbers until ``need`` bytes are free (inside the caller's transaction)."""
        freed = 0
        dropped = 0
        cutoff = None
        cur = self._db.execute("SELECT seq, LENGTH(body) FROM docs ORDER BY seq")
        try:
            while freed < need:
                rows = cur.fetchmany(1000)
                if not rows:
                    break
                for seq, size in rows:
                    freed += size
                    dropped += 1
                    cutoff = seq
                    if freed >= need:
                        break
        finally:
            cur.close()
        if cutoff is not None:
            self._db.execute("DELETE FROM docs WHERE seq <= ?", (cutoff,))
            self.count -= dropped
            self.bytes -= freed
        return dropped

    def _dropped(self, n: int) -> None:
        self.dropped += n
        now = time.monotonic()
        if self.full_since is None or now - self._last_warning >= WARN_EVERY:
            if self.full_since is None:
                self.full_since = now
            self._last_warning = now
            log.error(
                "Elasticsearch spool FULL (%s, %.1f MB bound): dropped %d oldest document(s), %d in all; "
                "alerts are being lost until Elasticsearch comes back or elasticsearch.spool_max_mb grows",
                self.path,
                self.max_bytes / 1e6,
                n,
                self.dropped,
            )

    # -- reading --------------------------------------------------------------------------------
    def peek(self, max_docs: int, max_bytes: int) -> list[tuple[int, bytes]]:
        """The oldest documents, at most ``max_docs`` and about ``max_bytes`` (at least one)."""
        out: list[tuple[int, bytes]] = []
        size = 0
        with self._lock:
            for seq, body in self._db.execute("SELECT seq, body FROM docs ORDER BY seq LIMIT ?", (max_docs,)):
                if out and size + len(body) > max_bytes:
                    break
                out.append((seq, bytes(body)))
                size += len(body)
        return out

    def ack(self, seqs: Iterable[int]) -> None:
        """Remove documents Elasticsearch took (or refused for good)."""
        seqs = list(seqs)
        if not seqs:
            return
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                marks = ",".join("?" * len(seqs))
                n, size = db.execute(
                    f"SELECT COUNT(*), COALESCE(SUM(LENGTH(body)), 0) FROM docs WHERE seq IN ({marks})", seqs
                ).fetchone()
                db.execute(f"DELETE FROM docs WHERE seq IN ({marks})", seqs)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            self.count -= n
            self.bytes -= size
            self.delivered += n
            if self.count == 0:
                self.bytes = 0
                try:
                    db.execute("PRAGMA incremental_vacuum")
                except sqlite3.Error:  # pragma: no cover - best effort
                    pass
                if self.full_since is not None:
                    self.full_since = None

    def __len__(self) -> int:
        return self.count

    def stats(self) -> dict[str, int | float | bool | str]:
        return {
            "path": self.path,
            "pending": self.count,
            "pending_bytes": self.bytes,
            "max_bytes": self.max_bytes,
            "spooled": self.spooled,
            "dropped": self.dropped,
            "full": self.full_since is not None,
        }

    def close(self) -> None:
        with self._lock:
            try:
                self._db.close()
            finally:
                self._release_lock()


def read_stats(path: str | Path) -> dict[str, int] | None:
    """What a spool file holds, read-only (for ``icswatch es stats`` while a sensor runs); None if absent."""
    p = Path(path)
    if not p.is_file():
        return None
    try:
        db = sqlite3.connect(f"file:{p}?mode=ro", uri=True, timeout=5.0)
        try:
            n, size, lo, hi = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(body)), 0), MIN(seq), MAX(seq) FROM docs"
            ).fetchone()
        finally:
            db.close()
    except sqlite3.Error:
        return None
    return {"pending": int(n), "pending_bytes": int(size), "first_seq": int(lo or 0), "last_seq": int(hi or 0)}
