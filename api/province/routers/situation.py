"""The situational picture: aggregates over the region for the province dashboard."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends, Query, Request

from api.province.auth import STAFF, Principal
from api.province.models import LEVEL_NAMES, LEVEL_NAMES_EN, iso
from api.province.routers.deps import ERRORS, epoch, service, touch
from api.province.store import SituationQuery

router = APIRouter(prefix="/api/v1/situation", tags=["situation"], responses=ERRORS)


@router.get(
    "",
    summary="Counts by city, industry, level, status, protocol, technique, asset type and time; open and late reports",
)
def situation(
    request: Request,
    principal: Principal = Depends(STAFF),
    since: datetime | None = Query(None, description="discovered at or after (ISO 8601 with zone)"),
    until: datetime | None = None,
    interval: float = Query(86400.0, ge=60, le=366 * 86400, description="timeline bucket in seconds"),
    city: list[str] = Query([]),
    industry: list[str] = Query([]),
    top: int = Query(10, ge=1, le=100),
) -> dict:
    touch(request, "situation")
    svc = service(request)
    out = svc.store.situation(SituationQuery(epoch(since), epoch(until), interval, city, industry, top), svc.clock())
    for row in out["by_level"]:
        row["name"], row["name_en"] = LEVEL_NAMES.get(row["key"], ""), LEVEL_NAMES_EN.get(row["key"], "")
    for row in out["timeline"]:
        row["bucket_start"] = iso(row["bucket"])
    for brief in (*out["late_reports"], *out["open_reports"]):
        brief["deadline"], brief["received_at"] = iso(brief["deadline"]), iso(brief["received_at"])
    out["generated_at"] = iso(svc.clock())
    return out
