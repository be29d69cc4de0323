"""What every SQLite file of icswatch does alike: how a connection is opened, a write transaction,
the versioned schema, one page of a keyset-paginated query and the pattern of a text search.

Users: the alert store (alerts/sqlite_store.py), the asset inventory (alerts/asset_store.py), the
linkage outbox (alerts/outbox.py), the enterprise API's state (api/enterprise/state.py) and the
province platform's store (api/province/sqlite_store.py). Each keeps its own tables, migrations and
version table; only the mechanics are here.

SQL: the identifiers these helpers put into statements (version table, columns, sort keys) are
parameters that every caller passes from constants or from lists checked against a fixed set, which
is what tools/sql_audit.py verifies at each call site. Helpers that append to a caller's WHERE list
stay in the caller's module: the audit follows those only within a module.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# (version, description, the function that applies it): ordered, append-only.
Migration = tuple[int, str, Callable[[sqlite3.Connection], None]]


def connect(path: str) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit ``BEGIN IMMEDIATE``), usable from
    any thread behind the caller's lock, rows readable by column name, waiting up to 30 s for a lock
    another connection holds. The file's folder is made when missing."""
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
    conn.row_factory = sqlite3.Row
    return conn


def close_checkpointed(c: sqlite3.Connection) -> None:
    """Close after a PASSIVE checkpoint (the WAL copied back into the database as far as no reader
    holds it), so the file is complete without its WAL; a checkpoint that cannot run is no reason
    not to close."""
    try:
        c.execute("PRAGMA wal_checkpoint(PASSIVE)")
    except sqlite3.Error:
        pass
    c.close()


@contextmanager
def immediate(c: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``with immediate(conn) as c:`` one ``BEGIN IMMEDIATE`` transaction (the write lock taken at
    the start, so it never fails half-way on a lock): committed when the block ends, rolled back when
    it raises. Leaving the block early (``return``, ``continue``) commits."""
    c.execute("BEGIN IMMEDIATE")
    try:
        yield c
        c.execute("COMMIT")
    except BaseException:
        c.execute("ROLLBACK")
        raise


def stored_version(c: sqlite3.Connection, version_table: str) -> int:
    """The newest schema version recorded in ``version_table``; 0 for a new file (no table yet)."""
    row = c.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?", (version_table,)).fetchone()
    if row is None:
        return 0
    v = c.execute(f"SELECT MAX(version) FROM {version_table}").fetchone()[0]
    return int(v or 0)


def apply_migrations(
    c: sqlite3.Connection,
    migrations: Sequence[Migration],
    version_table: str,
    newer: Callable[[int], Exception],
    *,
    target: int | None = None,
    recheck: bool = False,
) -> list[int]:
    """Bring the schema to ``target`` (default: the last migration); return the versions applied.

    Each migration runs in its own transaction together with its row in ``version_table``. A file
    whose version is beyond the last migration was written by a newer icswatch: ``newer(version)``
    is raised rather than guessing. ``recheck``: read the version again once the write lock is held
    and skip what another process applied in between (files that several processes open at once)."""
    known = migrations[-1][0]
    target = known if target is None else target
    c.execute(
        f"CREATE TABLE IF NOT EXISTS {version_table} "
        "(version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL, description TEXT NOT NULL)"
    )
    current = stored_version(c, version_table)
    if current > known:
        raise newer(current)
    applied = []
    for version, description, fn in migrations:
        if not current < version <= target:
            continue
        with immediate(c):
            if recheck and stored_version(c, version_table) >= version:
                continue
            fn(c)
            c.execute(
                f"INSERT INTO {version_table} (version, applied_at, description) VALUES (?, datetime('now'), ?)",
                (version, description),
            )
        applied.append(version)
    return applied


def keyset_page(
    c: sqlite3.Connection,
    select: str,
    source: str,
    where: Sequence[str],
    params: Sequence[Any],
    keys: Sequence[str],
    descending: bool,
    limit: int,
    after: Sequence[Any] | None,
) -> tuple[list[sqlite3.Row], bool, int]:
    """One page of ``SELECT select FROM source WHERE where`` ordered by ``keys`` (the last one unique),
    starting after the row whose keys were ``after`` (the previous page's last; None: the first page).

    Returns the page's rows (at most ``limit``), whether more follow (one row more is read to know),
    and how many rows match ``where`` in all. Keyset rather than OFFSET: a page costs the same
    however deep it is, and rows written meanwhile do not shift the pages."""
    total_sql = f"SELECT COUNT(*) FROM {source}" + (" WHERE " + " AND ".join(where) if where else "")
    page_where = list(where)
    page_params = list(params)
    if after is not None:
        page_where.append(f"({', '.join(keys)}) {'<' if descending else '>'} ({', '.join('?' for _ in keys)})")
        page_params.extend(after)
    order = ", ".join(f"{k} {'DESC' if descending else 'ASC'}" for k in keys)
    sql = (
        f"SELECT {select} FROM {source}"
        + (" WHERE " + " AND ".join(page_where) if page_where else "")
        + f" ORDER BY {order} LIMIT ?"
    )
    total = c.execute(total_sql, list(params)).fetchone()[0]
    rows = c.execute(sql, [*page_params, limit + 1]).fetchall()
    return rows[:limit], len(rows) > limit, int(total)


def like_contains(text: str) -> str:
    """The ``LIKE ? ESCAPE '\\'`` pattern of a case-insensitive substring: the wildcards ``%`` and
    ``_`` in ``text`` are literal characters, not patterns."""
    return "%" + text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
