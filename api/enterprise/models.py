"""Request and response bodies of the enterprise API (the OpenAPI schema is generated from these).

Request bodies forbid unknown keys (a typo is a 422 naming the key, not a silently ignored field).
Responses are the API's own shapes, flattened from the stores' ECS documents for the table and the
dashboard; an alert's detail also carries the ECS document itself (``ecs``) for SIEM users.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Severity = Literal["low", "medium", "high", "critical"]
Status = Literal["open", "acknowledged", "closed", "false_positive"]
Role = Literal["viewer", "analyst", "admin"]
JobState = Literal["queued", "running", "done", "failed", "cancelled"]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: list[dict[str, Any]] | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


# --- alerts ------------------------------------------------------------------------------------------


class Activity(BaseModel):
    seq: int
    ts: float
    actor: str
    action: str
    detail: dict[str, Any] = Field(default_factory=dict)


class AlertSummary(BaseModel):
    id: str
    timestamp: str = Field(description="ISO 8601 UTC capture time of the event that completed the alert")
    ts: float = Field(description="the same as epoch seconds")
    severity: Severity
    severity_score: int
    rule_id: str
    rule_name: str
    detector: str
    techniques: list[str]
    technique_names: list[str]
    tactics: list[str]
    protocol: str
    transport: str
    src: str
    sport: int
    dst: str
    dport: int
    asset: str
    status: Status
    incident_id: str | None
    count: int = Field(description="events that made the rule fire")
    evidence_summary: str = Field(description="the first evidence events in one line (addresses 0-based)")
    assignee: str | None = None
    comments: int = 0


class AlertPage(BaseModel):
    items: list[AlertSummary]
    next_cursor: str | None = Field(description="pass it back as cursor= for the next page; null on the last page")
    total: int = Field(description="alerts matching the filters (all pages)")
    dataset: str


class AlertEvent(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["before", "evidence", "after"]
    ts: float
    protocol: str
    function_name: str


class AlertDetail(AlertSummary):
    description: str
    references: list[str]
    close_reason: str | None = None
    events: list[AlertEvent] = Field(description="the flow's events before the alert, its evidence, and the events after it")
    activity: list[Activity]
    ecs: dict[str, Any] = Field(description="the stored ECS document")


class NoteIn(_In):
    comment: str | None = Field(None, max_length=4000, description="optional comment recorded with the change")


class AssignIn(_In):
    assignee: str | None = Field(None, max_length=100, description="who works on it; null to unassign")


class CommentIn(_In):
    text: str = Field(min_length=1, max_length=4000)


class CloseIn(_In):
    reason: str = Field(min_length=1, max_length=2000, description="why it is closed (kept with the alert)")


class FalsePositiveIn(_In):
    reason: str = Field(min_length=1, max_length=2000, description="why it is a false positive")
    action: Literal["suppress", "baseline", "none"] = Field(
        "suppress",
        description="suppress: a standing suppression of this rule for these endpoints; baseline: accept the "
        "deviation into the configured baseline (baseline alerts only); none: only mark it",
    )
    scope: Literal["rule", "source", "pair"] = Field(
        "pair", description="what the suppression covers: the rule everywhere, from this source, or this source-destination pair"
    )
    days: float | None = Field(None, gt=0, le=3650, description="the suppression lapses after this many days; null = for good")


class AlertAction(BaseModel):
    alert: AlertSummary
    activity: Activity
    suppression: dict[str, Any] | None = None
    baseline: dict[str, Any] | None = None


# --- incidents ---------------------------------------------------------------------------------------


class IncidentSummary(BaseModel):
    id: str
    asset: str
    level: int = Field(description="national level: 1 特别重大 .. 4 一般")
    level_name: str
    level_reason: str
    severity: Severity
    max_alert_severity: str
    status: Status
    alert_count: int
    first: str
    last: str
    first_ts: float
    last_ts: float
    techniques: list[str]
    tactics: list[str]
    rule_ids: list[str]
    protocols: list[str]
    sources: list[str]
    critical_asset: bool
    assignee: str | None = None
    comments: int = 0
    reported: bool = Field(False, description="marked for reporting to the province")


class IncidentPage(BaseModel):
    items: list[IncidentSummary]
    next_cursor: str | None
    total: int
    dataset: str


class IncidentDetail(IncidentSummary):
    alerts: list[AlertSummary] = Field(description="its alerts, oldest first (at most 500)")
    activity: list[Activity]
    report: dict[str, Any] | None
    ecs: dict[str, Any]


class TimelineEntry(BaseModel):
    ts: float
    time: str
    kind: Literal["alert", "activity"]
    title: str
    severity: str | None = None
    actor: str | None = None
    ref: str | None = None
    detail: dict[str, Any] = Field(default_factory=dict)


class Timeline(BaseModel):
    incident_id: str
    entries: list[TimelineEntry]


class IncidentStatusIn(_In):
    status: Status
    comment: str | None = Field(None, max_length=4000)


class IncidentAction(BaseModel):
    incident: IncidentSummary
    activity: Activity


class ReportIn(_In):
    note: str = Field("", max_length=2000, description="why it is reported (kept in the trail)")


class ReportOut(BaseModel):
    incident_id: str
    linkage_enabled: bool
    queued: int = Field(description="outbox entries queued by this request")
    message: str
    mark: dict[str, Any]


# --- assets ------------------------------------------------------------------------------------------


class AssetRecord(BaseModel):
    address: str
    ips: list[str]
    mac: str | None
    mac_vendor: str | None
    vendor: str | None
    product: str | None
    firmware: str | None
    serial: str | None
    role: str
    role_reason: str
    client_protocols: dict[str, int]
    server_protocols: dict[str, int]
    first_seen: float
    last_seen: float
    events: int
    peer_count: int
    units: list[int]
    alerts: int = Field(0, description="alerts whose asset is this address")


class AssetPage(BaseModel):
    items: list[AssetRecord]
    total: int
    offset: int
    dataset: str


class Talker(BaseModel):
    address: str
    role: str | None
    protocols: list[str]
    direction: Literal["client", "server", "both", "unknown"] = Field(description="what this asset is towards the peer")


class AssetDetail(AssetRecord):
    identity: dict[str, dict[str, Any]]
    initiated: dict[str, int]
    engineering_ops: dict[str, int]
    talkers: list[Talker]
    alerts_by_rule: list[dict[str, Any]]
    recent_alerts: list[AlertSummary]


class GraphNode(BaseModel):
    id: str
    role: str
    vendor: str | None
    product: str | None
    protocols: list[str]
    events: int
    alerts: int


class GraphEdge(BaseModel):
    source: str
    target: str
    protocol: str
    alerts: int


class Graph(BaseModel):
    nodes: list[GraphNode]
    edges: list[GraphEdge]
    truncated: bool
    dataset: str


# --- baseline ----------------------------------------------------------------------------------------


class BaselineOut(BaseModel):
    path: str
    version: int
    learned: list[dict[str, Any]]
    settings: dict[str, Any]
    truncated: dict[str, int]
    counts: dict[str, int]
    assets: list[dict[str, Any]]
    pairs: list[dict[str, Any]]


class AcceptedOut(BaseModel):
    items: list[dict[str, Any]]
    total: int


# --- rules -------------------------------------------------------------------------------------------


class RuleInfo(BaseModel):
    id: str
    title: str
    description: str
    severity: Severity
    techniques: list[str]
    technique_names: list[str]
    tactics: list[str]
    protocols: list[str]
    enabled: bool
    override: dict[str, Any] | None
    file: str
    alerts: int = 0


class RuleList(BaseModel):
    items: list[RuleInfo]
    total: int
    enabled: int
    loaded_at: float
    problems: list[str]


class RuleSwitchIn(_In):
    enabled: bool


class ReloadOut(BaseModel):
    rules: int
    enabled: int
    files: int
    problems: list[str]
    loaded_at: float


class SuppressionIn(_In):
    rule: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._*?\[\]-]+$", description="rule id or glob")
    src: str | None = Field(None, max_length=64, description="IP, CIDR or @list")
    dst: str | None = Field(None, max_length=64, description="IP, CIDR or @list")
    days: float | None = Field(None, gt=0, le=3650)
    reason: str = Field(min_length=1, max_length=2000)


class SuppressionOut(BaseModel):
    id: str
    rule: str
    src: str | None
    dst: str | None
    until: float | None
    reason: str
    alert_id: str | None
    created_at: float
    created_by: str


# --- stats, sensors, health ----------------------------------------------------------------------------------


class Bucket(BaseModel):
    key: str
    count: int
    bucket: float | None = Field(None, description="start of the time bucket (epoch seconds) when an interval was asked")


class CountsOut(BaseModel):
    by: str
    interval: float | None
    buckets: list[Bucket]
    dataset: str


class SummaryOut(BaseModel):
    dataset: str
    alerts: int
    by_severity: dict[str, int]
    by_status: dict[str, int]
    incidents: int
    open_incidents: int
    assets: int
    first_alert: float | None
    last_alert: float | None


class TalkersOut(BaseModel):
    dataset: str
    sources: list[Bucket]
    destinations: list[Bucket]
    busiest_assets: list[dict[str, Any]]


class SensorStatus(BaseModel):
    name: str
    status: Literal["running", "stale", "missing", "unreadable"]
    updated: str | None
    age_seconds: float | None
    uptime: float | None
    processed: int | None
    events: int | None
    alerts: int | None
    dropped: int | None
    counters: dict[str, Any]


class SensorList(BaseModel):
    items: list[SensorStatus]


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    version: str
    time: str
    checks: dict[str, str]


class Me(BaseModel):
    token_id: str
    name: str
    role: Role


# --- jobs --------------------------------------------------------------------------------------------


class Job(BaseModel):
    id: str
    state: JobState
    label: str
    created_at: float
    created_by: str
    started_at: float | None
    finished_at: float | None
    size: int
    sha256: str
    format: str
    packets: int
    bytes: int
    percent: float | None = Field(description="estimated share of the file processed (null while unknown: gzip)")
    events: int
    alerts: int
    error: str | None
    warning: str | None
    dataset: str = Field(description="dataset= value to browse its alerts, incidents and assets")


class JobList(BaseModel):
    items: list[Job]


# --- tokens and audit ------------------------------------------------------------------------------------


class TokenIn(_In):
    name: str = Field(min_length=1, max_length=100)
    role: Role
    days: float | None = Field(None, gt=0, le=3650, description="expires after this many days; null = never")


class TokenInfo(BaseModel):
    id: str
    name: str
    role: Role
    created_at: float
    created_by: str
    expires_at: float | None
    revoked_at: float | None
    last_used_at: float | None


class TokenIssued(TokenInfo):
    token: str = Field(description="shown once: only its SHA-256 is kept")


class TokenList(BaseModel):
    items: list[TokenInfo]


class AuditEntry(BaseModel):
    seq: int
    ts: float
    actor: str
    role: str
    method: str
    path: str
    action: str
    status: int
    detail: str
    client: str


class AuditPage(BaseModel):
    items: list[AuditEntry]
    next_before: int | None
