"""The read/write contract every alert store honours: SQLite today (alerts/sqlite_store.py), Elasticsearch
next. The enterprise API is written against ``AlertStore`` only.

Writes come in ``WriteBatch``es (one transaction / one bulk request each) and are idempotent: alert
and incident ids are deterministic, so writing the same batch twice (a retry, a replay restarted
after a crash) stores each alert once. Reads return ECS documents (``Alert.to_ecs()`` shape) whose
``icswatch.status`` reflects the analyst's last change.

Queries use keyset pagination: a page carries ``next_cursor`` (opaque text); passing it back in the
query gives the next page, stable while new alerts arrive.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from alerts.records import Alert, Incident, Observer
from sensor.events import IcsEvent

ALERT_SORTS = ("-ts", "ts", "-severity", "severity")
INCIDENT_SORTS = ("-last_ts", "last_ts", "-severity", "severity", "first_ts", "-first_ts")
COUNT_BY = ("severity", "rule", "technique", "asset", "protocol", "status", "src", "dst")
EVENT_ROLES = ("evidence", "before", "after")


@dataclass
class AlertQuery:
    """Filters are ANDed; each list is an OR of its values. Times are epoch seconds (capture time)."""

    start: float | None = None  # ts >= start
    end: float | None = None  # ts < end
    severities: Sequence[str] = ()  # names: low / medium / high / critical
    min_severity: str | None = None  # at least this severity
    rule_ids: Sequence[str] = ()
    techniques: Sequence[str] = ()
    assets: Sequence[str] = ()
    ips: Sequence[str] = ()  # source or destination
    protocols: Sequence[str] = ()
    statuses: Sequence[str] = ()
    incident_id: str | None = None
    text: str | None = None  # case-insensitive substring of rule id/name/description, addresses, techniques
    sort: str = "-ts"  # one of ALERT_SORTS
    limit: int = 50
    cursor: str | None = None


@dataclass
class IncidentQuery:
    start: float | None = None  # last_ts >= start
    end: float | None = None  # first_ts < end
    levels: Sequence[int] = ()  # 1 (特别重大) .. 4 (一般)
    min_severity: str | None = None
    assets: Sequence[str] = ()
    statuses: Sequence[str] = ()
    techniques: Sequence[str] = ()
    text: str | None = None
    sort: str = "-last_ts"
    limit: int = 50
    cursor: str | None = None


@dataclass
class Page:
    items: list[dict[str, Any]]
    next_cursor: str | None
    total: int


@dataclass
class CountBucket:
    key: str
    count: int
    bucket: float | None = None  # start of the time bucket when an interval was asked for


@dataclass
class WriteBatch:
    """What the runtime hands to every output at once."""

    alerts: list[Alert] = field(default_factory=list)
    incidents: list[Incident] = field(default_factory=list)  # new or changed incidents (upserted)
    events: list[tuple[str, str, int, IcsEvent]] = field(default_factory=list)  # (alert id, role, seq, event)
    observer: Observer = field(default_factory=Observer)
    _docs: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)

    def doc(self, alert: Alert) -> dict[str, Any]:
        """The alert's ECS document, built once per batch whatever the number of outputs."""
        d = self._docs.get(alert.id)
        if d is None:
            d = self._docs[alert.id] = alert.to_ecs(self.observer)
        return d

    def __len__(self) -> int:
        return len(self.alerts) + len(self.incidents) + len(self.events)


@runtime_checkable
class AlertOutput(Protocol):
    """Anything alerts are written to (a store, a JSON Lines file, a forwarder)."""

    name: str

    def write(self, batch: WriteBatch) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class AlertStore(AlertOutput, Protocol):
    """An output that can also be queried: the enterprise API's only view of the data."""

    def get_alert(self, alert_id: str) -> dict[str, Any] | None: ...

    def search_alerts(self, query: AlertQuery) -> Page: ...

    def count_alerts(self, query: AlertQuery) -> int: ...

    def alert_counts(self, by: str, query: AlertQuery | None = None, interval: float | None = None) -> list[CountBucket]:
        """Counts grouped by one of COUNT_BY, optionally per time bucket of ``interval`` seconds."""
        ...

    def alert_events(self, alert_id: str) -> list[dict[str, Any]]:
        """The events stored with an alert: evidence, then the flow's events before and after it."""
        ...

    def set_alert_status(self, alert_id: str, status: str) -> bool: ...

    def get_incident(self, incident_id: str) -> dict[str, Any] | None: ...

    def search_incidents(self, query: IncidentQuery) -> Page: ...

    def set_incident_status(self, incident_id: str, status: str) -> bool: ...
