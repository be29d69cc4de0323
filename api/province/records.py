"""What the platform's two stores (api/province/sqlite_store.py, api/province/es_store.py) share about
the records they keep: the page cursor, the text an incident search looks in, and how a stored
incident (a SQLite row or an Elasticsearch document, given as a mapping of its fields) becomes an
``IncidentRecord`` or a line of the situational picture. One definition, so both stores answer the
same (tests/test_province_es_store.py compares them on the same reports).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from typing import Any

from api.province.store import IncidentRecord, StoreError

MAX_LIMIT = 1000  # items per page, at most
OPEN_STATUSES = ("open", "handling", "contained")


def encode_cursor(values: Sequence[Any]) -> str:
    """The opaque ``next_cursor`` of a page: the sort values of its last item."""
    text = json.dumps(list(values), ensure_ascii=False, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, n: int) -> list[Any]:
    """The ``n`` sort values a cursor carries; ``StoreError`` for anything else."""
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, TypeError):
        raise StoreError("bad cursor") from None
    if not isinstance(values, list) or len(values) != n:
        raise StoreError("bad cursor")
    return values


def search_text(rec: IncidentRecord) -> str:
    """The lowercased text an incident's text search finds substrings of."""
    d = rec.doc
    return " ".join(
        str(x)
        for x in (
            rec.enterprise_id,
            rec.incident_id,
            d.get("title", ""),
            d.get("site", ""),
            rec.city,
            rec.industry,
            *rec.techniques,
            *rec.protocols,
        )
    ).lower()


def incident_record(fields: Mapping[str, Any], doc: dict[str, Any]) -> IncidentRecord:
    """The record of a stored incident: its columns (or document fields) and the stored report."""
    return IncidentRecord(
        enterprise_id=fields["enterprise_id"],
        incident_id=fields["incident_id"],
        doc=doc,
        level=int(fields["level"]),
        status=fields["status"],
        city=fields["city"],
        industry=fields["industry"],
        cii=bool(fields["cii"]),
        discovered_at=fields["discovered_at"],
        received_at=fields["received_at"],
        updated_at=fields["updated_at"],
        deadline=fields.get("deadline"),
        late=bool(fields["late"]),
        reportable_at=fields.get("reportable_at"),
        revision=int(fields["revision"]),
        # Derived from the stored report rather than stored apart: it is the one source of truth.
        protocols=list(doc.get("protocols") or []),
        techniques=list(doc.get("techniques") or []),
        asset_types=sorted({a.get("asset_type", "unknown") for a in doc.get("affected_assets") or []}),
    )


def incident_brief(fields: Mapping[str, Any], title: str) -> dict[str, Any]:
    """An incident as the situational picture lists it (late and open reports)."""
    return {
        "enterprise_id": fields["enterprise_id"],
        "incident_id": fields["incident_id"],
        "title": title,
        "level": int(fields["level"]),
        "status": fields["status"],
        "city": fields["city"],
        "industry": fields["industry"],
        "deadline": fields.get("deadline"),
        "received_at": fields["received_at"],
        "late": bool(fields["late"]),
    }
