"""/api/v1/sensors: the running sensors' status and counters, read from the files ``icswatch sniff
--stats-json FILE`` rewrites at each interval (listed in ``api.sensor_stats``). A sensor whose file is
older than ``api.sensor_stale_seconds`` is ``stale`` (stopped, hung, or its disk is full)."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request

from api.enterprise import auth
from api.enterprise.auth import Principal
from api.enterprise.models import SensorList
from api.enterprise.routers.deps import ctx, errors, threaded

router = APIRouter(prefix="/api/v1/sensors", tags=["sensors"])


def read_sensor(path: str, stale_after: float) -> dict[str, Any]:
    name = Path(path).stem
    out: dict[str, Any] = {"name": name, "status": "missing", "updated": None, "age_seconds": None, "uptime": None,
                           "processed": None, "events": None, "alerts": None, "dropped": None, "counters": {}}
    try:
        st = os.stat(path)
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return out
    except (OSError, ValueError):
        out["status"] = "unreadable"
        return out
    if not isinstance(data, dict):
        out["status"] = "unreadable"
        return out
    age = max(0.0, time.time() - st.st_mtime)
    updated = data.get("time")
    try:
        if updated:
            age = max(0.0, time.time() - datetime.fromisoformat(str(updated)).timestamp())
    except ValueError:
        pass
    pipeline = data.get("pipeline") or {}
    capture = data.get("capture") or {}
    totals = capture.get("totals") or {}
    dropped = None
    if totals:
        dropped = int(totals.get("kernel_dropped", 0) or 0) + int(totals.get("queue_dropped", 0) or 0)
    out.update(
        {
            "status": "running" if age <= stale_after else "stale",
            "updated": str(updated) if updated else None,
            "age_seconds": round(age, 3),
            "uptime": data.get("uptime"),
            "processed": pipeline.get("processed"),
            "events": pipeline.get("events"),
            "alerts": data.get("alerts"),
            "dropped": dropped,
            "counters": {"pipeline": pipeline.get("counters") or {}, "capture": capture, "reloads": data.get("reloads"),
                         "evidence": data.get("evidence")},
        }
    )
    return out


def sensors(c: Any) -> list[dict[str, Any]]:
    api = c.settings.api
    return [read_sensor(p, api.sensor_stale_seconds) for p in api.sensor_stats]


@router.get("", response_model=SensorList, summary="Status and counters of the configured sensors", responses=errors())
async def list_sensors(request: Request, _: Principal = Depends(auth.viewer)) -> dict[str, Any]:
    return {"items": await threaded(sensors, ctx(request))}
