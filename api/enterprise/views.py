"""From the stores' ECS documents to the API's flat shapes (models.py), and small shared helpers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from alerts.records import SEVERITY_SCORE, iso_time


def epoch_of(iso: str | None) -> float | None:
    if not iso:
        return None
    try:
        return datetime.fromisoformat(str(iso).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def epoch(dt: datetime | None) -> float | None:
    """A query time as epoch seconds; a time without a zone is taken as UTC."""
    if dt is None:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def _int(v: Any) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return 0


def describe_evidence(evidence: list[dict[str, Any]], count: int, limit: int = 3) -> str:
    """``write_single_register u1 @100 =[7]; ...`` (addresses 0-based), like the replay summary."""
    parts = []
    for e in evidence[:limit]:
        s = str(e.get("function_name") or e.get("function") or "")
        if e.get("unit") is not None:
            s += f" u{e['unit']}"
        if e.get("address") is not None:
            q = e.get("quantity")
            s += f" @{e['address']}" + (f"+{q}" if q and q > 1 else "")
        vals = e.get("values")
        if vals:
            s += f" ={list(vals[:4])}" + ("..." if len(vals) > 4 or e.get("values_total") else "")
        if e.get("result") not in (None, "ok"):
            s += f" {e['result']}" + (f":{e['code']}" if e.get("code") is not None else "")
        parts.append(s)
    if count > limit:
        parts.append(f"({count} events)")
    return "; ".join(parts)


def alert_summary(doc: dict[str, Any], note: dict[str, Any] | None = None) -> dict[str, Any]:
    ev = doc.get("event") or {}
    rule = doc.get("rule") or {}
    threat = doc.get("threat") or {}
    tech = threat.get("technique") or {}
    src = doc.get("source") or {}
    dst = doc.get("destination") or {}
    net = doc.get("network") or {}
    ic = doc.get("icswatch") or {}
    ics = doc.get("ics") or {}
    sev = ev.get("severity_name") or "low"
    if sev not in SEVERITY_SCORE:
        sev = "low"
    ts = epoch_of(doc.get("@timestamp")) or 0.0
    status = ic.get("status") or "open"
    note = note or {}
    return {
        "id": str(ev.get("id") or ""),
        "timestamp": doc.get("@timestamp") or iso_time(ts),
        "ts": ts,
        "severity": sev,
        "severity_score": _int(ev.get("severity")),
        "rule_id": str(rule.get("id") or ""),
        "rule_name": str(rule.get("name") or ""),
        "detector": str(ev.get("provider") or ""),
        "techniques": [str(t) for t in tech.get("id") or []],
        "technique_names": [str(t) for t in tech.get("name") or []],
        "tactics": [str(t) for t in (threat.get("tactic") or {}).get("name") or []],
        "protocol": str(net.get("protocol") or ""),
        "transport": str(net.get("transport") or ""),
        "src": str(src.get("ip") or ""),
        "sport": _int(src.get("port")),
        "dst": str(dst.get("ip") or ""),
        "dport": _int(dst.get("port")),
        "asset": str(ic.get("asset") or ""),
        "status": status if status in ("open", "acknowledged", "closed", "false_positive") else "open",
        "incident_id": ic.get("incident_id"),
        "count": _int(ic.get("count")) or 1,
        "evidence_summary": describe_evidence(ics.get("evidence") or [], _int(ic.get("count")) or 1),
        "assignee": note.get("assignee") or None,
        "comments": _int(note.get("comments")),
    }


def incident_summary(doc: dict[str, Any], note: dict[str, Any] | None = None, reported: bool = False) -> dict[str, Any]:
    ev = doc.get("event") or {}
    threat = doc.get("threat") or {}
    inc = (doc.get("icswatch") or {}).get("incident") or {}
    sev = ev.get("severity_name") or "low"
    if sev not in SEVERITY_SCORE:
        sev = "low"
    status = inc.get("status") or "open"
    note = note or {}
    first, last = ev.get("start") or doc.get("@timestamp"), ev.get("end") or doc.get("@timestamp")
    return {
        "id": str(inc.get("id") or ev.get("id") or ""),
        "asset": str(inc.get("asset") or ""),
        "level": _int(inc.get("level")) or 4,
        "level_name": str(inc.get("level_name") or ""),
        "level_reason": str(inc.get("level_reason") or ""),
        "severity": sev,
        "max_alert_severity": str(inc.get("max_alert_severity") or sev),
        "status": status if status in ("open", "acknowledged", "closed", "false_positive") else "open",
        "alert_count": _int(inc.get("alert_count")),
        "first": first or "",
        "last": last or "",
        "first_ts": epoch_of(first) or 0.0,
        "last_ts": epoch_of(last) or 0.0,
        "techniques": [str(t) for t in (threat.get("technique") or {}).get("id") or []],
        "tactics": [str(t) for t in (threat.get("tactic") or {}).get("name") or []],
        "rule_ids": [str(r) for r in inc.get("rule_ids") or []],
        "protocols": [str(p) for p in inc.get("protocols") or []],
        "sources": [str(s) for s in inc.get("sources") or []],
        "critical_asset": bool(inc.get("critical_asset")),
        "assignee": note.get("assignee") or None,
        "comments": _int(note.get("comments")),
        "reported": reported,
    }


# Analyst workflow: which status may follow which (the same for alerts and incidents).
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "open": ("acknowledged", "closed", "false_positive"),
    "acknowledged": ("open", "closed", "false_positive"),
    "closed": ("open",),
    "false_positive": ("open",),
}


def check_transition(kind: str, ident: str, current: str, new: str) -> None:
    from api.enterprise.errors import ApiError

    if current == new:
        raise ApiError(409, "no_change", f"{kind} {ident} is already {new}")
    if new not in TRANSITIONS.get(current, ()):
        allowed = ", ".join(TRANSITIONS.get(current, ())) or "nothing"
        raise ApiError(409, "bad_transition", f"{kind} {ident} is {current}: it can become {allowed}, not {new}")
