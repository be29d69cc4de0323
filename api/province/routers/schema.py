"""The published schemas (versioned) and the health probe: no authentication needed."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.province.models import SCHEMA_VERSION, IncidentReport, IncidentUpdate

router = APIRouter(prefix="/api/v1", tags=["schema"])


def _schema(model: type) -> dict[str, Any]:
    s = model.model_json_schema()  # type: ignore[attr-defined]
    s["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    s["x-schema-version"] = SCHEMA_VERSION
    return s


@router.get("/schema/incident", summary="JSON Schema of the incident report (version 1)")
def incident_schema() -> dict[str, Any]:
    return _schema(IncidentReport)


@router.get("/schema/incident-update", summary="JSON Schema of an incident update (version 1)")
def update_schema() -> dict[str, Any]:
    return _schema(IncidentUpdate)


@router.get("/health", summary="Liveness probe (not audited)")
def health() -> dict[str, str]:
    return {"status": "ok"}
