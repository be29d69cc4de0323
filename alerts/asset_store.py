"""The asset inventory in the embedded store: its own tables in the same SQLite file as the alerts.

Tables: ``assets`` (one row per address: the columns the table and the API filter on, plus the whole
record as JSON in ``doc``) and ``asset_schema_version``.

Why a schema version table of its own: the alert store (alerts/sqlite_store.py) versions its schema
in ``schema_version`` with versions 1, 2, 3, ... and refuses a database whose version it does not
know. If the inventory added its migrations to that sequence, an icswatch with a newer inventory but
the same alert store would make the alert store refuse the file. So the inventory keeps its own
ordered, append-only migration list in ``asset_schema_version``; the two never see each other's
numbers, and either can evolve alone. Same rules as the alert store: each migration in its own
transaction, a database written by a newer icswatch is refused with a message.

Saving merges: a stored asset and the new observation of the same address are folded together
(first seen = the earlier, last seen = the later, counts added, identities merged), in one
transaction (``BEGIN IMMEDIATE``), so the inventory accumulates over replays and live runs.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Self

from alerts.sqlite_db import Migration, apply_migrations, connect, immediate, stored_version
from sensor.assets import Asset, AssetInventory, address_sort_key

VERSION_TABLE = "asset_schema_version"


class AssetStoreError(Exception):
    """The inventory tables cannot be used (a newer schema); the message says why."""


def _m1_assets(c: sqlite3.Connection) -> None:
    c.execute(
        """CREATE TABLE assets (
            address TEXT PRIMARY KEY,
            mac TEXT,
            mac_vendor TEXT,
            vendor TEXT,
            product TEXT,
            role TEXT NOT NULL,
            first_seen REAL NOT NULL,
            last_seen REAL NOT NULL,
            events INTEGER NOT NULL,
            protocols TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            doc TEXT NOT NULL
        )"""
    )
    c.execute("CREATE INDEX assets_role ON assets(role)")
    c.execute("CREATE INDEX assets_last_seen ON assets(last_seen)")


# Ordered, append-only: never edit a released migration, add the next one.
MIGRATIONS: list[Migration] = [
    (1, "asset inventory", _m1_assets),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]


def schema_version(c: sqlite3.Connection) -> int:
    return stored_version(c, VERSION_TABLE)


def _newer(version: int) -> AssetStoreError:
    return AssetStoreError(
        f"the asset tables are version {version}, newer than this icswatch knows ({SCHEMA_VERSION}): upgrade icswatch"
    )


def migrate(c: sqlite3.Connection) -> list[int]:
    return apply_migrations(c, MIGRATIONS, VERSION_TABLE, _newer)


class AssetStore:
    """Read and write the inventory. Safe to share between threads (one connection, a lock)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._lock = threading.RLock()
        self.conn = connect(self.path)
        self.conn.execute("PRAGMA journal_mode=WAL")  # same mode as the alert store sharing the file
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.migrated = migrate(self.conn)

    def close(self) -> None:
        with self._lock:
            self.conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing -----------------------------------------------------------------------------------
    def save(self, assets: AssetInventory | Iterable[Asset]) -> int:
        """Merge assets into the stored inventory; returns how many rows were written."""
        items = list(assets.assets.values()) if isinstance(assets, AssetInventory) else list(assets)
        if not items:
            return 0
        with self._lock, immediate(self.conn) as c:
            for a in items:
                row = c.execute("SELECT doc FROM assets WHERE address = ?", (a.address,)).fetchone()
                merged = a
                if row is not None:
                    merged = Asset.from_dict(json.loads(row["doc"]))
                    merged.merge(a)
                d = merged.to_dict()
                protocols = sorted(set(d["client_protocols"]) | set(d["server_protocols"]))
                c.execute(
                    "INSERT INTO assets (address, mac, mac_vendor, vendor, product, role, first_seen, last_seen, events, "
                    "protocols, updated_at, doc) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, datetime('now'), ?) "
                    "ON CONFLICT(address) DO UPDATE SET mac = excluded.mac, mac_vendor = excluded.mac_vendor, "
                    "vendor = excluded.vendor, product = excluded.product, role = excluded.role, "
                    "first_seen = excluded.first_seen, last_seen = excluded.last_seen, events = excluded.events, "
                    "protocols = excluded.protocols, updated_at = excluded.updated_at, doc = excluded.doc",
                    (
                        a.address,
                        d["mac"],
                        d["mac_vendor"],
                        d["vendor"],
                        d["product"],
                        d["role"],
                        d["first_seen"],
                        d["last_seen"],
                        d["events"],
                        ",".join(protocols),
                        json.dumps(d, ensure_ascii=False, separators=(",", ":")),
                    ),
                )
        return len(items)

    # -- reading -----------------------------------------------------------------------------------
    def load(self) -> AssetInventory:
        """The stored inventory as an ``AssetInventory`` (to merge into, print or export)."""
        inv = AssetInventory()
        with self._lock:
            rows = self.conn.execute("SELECT doc FROM assets").fetchall()
        for row in rows:
            a = Asset.from_dict(json.loads(row["doc"]))
            inv.assets[a.address] = a
        return inv

    def records(self) -> list[dict[str, Any]]:
        """Every stored asset as its JSON record, sorted by address."""
        return self.load().records()

    def get(self, address: str) -> dict[str, Any] | None:
        with self._lock:
            row = self.conn.execute("SELECT doc FROM assets WHERE address = ?", (address,)).fetchone()
        return None if row is None else json.loads(row["doc"])

    def count(self) -> int:
        with self._lock:
            return int(self.conn.execute("SELECT COUNT(*) FROM assets").fetchone()[0])

    def addresses(self) -> list[str]:
        with self._lock:
            rows = self.conn.execute("SELECT address FROM assets").fetchall()
        return sorted((r["address"] for r in rows), key=address_sort_key)
