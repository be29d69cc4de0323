"""Read indexes for the API's searches over the SQLite alert store (an adapter until the store has them).

The store's own indexes (alerts/sqlite_store.py, migration 2) serve filters on one column followed by
time. Three of the dashboard's common searches still read every matching row, and alert rows are
large (the ECS document is in the row): counting ``min_severity=high&status=open``, anything filtered
on ``severity`` (the store filters on ``severity_name``, which has no index), and text search. Over
100,000 alerts those took 110-360 ms (bench/api_alerts.py); with these indexes, 1-35 ms:

- ``api_alerts_status_severity_ts`` on (status, severity, ts): status and minimum-severity filters,
  counted from the index alone;
- ``api_alerts_severity_name_ts`` on (severity_name, ts): severity filters and the severity sort;
- ``api_alerts_ts_search`` on (ts, search): text search scans this narrow index instead of the rows.

``ensure_read_indexes`` adds the missing ones (``CREATE INDEX IF NOT EXISTS``: named apart from the
store's, so its migrations never meet them) and refreshes the planner's statistics (``ANALYZE``,
about 0.1 s per 100,000 alerts). ``icswatch serve`` runs it in the background at start when
``api.read_indexes`` is set (the default). The right home of these indexes is a migration of the store
itself; once it has one, this module goes.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path

log = logging.getLogger(__name__)

READ_INDEXES = (
    ("api_alerts_status_severity_ts", "alerts(status, severity, ts)"),
    ("api_alerts_severity_name_ts", "alerts(severity_name, ts)"),
    ("api_alerts_ts_search", "alerts(ts, search)"),
)


def ensure_read_indexes(path: str | Path, timeout: float = 60.0) -> list[str]:
    """Create the missing read indexes and refresh statistics; the names created. Never raises."""
    if str(path) == ":memory:" or not Path(path).exists():
        return []
    created: list[str] = []
    try:
        con = sqlite3.connect(str(path), timeout=timeout, isolation_level=None)
        try:
            con.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
            if not con.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alerts'").fetchone():
                return []
            have = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
            for name, target in READ_INDEXES:
                if name in have:
                    continue
                t = time.perf_counter()
                con.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {target}")
                created.append(name)
                log.info("alert store: created read index %s in %.1f s", name, time.perf_counter() - t)
            # Full statistics: approximate ones (analysis_limit) make every index look alike to the planner,
            # which then sorts thousands of large rows. 0.1 s per 100,000 alerts.
            con.execute("ANALYZE")
        finally:
            con.close()
    except sqlite3.Error as exc:
        log.warning("alert store: could not add the API's read indexes (searches stay slower): %s", exc)
    return created
