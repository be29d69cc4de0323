"""/api/v1/incidents: alerts grouped by asset and time window, graded on the four national levels
(alerts/incidents.py). List, detail with its alerts, a timeline (alerts and the analysts' actions in
time order), the status workflow, assignment and comments, and the mark for reporting to the
province (queued in the linkage outbox when linkage is enabled)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Query, Request

from alerts.records import iso_time
from alerts.store import INCIDENT_SORTS, AlertQuery, IncidentQuery
from api.enterprise import auth
from api.enterprise.auth import Principal
from api.enterprise.errors import not_found
from api.enterprise.models import (
    AssignIn,
    CommentIn,
    IncidentAction,
    IncidentDetail,
    IncidentPage,
    IncidentStatusIn,
    ReportIn,
    ReportOut,
    Severity,
    Status,
    Timeline,
)
from api.enterprise.routers.deps import ID_PATTERN, DatasetQuery, ctx, errors, threaded
from api.enterprise.views import alert_summary, check_transition, epoch, incident_summary

router = APIRouter(prefix="/api/v1/incidents", tags=["incidents"])
IncidentId = Annotated[str, Path(pattern=ID_PATTERN, description="the incident's id")]
MAX_INCIDENT_ALERTS = 500


def _summaries(c: Any, dataset: str, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ids = [str(((d.get("icswatch") or {}).get("incident") or {}).get("id") or "") for d in docs]
    notes = c.state.notes(dataset, "incident", ids)
    return [incident_summary(d, notes.get(i), c.state.incident_mark(dataset, i) is not None) for d, i in zip(docs, ids)]


@router.get("", response_model=IncidentPage, summary="Search incidents", responses=errors(400, 404, 409))
async def list_incidents(
    request: Request,
    start: datetime | None = Query(None, description="incidents still active at or after this time"),
    end: datetime | None = Query(None, description="incidents that started before this time"),
    level: list[Annotated[int, Query(ge=1, le=4)]] = Query([], description="national levels: 1 特别重大 .. 4 一般"),
    min_severity: Severity | None = Query(None),
    asset: list[Annotated[str, Query(max_length=64)]] = Query([]),
    status: list[Status] = Query([]),
    technique: list[Annotated[str, Query(max_length=20)]] = Query([]),
    q: str | None = Query(None, max_length=200),
    sort: str = Query("-last_ts", pattern="^-?(last_ts|first_ts|severity)$", description=f"one of {', '.join(INCIDENT_SORTS)}"),
    limit: int = Query(50, ge=1, le=500),
    cursor: str | None = Query(None, max_length=1000),
    dataset: str = DatasetQuery,
    _: Principal = Depends(auth.viewer),
) -> dict[str, Any]:
    c = ctx(request)
    query = IncidentQuery(
        start=epoch(start), end=epoch(end), levels=level, min_severity=min_severity, assets=asset, statuses=status,
        techniques=technique, text=q or None, sort=sort, limit=limit, cursor=cursor,
    )
    store = c.datasets.store(dataset)
    page = await threaded(store.search_incidents, query)
    items = await threaded(_summaries, c, dataset, page.items)
    return {"items": items, "next_cursor": page.next_cursor, "total": page.total, "dataset": dataset}


def _incident_alerts(store: Any, incident_id: str) -> list[dict[str, Any]]:
    page = store.search_alerts(AlertQuery(incident_id=incident_id, sort="ts", limit=MAX_INCIDENT_ALERTS))
    return page.items


def _detail(c: Any, dataset: str, incident_id: str) -> dict[str, Any]:
    store = c.datasets.store(dataset)
    doc = store.get_incident(incident_id)
    if doc is None:
        raise not_found("incident", incident_id)
    mark = c.state.incident_mark(dataset, incident_id)
    out = incident_summary(doc, c.state.notes(dataset, "incident", [incident_id]).get(incident_id), mark is not None)
    docs = _incident_alerts(store, incident_id)
    notes = c.state.notes(dataset, "alert", [str((d.get("event") or {}).get("id")) for d in docs])
    out["alerts"] = [alert_summary(d, notes.get(str((d.get("event") or {}).get("id")))) for d in docs]
    out["activity"] = c.state.activity(dataset, "incident", incident_id)
    out["report"] = mark
    out["ecs"] = doc
    return out


@router.get("/{incident_id}", response_model=IncidentDetail, summary="One incident with its alerts", responses=errors(404, 409))
async def get_incident(request: Request, incident_id: IncidentId, dataset: str = DatasetQuery,
                       _: Principal = Depends(auth.viewer)) -> dict[str, Any]:
    return await threaded(_detail, ctx(request), dataset, incident_id)


def _timeline(c: Any, dataset: str, incident_id: str) -> dict[str, Any]:
    store = c.datasets.store(dataset)
    if store.get_incident(incident_id) is None:
        raise not_found("incident", incident_id)
    entries = []
    for d in _incident_alerts(store, incident_id):
        s = alert_summary(d)
        entries.append(
            {
                "ts": s["ts"], "time": s["timestamp"], "kind": "alert", "title": f"{s['rule_id']}: {s['rule_name']}",
                "severity": s["severity"], "ref": s["id"],
                "detail": {"src": s["src"], "dst": s["dst"], "protocol": s["protocol"], "techniques": s["techniques"],
                           "evidence": s["evidence_summary"]},
            }
        )
    for a in c.state.activity(dataset, "incident", incident_id):
        entries.append(
            {"ts": a["ts"], "time": iso_time(a["ts"]), "kind": "activity", "title": a["action"], "actor": a["actor"],
             "detail": a["detail"]}
        )
    entries.sort(key=lambda e: (e["ts"], e["kind"]))
    return {"incident_id": incident_id, "entries": entries}


@router.get("/{incident_id}/timeline", response_model=Timeline,
            summary="Its alerts (capture time) and the analysts' actions (wall-clock time), in time order",
            responses=errors(404, 409))
async def timeline(request: Request, incident_id: IncidentId, dataset: str = DatasetQuery,
                   _: Principal = Depends(auth.viewer)) -> dict[str, Any]:
    return await threaded(_timeline, ctx(request), dataset, incident_id)


def _change(c: Any, dataset: str, incident_id: str, who: Principal, action: str, detail: dict[str, Any], *,
            status: str | None = None, assignee: str | None = None, comment: bool = False) -> dict[str, Any]:
    store = c.datasets.store(dataset)
    doc = store.get_incident(incident_id)
    if doc is None:
        raise not_found("incident", incident_id)
    current = ((doc.get("icswatch") or {}).get("incident") or {}).get("status") or "open"
    if status is not None:
        check_transition("incident", incident_id, current, status)
        store.set_incident_status(incident_id, status)
        detail = {"from": current, "to": status, **detail}
    act = c.state.record(dataset, "incident", incident_id, who.actor, action, detail, assignee=assignee, comment=comment)
    doc = store.get_incident(incident_id) or doc
    mark = c.state.incident_mark(dataset, incident_id)
    inc = incident_summary(doc, c.state.notes(dataset, "incident", [incident_id]).get(incident_id), mark is not None)
    return {"incident": inc, "activity": act}


@router.post("/{incident_id}/status", response_model=IncidentAction,
             summary="Move through the workflow: open -> acknowledged -> closed | false_positive (and back to open)",
             responses=errors(404, 409))
async def set_status(request: Request, incident_id: IncidentId, body: IncidentStatusIn, dataset: str = DatasetQuery,
                     who: Principal = Depends(auth.analyst)) -> dict[str, Any]:
    detail = {"comment": body.comment} if body.comment else {}
    return await threaded(_change, ctx(request), dataset, incident_id, who, "status", detail, status=body.status)


@router.post("/{incident_id}/assign", response_model=IncidentAction, summary="Assign (null to unassign)", responses=errors(404, 409))
async def assign(request: Request, incident_id: IncidentId, body: AssignIn, dataset: str = DatasetQuery,
                 who: Principal = Depends(auth.analyst)) -> dict[str, Any]:
    return await threaded(_change, ctx(request), dataset, incident_id, who, "assign", {"assignee": body.assignee},
                          assignee=body.assignee or "")


@router.post("/{incident_id}/comments", response_model=IncidentAction, status_code=201, summary="Add a comment",
             responses=errors(404, 409))
async def comment(request: Request, incident_id: IncidentId, body: CommentIn, dataset: str = DatasetQuery,
                  who: Principal = Depends(auth.analyst)) -> dict[str, Any]:
    return await threaded(_change, ctx(request), dataset, incident_id, who, "comment", {"text": body.text}, comment=True)


def _report(c: Any, dataset: str, incident_id: str, who: Principal, note: str) -> dict[str, Any]:
    store = c.datasets.store(dataset)
    doc = store.get_incident(incident_id)
    if doc is None:
        raise not_found("incident", incident_id)
    if dataset != "live":
        queued, message = 0, "recorded only: incidents of a replay job's dataset are never sent to the province"
    else:
        # The alerts go with the first mark only: OutboxWriter.mark adds them to the report's per-rule
        # counts each time it is given them, so a second mark would count them twice.
        first = c.state.incident_mark(dataset, incident_id) is None
        queued, message = c.reporter.mark(doc, _incident_alerts(store, incident_id) if first else [])
    mark = c.state.mark_incident(dataset, incident_id, who.actor, queued, note)
    c.state.record(dataset, "incident", incident_id, who.actor, "report", {"queued": queued, "note": note, "message": message})
    return {"incident_id": incident_id, "linkage_enabled": c.reporter.enabled, "queued": queued, "message": message, "mark": mark}


@router.post("/{incident_id}/report", response_model=ReportOut,
             summary="Mark for reporting to the province (queued in the linkage outbox when linkage is enabled)",
             responses=errors(404, 409))
async def report(request: Request, incident_id: IncidentId, body: ReportIn | None = Body(None), dataset: str = DatasetQuery,
                 who: Principal = Depends(auth.analyst)) -> dict[str, Any]:
    return await threaded(_report, ctx(request), dataset, incident_id, who, body.note if body else "")
