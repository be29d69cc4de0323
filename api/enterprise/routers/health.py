"""Health (for load balancers: no token, no data), who am I, and Prometheus ``/metrics``.

``/metrics`` is the Prometheus text exposition format 0.0.4, written by hand (no client library
needed): the API's own request counters (per process), what the alert store holds, the replay jobs,
the rules, and each configured sensor's counters from its stats file (the stable counter vocabulary
of docs/counters.md as ``icswatch_sensor_counter_total{name=...}``). It needs a viewer token unless
``api.metrics_public`` is set (Prometheus sends one with ``authorization: {credentials: ...}``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials

from alerts.records import iso_time
from alerts.store import AlertQuery, IncidentQuery
from api.enterprise import auth
from api.enterprise.auth import Principal
from api.enterprise.models import Health, Me
from api.enterprise.routers.deps import ctx, errors, json_errors, threaded
from api.enterprise.routers.sensors import sensors

router = APIRouter(tags=["health"])
log = logging.getLogger(__name__)


def version() -> str:
    try:
        from importlib.metadata import version as v

        return v("icswatch")
    except Exception:  # noqa: BLE001 - a source tree
        return "0+unknown"


def _health(c: Any) -> dict[str, Any]:
    checks = {}
    try:
        c.datasets.live.count_alerts(AlertQuery())
        checks["alert_store"] = "ok"
    except Exception as exc:  # noqa: BLE001 - reported, not raised: that is what a health check is for
        checks["alert_store"] = f"error: {type(exc).__name__}"
    checks["state"] = "ok" if c.state.ping() else "error"
    checks["jobs"] = "ok" if c.jobs._thread is not None and c.jobs._thread.is_alive() else "stopped"
    ok = all(v == "ok" for v in checks.values())
    return {"status": "ok" if ok else "degraded", "version": version(), "time": iso_time(time.time()), "checks": checks}


@router.get("/api/v1/health", response_model=Health, summary="Liveness and dependencies (no token needed, no data)")
async def health(request: Request) -> dict[str, Any]:
    return await threaded(_health, ctx(request))


@router.get("/api/v1/auth/me", response_model=Me, summary="The caller's token name and role", responses=errors())
async def me(who: Principal = Depends(auth.viewer)) -> dict[str, Any]:
    return {"token_id": who.token_id, "name": who.name, "role": who.role}


def _esc(v: Any) -> str:
    return str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class _Exposition:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.seen: set[str] = set()

    def metric(self, name: str, kind: str, help_: str, samples: list[tuple[dict[str, Any], float]]) -> None:
        if name not in self.seen:
            self.seen.add(name)
            self.lines.append(f"# HELP {name} {help_}")
            self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            lab = ",".join(f'{k}="{_esc(v)}"' for k, v in labels.items())
            self.lines.append(f"{name}{{{lab}}} {value:g}" if lab else f"{name} {value:g}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def render_metrics(c: Any) -> str:
    m = c.metrics
    x = _Exposition()
    x.metric("icswatch_api_info", "gauge", "API version", [({"version": version()}, 1)])
    x.metric("icswatch_api_uptime_seconds", "gauge", "seconds since this API process started", [({}, round(time.time() - m.started, 3))])
    x.metric("icswatch_api_requests_total", "counter", "HTTP requests answered by this process",
             [({"method": k[0], "route": k[1], "code": k[2]}, v) for k, v in sorted(m.requests.items())])
    x.metric("icswatch_api_request_seconds_total", "counter", "time spent answering, per route",
             [({"method": k[0], "route": k[1]}, round(v, 6)) for k, v in sorted(m.seconds.items())])
    x.metric("icswatch_api_rate_limited_total", "counter", "requests refused by the rate limit (429)", [({}, m.rate_limited)])
    x.metric("icswatch_api_body_too_large_total", "counter", "requests refused for their body size (413)", [({}, m.too_large)])
    store = c.datasets.live
    x.metric("icswatch_alerts_stored", "gauge", "alerts in the live store, by severity",
             [({"severity": b.key}, b.count) for b in store.alert_counts("severity")])
    x.metric("icswatch_alerts_by_status", "gauge", "alerts in the live store, by workflow status",
             [({"status": b.key}, b.count) for b in store.alert_counts("status")])
    x.metric("icswatch_incidents_stored", "gauge", "incidents in the live store", [({}, store.search_incidents(IncidentQuery(limit=1)).total)])
    x.metric("icswatch_incidents_open", "gauge", "incidents open or acknowledged",
             [({}, store.search_incidents(IncidentQuery(limit=1, statuses=["open", "acknowledged"])).total)])
    recs, _ = c.assets.records(c.datasets.db_path("live"))
    x.metric("icswatch_assets", "gauge", "assets in the inventory", [({}, len(recs))])
    try:
        engine = c.rules.engine()
        x.metric("icswatch_rules", "gauge", "rules loaded, by state",
                 [({"state": "enabled"}, len(engine.active)), ({"state": "disabled"}, len(engine.rules) - len(engine.active))])
    except Exception:  # a broken rule file must not take /metrics down (GET /api/v1/rules says why)
        log.debug("metrics: no rule engine", exc_info=True)
    jobs = c.state.job_counts()
    x.metric("icswatch_replay_jobs", "gauge", "replay jobs by state",
             [({"state": s}, jobs.get(s, 0)) for s in ("queued", "running", "done", "failed", "cancelled")])
    x.metric("icswatch_audit_entries", "gauge", "entries in the audit log", [({}, c.state.audit_count())])
    ss = sensors(c)
    x.metric("icswatch_sensor_up", "gauge", "1 when the sensor's stats file is fresh", [({"sensor": s["name"]}, 1 if s["status"] == "running" else 0) for s in ss])
    x.metric("icswatch_sensor_stats_age_seconds", "gauge", "age of the sensor's stats file",
             [({"sensor": s["name"]}, s["age_seconds"]) for s in ss if s["age_seconds"] is not None])
    for key, name, help_ in (
        ("processed", "icswatch_sensor_packets_processed_total", "packets the sensor's pipeline processed"),
        ("events", "icswatch_sensor_events_total", "ICS events the sensor decoded"),
        ("alerts", "icswatch_sensor_alerts_total", "alerts the sensor raised"),
        ("dropped", "icswatch_sensor_dropped_total", "packets dropped by the kernel or the capture queue"),
    ):
        x.metric(name, "counter", help_, [({"sensor": s["name"]}, s[key]) for s in ss if isinstance(s[key], (int, float))])
    samples = []
    for s in ss:
        for cname, v in sorted(((s["counters"] or {}).get("pipeline") or {}).items()):
            if isinstance(v, (int, float)):
                samples.append(({"sensor": s["name"], "name": cname}, v))
    x.metric("icswatch_sensor_counter_total", "counter", "the sensor's named counters (docs/counters.md)", samples)
    return x.text()


async def _metrics_auth(request: Request, _: HTTPAuthorizationCredentials | None = Depends(auth.bearer_scheme)) -> Principal | None:
    if ctx(request).settings.api.metrics_public:
        return None
    return await auth.authenticate(request)


@router.get(
    "/metrics", response_class=PlainTextResponse, summary="Prometheus metrics (text exposition format)",
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text format 0.0.4"},
               **json_errors()},
)
async def metrics(request: Request, _: Principal | None = Depends(_metrics_auth)) -> PlainTextResponse:
    text = await threaded(render_metrics, ctx(request))
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")
