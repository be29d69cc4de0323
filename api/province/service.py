"""The platform's rules, apart from HTTP and from storage: intake and deadlines, updates and their
history, who sees what, advisories and their recipients.

Deadlines (docs/linkage.md): an incident at ``mandatory_level`` (3, 较大) or graver must be reported
within ``deadline_hours_cii`` (1 h) of its discovery when the enterprise operates critical information
infrastructure, ``deadline_hours_other`` (4 h) otherwise. The deadline runs from the report's
``discovered_at``; a report is late when the platform *received* the first report at a mandatory
level after the deadline (the platform's clock, not the enterprise's claim of when it sent). An
incident first reported at 一般 and raised later by an update gets its deadline then, and is late if
the raise came after it.
"""

from __future__ import annotations

import secrets
import time
from typing import Any, Callable

from pydantic import ValidationError

from api.province.auth import Principal
from api.province.errors import ApiError, from_validation
from api.province.models import (
    LEVEL_NAMES,
    LEVEL_NAMES_EN,
    AdvisoryIn,
    EnterpriseIn,
    IncidentReport,
    IncidentUpdate,
    iso,
)
from api.province.settings import ProvinceSettings
from api.province.store import (
    Advisory,
    Enterprise,
    IncidentFilter,
    IncidentRecord,
    ProvinceStore,
    Recipient,
    StoreConflict,
    UpdateRecord,
)

MAX_CAS_RETRIES = 5


def _epoch(dt: Any) -> float:
    return dt.timestamp()


class ProvinceService:
    def __init__(
        self, store: ProvinceStore, settings: ProvinceSettings, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock

    # -- deadlines ------------------------------------------------------------------------------------
    def deadline(self, level: int, cii: bool, discovered_at: float) -> float | None:
        if level > self.settings.mandatory_level:
            return None
        hours = self.settings.deadline_hours_cii if cii else self.settings.deadline_hours_other
        return discovered_at + hours * 3600.0

    # -- registry -----------------------------------------------------------------------------------
    def add_enterprise(self, data: EnterpriseIn) -> Enterprise:
        now = self.clock()
        e = Enterprise(
            data.id,
            data.name,
            data.uscc,
            data.city,
            data.industry,
            data.security_class,
            data.cii,
            [c.model_dump() for c in data.contacts],
            True,
            now,
            now,
        )
        try:
            self.store.add_enterprise(e)
        except StoreConflict as exc:
            raise ApiError(409, "enterprise_exists", str(exc)) from None
        return e

    # -- intake ---------------------------------------------------------------------------------------
    def intake(self, principal: Principal, body: bytes) -> tuple[int, dict[str, Any]]:
        """(HTTP status, reply): 201 for a new incident, 200 with ``duplicate: true`` for a repeat.
        One report, one transaction; the API's intake batches concurrent reports (api/province/intake.py)
        with ``prepare_intake`` and ``intake_reply`` around the store's ``intake_batch``."""
        created, stored = self.store.insert_incident(self.prepare_intake(principal, body))
        return self.intake_reply(created, stored)

    def intake_reply(self, created: bool, stored: IncidentRecord) -> tuple[int, dict[str, Any]]:
        reply = self.receipt(stored)
        reply["duplicate"] = not created
        return (201 if created else 200), reply

    def prepare_intake(self, principal: Principal, body: bytes) -> IncidentRecord:
        """The record a report makes (validated, deadline computed), or the ApiError that refuses it."""
        enterprise = principal.enterprise
        assert enterprise is not None
        try:
            report = IncidentReport.model_validate_json(body)
        except ValidationError as exc:
            raise from_validation(exc, "report") from None
        if report.enterprise_id and report.enterprise_id != enterprise.id:
            raise ApiError(403, "wrong_enterprise", "the report names another enterprise than the credential's")
        now = self.clock()
        discovered = _epoch(report.discovered_at)
        if discovered > now + self.settings.clock_skew:
            raise ApiError(
                422,
                "invalid_report",
                "discovered_at is in the future",
                [{"field": "discovered_at", "problem": "later than the platform's clock", "type": "future"}],
            )
        doc = report.model_dump(mode="json", exclude_none=True)
        doc["enterprise_id"] = enterprise.id
        deadline = self.deadline(report.level, enterprise.cii, discovered)
        return IncidentRecord(
            enterprise_id=enterprise.id,
            incident_id=report.incident_id,
            doc=doc,
            level=report.level,
            status=report.status,
            city=enterprise.city,
            industry=enterprise.industry,
            cii=enterprise.cii,
            discovered_at=discovered,
            received_at=now,
            updated_at=now,
            deadline=deadline,
            late=deadline is not None and now > deadline,
            reportable_at=now if deadline is not None else None,
            revision=1,
            protocols=list(report.protocols),
            techniques=list(report.techniques),
            asset_types=sorted({a.asset_type for a in report.affected_assets}),
        )

    def receipt(self, rec: IncidentRecord) -> dict[str, Any]:
        return {
            "incident_id": rec.incident_id,
            "enterprise_id": rec.enterprise_id,
            "level": rec.level,
            "level_name": LEVEL_NAMES[rec.level],
            "received_at": iso(rec.received_at),
            "deadline": iso(rec.deadline),
            "late": rec.late,
            "revision": rec.revision,
        }

    # -- updates ----------------------------------------------------------------------------------------
    def update(self, principal: Principal, incident_id: str, body: bytes) -> tuple[int, dict[str, Any]]:
        try:
            upd = IncidentUpdate.model_validate_json(body)
        except ValidationError as exc:
            raise from_validation(exc, "update") from None
        changes = upd.changes()
        for _ in range(MAX_CAS_RETRIES):
            rec = self.store.get_incident(principal.enterprise_id, incident_id)
            if rec is None:
                raise ApiError(404, "not_found", "no such incident for this enterprise")
            new = self._merge(rec, changes)
            outcome = self.store.apply_update(
                new, UpdateRecord(upd.update_id, new.updated_at, principal.actor, changes, new.revision), rec.revision
            )
            if outcome == "applied":
                reply = self.receipt(new)
                reply.update(duplicate=False, update_id=upd.update_id, status=new.status)
                return 200, reply
            if outcome == "duplicate":
                current = self.store.get_incident(principal.enterprise_id, incident_id) or rec
                reply = self.receipt(current)
                reply.update(duplicate=True, update_id=upd.update_id, status=current.status)
                return 200, reply
            if outcome == "missing":
                raise ApiError(404, "not_found", "no such incident for this enterprise")
            # "conflict": another update landed between our read and write; merge again on top of it.
        raise ApiError(409, "busy", "the incident is being updated concurrently; retry", headers={"Retry-After": "1"})

    def _merge(self, rec: IncidentRecord, changes: dict[str, Any]) -> IncidentRecord:
        doc = dict(rec.doc)
        for k, v in changes.items():
            if k == "add_measures":
                doc["measures"] = list(doc.get("measures") or []) + list(v)
            else:
                doc[k] = v
        if "final_report" in changes and "status" not in changes:
            doc["status"] = "closed"
        doc.pop("level_name", None)
        try:
            merged = IncidentReport.model_validate(doc)  # the stored report always matches the schema
        except ValidationError as exc:
            raise from_validation(exc, "update") from None
        doc = merged.model_dump(mode="json", exclude_none=True)
        doc["enterprise_id"] = rec.enterprise_id
        now = self.clock()
        deadline, reportable_at, late = rec.deadline, rec.reportable_at, rec.late
        if merged.level <= self.settings.mandatory_level and reportable_at is None:
            # Raised into the mandatory levels by this update: the clock started at discovery.
            reportable_at = now
            deadline = self.deadline(merged.level, rec.cii, rec.discovered_at)
            late = deadline is not None and now > deadline
        return IncidentRecord(
            enterprise_id=rec.enterprise_id,
            incident_id=rec.incident_id,
            doc=doc,
            level=merged.level,
            status=merged.status,
            city=rec.city,
            industry=rec.industry,
            cii=rec.cii,
            discovered_at=rec.discovered_at,
            received_at=rec.received_at,
            updated_at=now,
            deadline=deadline,
            late=late,
            reportable_at=reportable_at,
            revision=rec.revision + 1,
            protocols=list(merged.protocols),
            techniques=list(merged.techniques),
            asset_types=sorted({a.asset_type for a in merged.affected_assets}),
        )

    # -- reading incidents -----------------------------------------------------------------------------
    def view(self, rec: IncidentRecord, full: bool = True) -> dict[str, Any]:
        out = {
            "enterprise_id": rec.enterprise_id,
            "incident_id": rec.incident_id,
            "title": rec.doc.get("title", ""),
            "level": rec.level,
            "level_name": LEVEL_NAMES[rec.level],
            "level_name_en": LEVEL_NAMES_EN[rec.level],
            "status": rec.status,
            "city": rec.city,
            "industry": rec.industry,
            "cii": rec.cii,
            "discovered_at": iso(rec.discovered_at),
            "received_at": iso(rec.received_at),
            "updated_at": iso(rec.updated_at),
            "deadline": iso(rec.deadline),
            "late": rec.late,
            "revision": rec.revision,
        }
        if full:
            out["report"] = rec.doc
        return out

    def find(self, principal: Principal, incident_id: str, enterprise_id: str | None) -> IncidentRecord:
        """An incident the caller may read. Another enterprise's incident is "not found", exactly like
        one that does not exist, so an enterprise cannot even learn that an id is in use elsewhere."""
        if principal.role == "enterprise":
            if enterprise_id not in (None, "", principal.enterprise_id):
                raise ApiError(404, "not_found", "no such incident for this enterprise")
            rec = self.store.get_incident(principal.enterprise_id, incident_id)
            if rec is None:
                raise ApiError(404, "not_found", "no such incident for this enterprise")
            return rec
        if enterprise_id:
            rec = self.store.get_incident(enterprise_id, incident_id)
            if rec is None:
                raise ApiError(404, "not_found", "no such incident")
            return rec
        found = self.store.find_incident(incident_id)
        if not found:
            raise ApiError(404, "not_found", "no such incident")
        if len(found) > 1:
            raise ApiError(
                409,
                "ambiguous",
                "several enterprises reported this id: add ?enterprise_id=",
                [{"enterprise_id": r.enterprise_id} for r in found],
            )
        return found[0]

    def search(self, principal: Principal, f: IncidentFilter) -> dict[str, Any]:
        if principal.role == "enterprise":
            f.enterprise_id = principal.enterprise_id  # the scope is forced, whatever the query said
        page = self.store.search_incidents(f)
        return {
            "items": [self.view(r, full=False) for r in page.items],
            "next_cursor": page.next_cursor,
            "total": page.total,
        }

    def history(self, rec: IncidentRecord) -> list[dict[str, Any]]:
        return [
            {
                "update_id": u.update_id,
                "received_at": iso(u.received_at),
                "actor": u.actor,
                "revision": u.revision,
                "changes": u.changes,
            }
            for u in self.store.incident_history(rec.enterprise_id, rec.incident_id)
        ]

    # -- advisories -----------------------------------------------------------------------------------
    def issue_advisory(self, principal: Principal, data: AdvisoryIn) -> dict[str, Any]:
        t = data.targets
        unknown = [e for e in t.enterprises if self.store.get_enterprise(e) is None]
        if unknown:
            raise ApiError(
                422,
                "unknown_enterprise",
                "targets name enterprises not in the registry",
                [{"field": "targets.enterprises", "problem": f"unknown: {', '.join(unknown[:20])}", "type": "unknown"}],
            )
        recipients = self.store.match_enterprises(t.all, t.cities, t.industries, t.enterprises)
        if not recipients:
            raise ApiError(422, "no_recipients", "no active enterprise matches these targets")
        now = self.clock()
        adv = Advisory(
            id="adv_" + time.strftime("%Y%m%d", time.gmtime(now)) + "_" + secrets.token_hex(4),
            title=data.title,
            body=data.body,
            kind=data.kind,
            severity=data.severity,
            targets=t.model_dump(),
            issued_by=principal.actor,
            issued_at=now,
            expires_at=data.expires_at.timestamp() if data.expires_at else None,
            techniques=list(data.techniques),
            references=list(data.references),
        )
        self.store.add_advisory(adv, recipients)
        out = self.advisory_view(adv)
        out["recipients"] = len(recipients)
        return out

    @staticmethod
    def advisory_view(a: Advisory, recipient: Recipient | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": a.id,
            "title": a.title,
            "body": a.body,
            "kind": a.kind,
            "severity": a.severity,
            "issued_at": iso(a.issued_at),
            "expires_at": iso(a.expires_at),
            "techniques": a.techniques,
            "references": a.references,
        }
        if recipient is not None:
            out["acknowledged_at"] = iso(recipient.acked_at)
        else:
            out["targets"] = a.targets
            out["issued_by"] = a.issued_by
        return out

    def list_advisories(self, principal: Principal, limit: int, cursor: str | None) -> dict[str, Any]:
        if principal.role == "enterprise":
            page = self.store.list_advisories(principal.enterprise_id, limit, cursor)
            items = []
            for a in page.items:
                items.append(self.advisory_view(a, self.store.recipient(a.id, principal.enterprise_id)))
            self.store.mark_delivered([a.id for a in page.items], principal.enterprise_id, self.clock())
            return {"items": items, "next_cursor": page.next_cursor, "total": page.total}
        page = self.store.list_advisories(None, limit, cursor)
        acks = self.store.ack_counts([a.id for a in page.items])
        items = []
        for a in page.items:
            v = self.advisory_view(a)
            v["recipients"], v["acknowledged"] = acks.get(a.id, (0, 0))
            items.append(v)
        return {"items": items, "next_cursor": page.next_cursor, "total": page.total}

    def advisory_for(self, principal: Principal, advisory_id: str) -> tuple[Advisory, Recipient | None]:
        adv = self.store.get_advisory(advisory_id)
        if principal.role == "enterprise":
            rcpt = self.store.recipient(advisory_id, principal.enterprise_id) if adv else None
            if adv is None or rcpt is None:
                raise ApiError(404, "not_found", "no such advisory for this enterprise")
            return adv, rcpt
        if adv is None:
            raise ApiError(404, "not_found", "no such advisory")
        return adv, None

    def acknowledge(self, principal: Principal, advisory_id: str, note: str) -> dict[str, Any]:
        adv, before = self.advisory_for(principal, advisory_id)
        rcpt = self.store.ack_advisory(advisory_id, principal.enterprise_id, self.clock(), note, principal.actor)
        assert rcpt is not None
        return {
            "advisory_id": adv.id,
            "enterprise_id": principal.enterprise_id,
            "acknowledged_at": iso(rcpt.acked_at),
            "duplicate": before is not None and before.acked_at is not None,
        }

    def acknowledgements(self, advisory_id: str) -> dict[str, Any]:
        adv = self.store.get_advisory(advisory_id)
        if adv is None:
            raise ApiError(404, "not_found", "no such advisory")
        rs = self.store.recipients(advisory_id)
        return {
            "advisory_id": advisory_id,
            "recipients": len(rs),
            "acknowledged": sum(1 for r in rs if r.acked_at),
            "items": [
                {
                    "enterprise_id": r.enterprise_id,
                    "delivered_at": iso(r.delivered_at),
                    "acknowledged_at": iso(r.acked_at),
                    "note": r.ack_note,
                    "acknowledged_by": r.acked_by,
                }
                for r in rs
            ],
        }
