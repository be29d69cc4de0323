"""The platform's storage contract. ``SQLiteProvinceStore`` (api/province/sqlite_store.py) is the
default; an Elasticsearch implementation plugs in behind the same Protocol.

The contract is split by concern so a backend can take the parts it is good at:

- ``RegistryStore`` (enterprises, credentials, tokens) and ``NonceStore`` are small, relational and
  read on every request: keep them in SQLite (or any SQL database) even when incidents live in
  Elasticsearch.
- ``IncidentStore`` (reports, their history, the situational aggregates), ``AdvisoryStore`` and
  ``AuditStore`` grow with the region and the years: these are what an Elasticsearch backend
  implements (documents keyed ``<enterprise_id>/<incident_id>``, ``if_seq_no`` for the
  compare-and-set of ``apply_update``, terms/date_histogram aggregations for ``situation``).

Rules every implementation keeps:

- Business rules (deadlines, lateness, merging an update, who may see what) live in
  api/province/service.py, not here: a store persists records it is handed and answers queries.
- ``insert_incident`` is atomic insert-if-absent on (enterprise_id, incident_id) and returns the
  stored record when one exists: that is what makes intake idempotent.
- ``apply_update`` is atomic compare-and-set on the record's ``revision`` and refuses an
  ``update_id`` already applied to that incident (returns "duplicate").
- ``use_nonce`` is atomic insert-if-absent on (key_id, nonce): False means replay.
- ``intake_batch`` is the report intake's group commit (api/province/intake.py): the nonces and the
  new incidents of several concurrent requests in one commit. It keeps the two rules above for each
  item, in order (an item whose nonce was used before writes nothing), and when it returns every
  item it answers for is durable as the store defines it: the platform acknowledges only then.
- Queries scoped to an enterprise never return another's rows (the service passes the scope).
- Times are epoch seconds (UTC); cursors are opaque strings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, Sequence, runtime_checkable


class StoreConflict(Exception):
    """A record with that key exists (registry inserts)."""


class StoreError(Exception):
    """The store cannot be used as asked (newer schema, bad cursor); the message says why."""


@dataclass
class Enterprise:
    id: str
    name: str
    uscc: str
    city: str
    industry: str
    security_class: int
    cii: bool
    contacts: list[dict[str, Any]] = field(default_factory=list)
    active: bool = True
    created_at: float = 0.0
    updated_at: float = 0.0


@dataclass
class Credential:
    key_id: str
    enterprise_id: str
    secret_box: bytes  # the secret encrypted with the platform master key (api/province/keys.py)
    created_at: float
    expires_at: float | None = None  # set when rotated: the old key works until then
    revoked_at: float | None = None
    last_used_at: float | None = None
    note: str = ""


@dataclass
class Token:
    token_id: str
    token_hash: str  # SHA-256 of the token: tokens are random 256-bit strings, a slow hash adds nothing
    name: str
    role: str  # analyst | admin
    created_at: float
    expires_at: float | None = None
    revoked_at: float | None = None
    last_used_at: float | None = None


@dataclass
class IncidentRecord:
    """One reported incident as stored: the current report (``doc``) and what the platform derived."""

    enterprise_id: str
    incident_id: str
    doc: dict[str, Any]  # the current report (IncidentReport shape, updates merged)
    level: int
    status: str
    city: str  # the enterprise's, at intake (aggregates stay true when a registry entry changes)
    industry: str
    cii: bool
    discovered_at: float
    received_at: float
    updated_at: float
    deadline: float | None  # None: not mandatory (level 4)
    late: bool
    reportable_at: float | None  # when the platform first learned a level that must be reported
    revision: int = 1
    protocols: list[str] = field(default_factory=list)
    techniques: list[str] = field(default_factory=list)
    asset_types: list[str] = field(default_factory=list)


@dataclass
class UpdateRecord:
    update_id: str
    received_at: float
    actor: str
    changes: dict[str, Any]
    revision: int  # the incident's revision after this update


@dataclass
class Advisory:
    id: str
    title: str
    body: str
    kind: str
    severity: str
    targets: dict[str, Any]
    issued_by: str
    issued_at: float
    expires_at: float | None = None
    techniques: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)


@dataclass
class Recipient:
    advisory_id: str
    enterprise_id: str
    delivered_at: float | None = None  # first fetched by the enterprise
    acked_at: float | None = None
    ack_note: str = ""
    acked_by: str = ""


@dataclass
class AuditEntry:
    ts: float
    actor: str  # key id, token id, or "anonymous"
    role: str  # enterprise / analyst / admin / none
    enterprise_id: str
    method: str
    path: str
    action: str  # route template, e.g. "POST /api/v1/incidents"
    resource: str  # what was touched, e.g. "incident:E1/abc"
    status: int
    result: str  # ok | denied | invalid | throttled | error
    detail: str  # error code or a short note, never a secret
    client: str  # client address (as the reverse proxy reported it when trusted)
    request_id: str


@dataclass
class IncidentFilter:
    enterprise_id: str | None = None  # the scope: set for enterprise principals
    cities: Sequence[str] = ()
    industries: Sequence[str] = ()
    levels: Sequence[int] = ()
    statuses: Sequence[str] = ()
    late: bool | None = None
    since: float | None = None  # received_at >= since
    until: float | None = None  # received_at < until
    text: str | None = None
    limit: int = 50
    cursor: str | None = None


@dataclass
class SituationQuery:
    since: float | None = None  # discovered_at >= since
    until: float | None = None
    interval: float = 86400.0  # timeline bucket (seconds)
    cities: Sequence[str] = ()
    industries: Sequence[str] = ()
    top: int = 10


@dataclass
class AuditFilter:
    actor: str | None = None
    enterprise_id: str | None = None
    result: str | None = None
    action: str | None = None
    since: float | None = None
    until: float | None = None
    limit: int = 100
    cursor: str | None = None


@dataclass
class Page:
    items: list[Any]
    next_cursor: str | None
    total: int


UpdateOutcome = Literal["applied", "duplicate", "conflict", "missing"]


@dataclass
class IntakeItem:
    """One signed report whose signature checked out: the nonce to consume and, when the report itself
    was valid, the incident to insert (None: the request is refused, but its nonce is spent all the same,
    as ``use_nonce`` would have spent it)."""

    key_id: str
    nonce: str
    ts: float  # the request's timestamp (the replay cache forgets a nonce once it is out of the window)
    record: IncidentRecord | None


@dataclass
class IntakeOutcome:
    fresh: bool  # False: the nonce was used before (a replay): nothing was written for this item
    created: bool = False  # a new incident (False with ``stored`` set: the incident was already there)
    stored: IncidentRecord | None = None  # the incident as stored after this item
    error: str = ""  # the store could not write this item (ES refused it): not acknowledged


@runtime_checkable
class RegistryStore(Protocol):
    def add_enterprise(self, e: Enterprise) -> None: ...  # StoreConflict on id or uscc
    def update_enterprise(self, enterprise_id: str, fields: dict[str, Any], now: float) -> Enterprise | None: ...
    def get_enterprise(self, enterprise_id: str) -> Enterprise | None: ...
    def list_enterprises(
        self, city: str | None = None, industry: str | None = None, limit: int = 100, cursor: str | None = None
    ) -> Page: ...
    def match_enterprises(
        self, all_: bool, cities: Sequence[str], industries: Sequence[str], ids: Sequence[str]
    ) -> list[str]: ...
    def add_credential(self, c: Credential) -> None: ...
    def get_credential(self, key_id: str) -> Credential | None: ...
    def credential_and_enterprise(self, key_id: str) -> tuple[Credential, Enterprise | None] | None: ...
    def list_credentials(self, enterprise_id: str) -> list[Credential]: ...
    def set_credential(
        self, key_id: str, *, expires_at: float | None = None, revoked_at: float | None = None
    ) -> bool: ...
    def touch_credential(self, key_id: str, ts: float) -> None: ...
    def add_token(self, t: Token) -> None: ...
    def get_token(self, token_hash: str) -> Token | None: ...
    def list_tokens(self) -> list[Token]: ...
    def revoke_token(self, token_id: str, ts: float) -> bool: ...
    def touch_token(self, token_id: str, ts: float) -> None: ...
    def get_meta(self, key: str) -> str | None: ...
    def set_meta(self, key: str, value: str) -> None: ...


@runtime_checkable
class NonceStore(Protocol):
    def use_nonce(self, key_id: str, nonce: str, ts: float, now: float, window: float) -> bool: ...


@runtime_checkable
class IncidentStore(Protocol):
    def insert_incident(self, rec: IncidentRecord) -> tuple[bool, IncidentRecord]: ...
    def intake_batch(self, items: Sequence[IntakeItem], now: float, window: float) -> list[IntakeOutcome]: ...
    def get_incident(self, enterprise_id: str, incident_id: str) -> IncidentRecord | None: ...
    def find_incident(self, incident_id: str) -> list[IncidentRecord]: ...  # across enterprises (analysts)
    def apply_update(self, rec: IncidentRecord, update: UpdateRecord, expected_revision: int) -> UpdateOutcome: ...
    def incident_history(self, enterprise_id: str, incident_id: str) -> list[UpdateRecord]: ...
    def search_incidents(self, f: IncidentFilter) -> Page: ...
    def situation(self, q: SituationQuery, now: float) -> dict[str, Any]: ...


@runtime_checkable
class AdvisoryStore(Protocol):
    def add_advisory(self, a: Advisory, recipients: Sequence[str]) -> None: ...
    def get_advisory(self, advisory_id: str) -> Advisory | None: ...
    def list_advisories(self, enterprise_id: str | None, limit: int = 100, cursor: str | None = None) -> Page: ...
    def recipient(self, advisory_id: str, enterprise_id: str) -> Recipient | None: ...
    def recipients(self, advisory_id: str) -> list[Recipient]: ...
    def ack_counts(self, advisory_ids: Sequence[str]) -> dict[str, tuple[int, int]]: ...  # id -> (recipients, acked)
    def mark_delivered(self, advisory_ids: Sequence[str], enterprise_id: str, ts: float) -> None: ...
    def ack_advisory(
        self, advisory_id: str, enterprise_id: str, ts: float, note: str, actor: str
    ) -> Recipient | None: ...


@runtime_checkable
class AuditStore(Protocol):
    def write_audit(self, entries: Sequence[AuditEntry]) -> None: ...
    def search_audit(self, f: AuditFilter) -> Page: ...


@runtime_checkable
class ProvinceStore(RegistryStore, NonceStore, IncidentStore, AdvisoryStore, AuditStore, Protocol):
    """Everything the app needs; a backend may compose several objects behind this one.

    ``intake_in_loop``: True when ``intake_batch`` never waits on the network or a disk flush (SQLite
    with ``synchronous=NORMAL``), so the intake may run it on the event loop itself without a thread
    hop; False (Elasticsearch, ``synchronous=FULL``) runs it in the intake's own writer thread."""

    name: str
    intake_in_loop: bool

    def close(self) -> None: ...
