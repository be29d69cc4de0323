"""/api/v1/alerts: search (filters, sort, cursor pages), detail with evidence events, and the analyst's
workflow: acknowledge, reopen, assign, comment, close with a reason, false positive (-> a standing
suppression, or the deviation accepted into the baseline)."""

from __future__ import annotations

import secrets
import time
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Query, Request

from alerts.store import ALERT_SORTS, AlertQuery
from api.enterprise import auth
from api.enterprise.auth import Principal
from api.enterprise.errors import ApiError, not_found
from api.enterprise.models import (
    AlertAction,
    AlertDetail,
    AlertPage,
    AssignIn,
    CloseIn,
    CommentIn,
    FalsePositiveIn,
    NoteIn,
    Severity,
    Status,
)
from api.enterprise.routers.deps import ID_PATTERN, DatasetQuery, ctx, errors, threaded
from api.enterprise.views import alert_summary, check_transition, epoch

router = APIRouter(prefix="/api/v1/alerts", tags=["alerts"])
AlertId = Annotated[str, Path(pattern=ID_PATTERN, description="the alert's id (event.id)")]
MAX_PAGE = 500


def alert_query(
    start: datetime | None = Query(None, description="alerts at or after this time (ISO 8601; UTC without a zone)"),
    end: datetime | None = Query(None, description="alerts before this time"),
    severity: list[Severity] = Query([], description="any of these severities (repeat the parameter)"),
    min_severity: Severity | None = Query(None, description="this severity or graver"),
    rule: list[Annotated[str, Query(max_length=100)]] = Query([], description="rule ids"),
    technique: list[Annotated[str, Query(max_length=20)]] = Query([], description="ATT&CK for ICS technique ids, e.g. T0855"),
    asset: list[Annotated[str, Query(max_length=64)]] = Query([], description="the asset the alert is about"),
    ip: list[Annotated[str, Query(max_length=64)]] = Query([], description="source or destination address"),
    protocol: list[Annotated[str, Query(max_length=32)]] = Query([], description="modbus, dnp3, iec104, s7comm, ..."),
    status: list[Status] = Query([], description="workflow status"),
    incident: str | None = Query(None, max_length=128, description="alerts of this incident"),
    q: str | None = Query(None, max_length=200, description="text in the rule id/name/description, addresses, techniques"),
) -> AlertQuery:
    return AlertQuery(
        start=epoch(start), end=epoch(end), severities=severity, min_severity=min_severity, rule_ids=rule, techniques=technique,
        assets=asset, ips=ip, protocols=protocol, statuses=status, incident_id=incident, text=q or None,
    )


def _summaries(c: Any, dataset: str, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ids = [str((d.get("event") or {}).get("id") or "") for d in docs]
    notes = c.state.notes(dataset, "alert", ids)
    return [alert_summary(d, notes.get(i)) for d, i in zip(docs, ids)]


@router.get("", response_model=AlertPage, summary="Search alerts", responses=errors(400, 404, 409))
async def list_alerts(
    request: Request,
    query: AlertQuery = Depends(alert_query),
    sort: str = Query("-ts", pattern="^(-ts|ts|-severity|severity)$", description=f"one of {', '.join(ALERT_SORTS)}"),
    limit: int = Query(50, ge=1, le=MAX_PAGE),
    cursor: str | None = Query(None, max_length=1000, description="next_cursor of the previous page"),
    dataset: str = DatasetQuery,
    _: Principal = Depends(auth.viewer),
) -> dict[str, Any]:
    c = ctx(request)
    query.sort, query.limit, query.cursor = sort, limit, cursor
    store = c.datasets.store(dataset)
    page = await threaded(store.search_alerts, query)
    items = await threaded(_summaries, c, dataset, page.items)
    return {"items": items, "next_cursor": page.next_cursor, "total": page.total, "dataset": dataset}


def _detail(c: Any, dataset: str, alert_id: str) -> dict[str, Any]:
    store = c.datasets.store(dataset)
    doc = store.get_alert(alert_id)
    if doc is None:
        raise not_found("alert", alert_id)
    note = c.state.notes(dataset, "alert", [alert_id]).get(alert_id) or {}
    out = alert_summary(doc, note)
    rule = doc.get("rule") or {}
    out["description"] = str(rule.get("description") or "")
    out["references"] = [str(r) for r in rule.get("references") or ([rule["reference"]] if rule.get("reference") else [])]
    out["close_reason"] = note.get("reason")
    events = []
    for e in store.alert_events(alert_id):
        e = dict(e)
        e.setdefault("ts", 0.0)
        e["protocol"] = str(e.get("protocol") or "")
        e["function_name"] = str(e.get("function_name") or e.get("function") or "")
        events.append(e)
    out["events"] = events
    out["activity"] = c.state.activity(dataset, "alert", alert_id)
    out["ecs"] = doc
    return out


@router.get("/{alert_id}", response_model=AlertDetail, summary="One alert with its evidence and context events",
            responses=errors(404, 409))
async def get_alert(request: Request, alert_id: AlertId, dataset: str = DatasetQuery, _: Principal = Depends(auth.viewer)) -> dict[str, Any]:
    return await threaded(_detail, ctx(request), dataset, alert_id)


def _change(c: Any, dataset: str, alert_id: str, who: Principal, action: str, detail: dict[str, Any], *,
            status: str | None = None, assignee: str | None = None, reason: str | None = None, comment: bool = False,
            allow_same: bool = False) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    store = c.datasets.store(dataset)
    doc = store.get_alert(alert_id)
    if doc is None:
        raise not_found("alert", alert_id)
    current = (doc.get("icswatch") or {}).get("status") or "open"
    if status is not None and not (allow_same and status == current):
        check_transition("alert", alert_id, current, status)
    if status is not None and status != current:
        store.set_alert_status(alert_id, status)
        detail = {"from": current, "to": status, **detail}
    act = c.state.record(dataset, "alert", alert_id, who.actor, action, detail, assignee=assignee, reason=reason, comment=comment)
    doc = store.get_alert(alert_id) or doc
    note = c.state.notes(dataset, "alert", [alert_id]).get(alert_id)
    return alert_summary(doc, note), act, doc


def _note(body: NoteIn | None) -> dict[str, Any]:
    return {"comment": body.comment} if body is not None and body.comment else {}


@router.post("/{alert_id}/acknowledge", response_model=AlertAction, summary="Acknowledge (someone is looking at it)",
             responses=errors(404, 409))
async def acknowledge(request: Request, alert_id: AlertId, body: NoteIn | None = Body(None), dataset: str = DatasetQuery,
                      who: Principal = Depends(auth.analyst)) -> dict[str, Any]:
    alert, act, _ = await threaded(_change, ctx(request), dataset, alert_id, who, "acknowledge", _note(body), status="acknowledged")
    return {"alert": alert, "activity": act}


@router.post("/{alert_id}/reopen", response_model=AlertAction, summary="Reopen a closed or acknowledged alert",
             responses=errors(404, 409))
async def reopen(request: Request, alert_id: AlertId, body: NoteIn | None = Body(None), dataset: str = DatasetQuery,
                 who: Principal = Depends(auth.analyst)) -> dict[str, Any]:
    alert, act, _ = await threaded(_change, ctx(request), dataset, alert_id, who, "reopen", _note(body), status="open")
    return {"alert": alert, "activity": act}


@router.post("/{alert_id}/assign", response_model=AlertAction, summary="Assign to an analyst (null to unassign)",
             responses=errors(404, 409))
async def assign(request: Request, alert_id: AlertId, body: AssignIn, dataset: str = DatasetQuery,
                 who: Principal = Depends(auth.analyst)) -> dict[str, Any]:
    # "" clears the assignee (COALESCE keeps the old value for NULL); shown as null
    alert, act, _ = await threaded(_change, ctx(request), dataset, alert_id, who, "assign", {"assignee": body.assignee},
                                   assignee=body.assignee or "")
    return {"alert": alert, "activity": act}


@router.post("/{alert_id}/comments", response_model=AlertAction, status_code=201, summary="Add a comment",
             responses=errors(404, 409))
async def comment(request: Request, alert_id: AlertId, body: CommentIn, dataset: str = DatasetQuery,
                  who: Principal = Depends(auth.analyst)) -> dict[str, Any]:
    alert, act, _ = await threaded(_change, ctx(request), dataset, alert_id, who, "comment", {"text": body.text}, comment=True)
    return {"alert": alert, "activity": act}


@router.post("/{alert_id}/close", response_model=AlertAction, summary="Close with a reason", responses=errors(404, 409))
async def close(request: Request, alert_id: AlertId, body: CloseIn, dataset: str = DatasetQuery,
                who: Principal = Depends(auth.analyst)) -> dict[str, Any]:
    alert, act, _ = await threaded(_change, ctx(request), dataset, alert_id, who, "close", {"reason": body.reason},
                                   status="closed", reason=body.reason)
    return {"alert": alert, "activity": act}


def _false_positive(c: Any, dataset: str, alert_id: str, who: Principal, body: FalsePositiveIn) -> dict[str, Any]:
    store = c.datasets.store(dataset)
    doc = store.get_alert(alert_id)
    if doc is None:
        raise not_found("alert", alert_id)
    current = (doc.get("icswatch") or {}).get("status") or "open"
    check_transition("alert", alert_id, current, "false_positive")
    s = alert_summary(doc)
    suppression = None
    baseline = None
    if body.action == "baseline":
        if not s["rule_id"].startswith("baseline-"):
            raise ApiError(409, "not_a_baseline_alert",
                           f"alert {alert_id} was raised by {s['rule_id']}, not by the baseline: use action=suppress")
        if not c.baseline.configured:
            raise ApiError(409, "no_baseline", "no baseline is configured (api.baseline): nothing to accept the deviation into")
        details = (doc.get("icswatch") or {}).get("details") or {}
        baseline = c.baseline.accept(alert_id, s["rule_id"], details, who.name, body.reason)
    elif body.action == "suppress":
        src = s["src"] if body.scope in ("source", "pair") and s["src"] else None
        dst = s["dst"] if body.scope == "pair" and s["dst"] else None
        until = time.time() + body.days * 86400 if body.days else None
        suppression = c.state.add_suppression(
            "sup_" + secrets.token_hex(6), s["rule_id"], src, dst, until, body.reason, alert_id, who.actor
        )
    store.set_alert_status(alert_id, "false_positive")
    detail: dict[str, Any] = {"from": current, "to": "false_positive", "reason": body.reason, "action": body.action}
    if suppression:
        detail["suppression"] = suppression["id"]
    if baseline:
        detail["baseline_change"] = (baseline.get("change") or {}).get("kind")
    act = c.state.record(dataset, "alert", alert_id, who.actor, "false_positive", detail, reason=body.reason)
    doc = store.get_alert(alert_id) or doc
    alert = alert_summary(doc, c.state.notes(dataset, "alert", [alert_id]).get(alert_id))
    return {"alert": alert, "activity": act, "suppression": suppression, "baseline": baseline}


@router.post("/{alert_id}/false-positive", response_model=AlertAction,
             summary="Mark as a false positive: suppress it from now on, or accept the deviation into the baseline",
             responses=errors(404, 409))
async def false_positive(request: Request, alert_id: AlertId, body: FalsePositiveIn, dataset: str = DatasetQuery,
                         who: Principal = Depends(auth.analyst)) -> dict[str, Any]:
    return await threaded(_false_positive, ctx(request), dataset, alert_id, who, body)
