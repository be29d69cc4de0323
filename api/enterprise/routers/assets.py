"""/api/v1/assets: the passive inventory (sensor/assets.py, stored by alerts/asset_store.py): the
table with filters, one asset with its talkers and protocols, the CSV export, and the communication
graph (who talks to whom with which protocol, with the alerts on each relation)."""

from __future__ import annotations

import csv
import io
import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response

from alerts.store import AlertQuery
from api.enterprise import auth
from api.enterprise.adapters import AssetView, alert_pairs, graph
from api.enterprise.auth import Principal
from api.enterprise.errors import not_found
from api.enterprise.models import AssetDetail, AssetPage, Graph
from api.enterprise.routers.deps import DatasetQuery, ctx, errors, json_errors, threaded
from api.enterprise.views import alert_summary

router = APIRouter(prefix="/api/v1/assets", tags=["assets"])
Address = Annotated[str, Path(pattern=r"^[0-9A-Za-z:.%_-]{1,64}$", description="IP address, or MAC for layer-2-only devices")]
CSV_COLUMNS = (
    "address", "ips", "mac", "mac_vendor", "vendor", "product", "firmware", "serial", "role", "role_reason",
    "client_protocols", "server_protocols", "units", "first_seen", "last_seen", "events", "peer_count", "alerts",
)
SORTS = {
    "address": (lambda a: a["_key"], False),
    "-events": (lambda a: a["events"], True),
    "-last_seen": (lambda a: a["last_seen"], True),
    "-alerts": (lambda a: a["alerts"], True),
}


def _record(a: dict[str, Any], alerts: int) -> dict[str, Any]:
    return {
        "address": a["address"],
        "ips": list(a.get("ips") or []),
        "mac": a.get("mac"),
        "mac_vendor": a.get("mac_vendor"),
        "vendor": a.get("vendor"),
        "product": a.get("product"),
        "firmware": a.get("firmware"),
        "serial": a.get("serial"),
        "role": a.get("role") or "unknown",
        "role_reason": a.get("role_reason") or "",
        "client_protocols": dict(a.get("client_protocols") or {}),
        "server_protocols": dict(a.get("server_protocols") or {}),
        "first_seen": float(a.get("first_seen") or 0.0),
        "last_seen": float(a.get("last_seen") or 0.0),
        "events": int(a.get("events") or 0),
        "peer_count": int(a.get("peer_count") or 0),
        "units": [int(u) for u in a.get("units") or []],
        "alerts": alerts,
    }


def _filtered(c: Any, dataset: str, role: list[str], protocol: list[str], q: str | None, sort: str) -> list[dict[str, Any]]:
    from sensor.assets import address_sort_key

    store = c.datasets.store(dataset)
    recs, _ = c.assets.records(c.datasets.db_path(dataset))
    counts = {b.key: b.count for b in store.alert_counts("asset")}
    out = []
    needle = (q or "").lower()
    for a in recs:
        if role and (a.get("role") or "unknown") not in role:
            continue
        protos = set(a.get("client_protocols") or {}) | set(a.get("server_protocols") or {})
        if protocol and not protos & set(protocol):
            continue
        if needle:
            hay = " ".join(str(a.get(k) or "") for k in ("address", "mac", "mac_vendor", "vendor", "product", "role")).lower()
            if needle not in hay and needle not in " ".join(a.get("ips") or []):
                continue
        r = _record(a, counts.get(a["address"], 0))
        r["_key"] = address_sort_key(a["address"])
        out.append(r)
    key, reverse = SORTS[sort]
    out.sort(key=key, reverse=reverse)
    for r in out:
        r.pop("_key", None)
    return out


def asset_filters(
    role: list[Annotated[str, Query(max_length=40)]] = Query([], description="plc, rtu, hmi, master, engineering_station, ..."),
    protocol: list[Annotated[str, Query(max_length=32)]] = Query([], description="speaks this protocol (as client or server)"),
    q: str | None = Query(None, max_length=200, description="text in the address, MAC, vendor, product or role"),
    sort: str = Query("address", pattern="^(address|-events|-last_seen|-alerts)$"),
) -> dict[str, Any]:
    return {"role": role, "protocol": protocol, "q": q, "sort": sort}


@router.get("", response_model=AssetPage, summary="The asset inventory", responses=errors(409, 404))
async def list_assets(
    request: Request,
    f: dict[str, Any] = Depends(asset_filters),
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=1_000_000),
    dataset: str = DatasetQuery,
    _: Principal = Depends(auth.viewer),
) -> dict[str, Any]:
    rows = await threaded(_filtered, ctx(request), dataset, **f)
    return {"items": rows[offset : offset + limit], "total": len(rows), "offset": offset, "dataset": dataset}


def _csv_cell(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        s = " ".join(str(x) for x in v)
    elif isinstance(v, dict):
        s = " ".join(f"{k}:{n}" for k, n in v.items())
    elif v is None:
        s = ""
    else:
        s = str(v)
    # A cell starting with = + - @ is a formula to a spreadsheet: never let plant data run as one.
    if s[:1] in ("=", "+", "-", "@", "\t", "\r"):
        s = "'" + s
    return s


@router.get(
    "/export.csv", summary="The inventory as CSV (same filters as the list)",
    responses={**json_errors(404, 409), 200: {"content": {"text/csv": {"schema": {"type": "string"}}}, "description": "CSV, one asset per row"}},
    response_class=Response,
)
async def export_csv(request: Request, f: dict[str, Any] = Depends(asset_filters), dataset: str = DatasetQuery,
                     _: Principal = Depends(auth.viewer)) -> Response:
    rows = await threaded(_filtered, ctx(request), dataset, **f)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(CSV_COLUMNS)
    for r in rows:
        w.writerow([_csv_cell(r.get(k)) for k in CSV_COLUMNS])
    return Response(
        "\ufeff" + buf.getvalue(),  # BOM: spreadsheets then read the Chinese vendor names as UTF-8
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="icswatch-assets-{dataset}.csv"'},
    )


def _graph(c: Any, dataset: str, limit: int) -> dict[str, Any]:
    store = c.datasets.store(dataset)
    recs, by_addr = c.assets.records(c.datasets.db_path(dataset))
    g = graph(recs, by_addr, alert_pairs(store), limit)
    g["dataset"] = dataset
    return g


@router.get("/graph", response_model=Graph, summary="Communication graph: assets and client -> server relations per protocol",
            responses=errors(409, 404))
async def comm_graph(request: Request, limit: int = Query(500, ge=1, le=5000, description="edges at most (those with alerts first)"),
                     dataset: str = DatasetQuery, _: Principal = Depends(auth.viewer)) -> dict[str, Any]:
    return await threaded(_graph, ctx(request), dataset, limit)


def _detail(c: Any, dataset: str, address: str) -> dict[str, Any]:
    store = c.datasets.store(dataset)
    _, by_addr = c.assets.records(c.datasets.db_path(dataset))
    a = by_addr.get(address)
    if a is None:
        raise not_found("asset", address)
    q = AlertQuery(ips=[address])
    total = store.count_alerts(AlertQuery(assets=[address]))
    out = _record(a, total)
    out["identity"] = {str(k): dict(v) for k, v in (a.get("identity") or {}).items()}
    out["initiated"] = dict(a.get("initiated") or {})
    out["engineering_ops"] = dict(a.get("engineering_ops") or {})
    out["talkers"] = AssetView.talkers(a, by_addr)
    out["alerts_by_rule"] = [{"rule_id": b.key, "count": b.count} for b in store.alert_counts("rule", q)]
    q.limit = 20
    out["recent_alerts"] = [alert_summary(d) for d in store.search_alerts(q).items]
    return json.loads(json.dumps(out, default=str))


@router.get("/{address}", response_model=AssetDetail, summary="One asset: identity, talkers and protocols, its alerts",
            responses=errors(404, 409))
async def get_asset(request: Request, address: Address, dataset: str = DatasetQuery, _: Principal = Depends(auth.viewer)) -> dict[str, Any]:
    return await threaded(_detail, ctx(request), dataset, address)
