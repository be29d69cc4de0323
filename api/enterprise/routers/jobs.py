"""/api/v1/jobs: pcap upload and replay for testers (jobs.py): upload a capture as the raw body, follow
the job's progress, download its results (alerts, incidents, events summary) as JSON, cancel or delete."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse

from alerts.store import AlertQuery, IncidentQuery
from api.enterprise import auth
from api.enterprise.auth import Principal
from api.enterprise.errors import ApiError, not_found
from api.enterprise.jobs import MAX_RESULT_ALERTS, public
from api.enterprise.models import ErrorBody, Job, JobList
from api.enterprise.routers.deps import ERRORS, ctx, errors, threaded

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"])
JobId = Annotated[str, Path(pattern=r"^job_[0-9a-f]{16}$", description="the job's id")]


@router.post(
    "",
    response_model=Job,
    status_code=202,
    summary="Upload a pcap/pcapng (optionally gzip) capture and queue its replay",
    description="The capture is the raw request body (`Content-Type: application/octet-stream`), e.g. "
    "`curl -H 'Authorization: Bearer ...' -H 'Content-Type: application/octet-stream' --data-binary @plant.pcap "
    "'https://host/api/v1/jobs?label=plant'`. Its type is read from its first bytes, never from a name; it is "
    "stored under a name the server chooses and deleted after the replay.",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
    responses={**errors(400), 413: ERRORS[413], 415: {"model": ErrorBody, "description": "not a pcap, pcapng or gzip capture"}},
)
async def upload(
    request: Request,
    label: str = Query("upload", max_length=200, description="a name for the job (shown in the list; not used for storage)"),
    who: Principal = Depends(auth.analyst),
) -> JSONResponse:
    job = await ctx(request).jobs.receive(request, who.actor, label)
    request.state.audit_detail = f"job {job['id']} {job['size']} bytes {job['format']} sha256 {job['sha256'][:16]}"
    return JSONResponse(public(job), status_code=202, headers={"Location": f"/api/v1/jobs/{job['id']}"})


@router.get("", response_model=JobList, summary="Replay jobs, newest first", responses=errors())
async def list_jobs(request: Request, limit: int = Query(50, ge=1, le=500), _: Principal = Depends(auth.viewer)) -> dict[str, Any]:
    rows = await threaded(ctx(request).state.jobs, limit)
    return {"items": [public(j) for j in rows]}


@router.get("/{job_id}", response_model=Job, summary="A job's state and progress (packets, bytes, percent)", responses=errors(404))
async def get_job(request: Request, job_id: JobId, _: Principal = Depends(auth.viewer)) -> dict[str, Any]:
    job = await threaded(ctx(request).state.job, job_id)
    if job is None:
        raise not_found("replay job", job_id)
    return public(job)


def _results(c: Any, job_id: str) -> dict[str, Any]:
    job = c.state.job(job_id)
    if job is None:
        raise not_found("replay job", job_id)
    if job["state"] != "done":
        raise ApiError(409, "job_not_done", f"job {job_id} is {job['state']}: results are ready when it is done")
    store = c.datasets.store(job_id)
    alerts: list[dict[str, Any]] = []
    cursor = None
    total = 0
    while len(alerts) < MAX_RESULT_ALERTS:
        page = store.search_alerts(AlertQuery(sort="ts", limit=1000, cursor=cursor))
        total = page.total
        alerts.extend(page.items)
        cursor = page.next_cursor
        if not cursor:
            break
    incidents = store.search_incidents(IncidentQuery(sort="first_ts", limit=1000)).items
    return {
        "job": public(job),
        "summary": c.jobs.summary(job_id),
        "alerts_total": total,
        "alerts_truncated": total > len(alerts),
        "alerts": alerts[:MAX_RESULT_ALERTS],
        "incidents": incidents,
    }


@router.get(
    "/{job_id}/results",
    summary="Everything the replay produced, as one JSON download: the job, the events summary, alerts (ECS), incidents",
    responses={**errors(404, 409), 200: {"content": {"application/json": {"schema": {"type": "object"}}},
                                         "description": "the results document (a download)"}},
    response_class=JSONResponse,
)
async def results(request: Request, job_id: JobId, _: Principal = Depends(auth.viewer)) -> JSONResponse:
    body = await threaded(_results, ctx(request), job_id)
    return JSONResponse(body, headers={"Content-Disposition": f'attachment; filename="icswatch-{job_id}-results.json"'})


@router.post("/{job_id}/cancel", response_model=Job, summary="Cancel a queued or running job", responses=errors(404, 409))
async def cancel(request: Request, job_id: JobId, _: Principal = Depends(auth.analyst)) -> dict[str, Any]:
    c = ctx(request)
    if not await threaded(c.jobs.cancel, job_id):
        job = c.state.job(job_id)
        raise ApiError(409, "job_finished", f"job {job_id} is already {job['state'] if job else 'gone'}")
    return public(c.state.job(job_id))


@router.delete("/{job_id}", status_code=204, summary="Delete a job, its dataset and its files", responses=errors(404))
async def delete(request: Request, job_id: JobId, _: Principal = Depends(auth.analyst)) -> None:
    if not await threaded(ctx(request).jobs.delete, job_id):
        raise not_found("replay job", job_id)
