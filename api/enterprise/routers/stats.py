"""/api/v1/stats: what the dashboard's charts show: totals, counts over time by severity, protocol,
rule or technique (any alert filter applies), and the top talkers."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request

from alerts.store import AlertQuery, IncidentQuery
from api.enterprise import auth
from api.enterprise.auth import Principal
from api.enterprise.models import CountsOut, SummaryOut, TalkersOut
from api.enterprise.routers.alerts import alert_query
from api.enterprise.routers.deps import DatasetQuery, ctx, errors, threaded

router = APIRouter(prefix="/api/v1/stats", tags=["stats"])
NICE_INTERVALS = (1, 5, 10, 30, 60, 300, 600, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 7 * 86400)
MAX_BUCKETS = 2000


def _summary(c: Any, dataset: str) -> dict[str, Any]:
    store = c.datasets.store(dataset)
    sev = {b.key: b.count for b in store.alert_counts("severity")}
    status = {b.key: b.count for b in store.alert_counts("status")}
    first = store.search_alerts(AlertQuery(sort="ts", limit=1)).items
    last = store.search_alerts(AlertQuery(sort="-ts", limit=1)).items
    from api.enterprise.views import epoch_of

    incidents = store.search_incidents(IncidentQuery(limit=1)).total
    open_incidents = store.search_incidents(IncidentQuery(limit=1, statuses=["open", "acknowledged"])).total
    recs, _ = c.assets.records(c.datasets.db_path(dataset))
    return {
        "dataset": dataset,
        "alerts": sum(sev.values()),
        "by_severity": {s: sev.get(s, 0) for s in ("critical", "high", "medium", "low")},
        "by_status": {s: status.get(s, 0) for s in ("open", "acknowledged", "closed", "false_positive")},
        "incidents": incidents,
        "open_incidents": open_incidents,
        "assets": len(recs),
        "first_alert": epoch_of(first[0].get("@timestamp")) if first else None,
        "last_alert": epoch_of(last[0].get("@timestamp")) if last else None,
    }


@router.get("/summary", response_model=SummaryOut, summary="Totals: alerts by severity and status, incidents, assets",
            responses=errors(409, 404))
async def summary(request: Request, dataset: str = DatasetQuery, _: Principal = Depends(auth.viewer)) -> dict[str, Any]:
    return await threaded(_summary, ctx(request), dataset)


def auto_interval(span: float, buckets: int = 60) -> float:
    """A round bucket size giving about ``buckets`` buckets over ``span`` seconds."""
    for i in NICE_INTERVALS:
        if span / i <= buckets:
            return float(i)
    return float(NICE_INTERVALS[-1])


def _counts(c: Any, dataset: str, by: str, interval: float | None, auto: bool, q: AlertQuery) -> dict[str, Any]:
    store = c.datasets.store(dataset)
    if auto:
        first = store.search_alerts(AlertQuery(**{**q.__dict__, "sort": "ts", "limit": 1, "cursor": None})).items
        last = store.search_alerts(AlertQuery(**{**q.__dict__, "sort": "-ts", "limit": 1, "cursor": None})).items
        from api.enterprise.views import epoch_of

        span = ((epoch_of(last[0].get("@timestamp")) or 0) - (epoch_of(first[0].get("@timestamp")) or 0)) if first and last else 0
        interval = auto_interval(span)
    buckets = store.alert_counts(by, q, interval)
    out = [{"key": b.key, "count": b.count, "bucket": b.bucket} for b in buckets[:MAX_BUCKETS * 8]]
    return {"by": by, "interval": interval, "buckets": out, "dataset": dataset}


@router.get("/counts", response_model=CountsOut,
            summary="Alert counts by a field, optionally per time bucket (the alert filters apply)", responses=errors(400, 409, 404))
async def counts(
    request: Request,
    by: str = Query("severity", pattern="^(severity|protocol|rule|technique|status|asset|src|dst)$"),
    interval: float | None = Query(None, ge=1, le=31 * 86400, description="bucket size in seconds; omit for totals"),
    auto_interval_: bool = Query(False, alias="auto", description="choose a round bucket size giving about 60 buckets"),
    query: AlertQuery = Depends(alert_query),
    dataset: str = DatasetQuery,
    _: Principal = Depends(auth.viewer),
) -> dict[str, Any]:
    return await threaded(_counts, ctx(request), dataset, by, interval, auto_interval_, query)


def _talkers(c: Any, dataset: str, limit: int, q: AlertQuery) -> dict[str, Any]:
    store = c.datasets.store(dataset)
    src = [{"key": b.key, "count": b.count} for b in store.alert_counts("src", q)[:limit]]
    dst = [{"key": b.key, "count": b.count} for b in store.alert_counts("dst", q)[:limit]]
    recs, _ = c.assets.records(c.datasets.db_path(dataset))
    busiest = sorted(recs, key=lambda a: -int(a.get("events") or 0))[:limit]
    return {
        "dataset": dataset,
        "sources": src,
        "destinations": dst,
        "busiest_assets": [
            {"address": a["address"], "role": a.get("role"), "events": int(a.get("events") or 0), "peer_count": int(a.get("peer_count") or 0),
             "protocols": sorted(set(a.get("client_protocols") or {}) | set(a.get("server_protocols") or {}))}
            for a in busiest
        ],
    }


@router.get("/top-talkers", response_model=TalkersOut,
            summary="Addresses raising the most alerts (as source and destination) and the busiest assets", responses=errors(409, 404))
async def top_talkers(request: Request, limit: int = Query(10, ge=1, le=100), query: AlertQuery = Depends(alert_query),
                      dataset: str = DatasetQuery, _: Principal = Depends(auth.viewer)) -> dict[str, Any]:
    return await threaded(_talkers, ctx(request), dataset, limit, query)
