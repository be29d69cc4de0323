"""The Elasticsearch province store (api/province/es_store.py) against the SQLite one, on the same data:
every query the API and the dashboard make answers the same on both (incidents and their pages,
text search, the situational picture, history, advisories and acknowledgements, the audit log), the
intake is idempotent and refuses replays on both, and the index mappings are explicit and closed.

The cluster is noida-db on 127.0.0.1 (or ICSWATCH_TEST_ES_URL, see tests/es_testutil.py)."""

from __future__ import annotations

import random
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Iterator

import pytest

from es_testutil import EsServer, es_server  # noqa: F401 (fixture)
from province_testutil import province_es_store

from api.province.store import (
    Advisory,
    AuditEntry,
    AuditFilter,
    Enterprise,
    IncidentFilter,
    IncidentRecord,
    IntakeItem,
    SituationQuery,
    UpdateRecord,
)

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
CITIES = ("福州", "厦门", "泉州")
INDUSTRIES = ("化工", "电力", "水务", "制造")
PROTOCOLS = ("modbus", "s7comm", "iec104", "dnp3", "enip")
TECHNIQUES = ("T0846", "T0855", "T0836", "T0814", "T0831")
ASSET_TYPES = ("plc", "rtu", "hmi", "engineering_station")
STATUSES = ("open", "handling", "contained", "resolved", "closed")


def enterprises() -> list[Enterprise]:
    return [
        Enterprise(f"ent{i}", f"企业{i}", f"USCC{i:014d}", CITIES[i % 3], INDUSTRIES[i % 4], 1 + i % 3, i % 2 == 0)
        for i in range(6)
    ]


def records(n: int = 120, seed: int = 7) -> list[IncidentRecord]:
    """Varied incidents with distinct receipt times (both stores then order them the same way)."""
    rnd = random.Random(seed)
    ents = enterprises()
    out = []
    for i in range(n):
        e = ents[i % len(ents)]
        level = rnd.randint(1, 4)
        discovered = T0 + rnd.randint(0, 5 * 86400)
        received = T0 + 6 * 86400 + i * 37.5
        deadline = None if level == 4 else discovered + (3600.0 if e.cii else 4 * 3600.0)
        protocols = rnd.sample(PROTOCOLS, rnd.randint(0, 2))
        techniques = rnd.sample(TECHNIQUES, rnd.randint(0, 3))
        assets = [{"address": f"int-{j:012x}", "asset_type": rnd.choice(ASSET_TYPES)} for j in range(rnd.randint(0, 2))]
        doc = {
            "schema_version": "1",
            "incident_id": f"inc-{i:04d}",
            "title": f"Incident {i} {'Unauthorised Modbus writes' if i % 3 else 'S7 program download'}",
            "level": level,
            "level_name": "",
            "discovered_at": "2026-01-01T00:00:00Z",
            "site": f"Plant {i % 4}",
            "affected_assets": assets,
            "protocols": protocols,
            "techniques": techniques,
            "status": rnd.choice(STATUSES),
            "enterprise_id": e.id,
        }
        out.append(
            IncidentRecord(
                enterprise_id=e.id,
                incident_id=doc["incident_id"],
                doc=doc,
                level=level,
                status=doc["status"],
                city=e.city,
                industry=e.industry,
                cii=e.cii,
                discovered_at=discovered,
                received_at=received,
                updated_at=received,
                deadline=deadline,
                late=deadline is not None and received > deadline,
                reportable_at=received if deadline is not None else None,
                protocols=protocols,
                techniques=techniques,
                asset_types=sorted({a["asset_type"] for a in assets}),
            )
        )
    return out


@pytest.fixture(scope="module")
def stores(es_server: EsServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from api.province.sqlite_store import SQLiteProvinceStore

    tmp: Path = tmp_path_factory.mktemp("province-es-store")
    sqlite = SQLiteProvinceStore(tmp / "sqlite.db")
    es, cleanup = province_es_store(es_server, tmp / "registry.db")
    both = {"sqlite": sqlite, "es": es}
    for store in both.values():
        for e in enterprises():
            store.add_enterprise(e)
    yield both
    sqlite.close()
    es.close()
    cleanup()


def feed(store: Any, recs: list[IncidentRecord]) -> list[tuple[bool, bool, str | None]]:
    """Intake in batches of 16 with a replayed nonce and a repeated incident in every batch."""
    outcomes = []
    for b in range(0, len(recs), 16):
        items = [IntakeItem("ik_test", f"nonce-{b + i:06d}-padpadpad", T0, r) for i, r in enumerate(recs[b : b + 16])]
        items.append(IntakeItem("ik_test", f"nonce-{b:06d}-padpadpad", T0, recs[b]))  # replay in the same batch
        items.append(IntakeItem("ik_test", f"again-{b:06d}-padpadpad", T0, recs[b]))  # the same incident again
        for o in store.intake_batch(items, T0 + 7 * 86400, 300.0):
            outcomes.append((o.fresh, o.created, o.stored.incident_id if o.stored else None))
    return outcomes


@pytest.fixture(scope="module")
def fed(stores: dict[str, Any]) -> dict[str, Any]:
    recs = records()
    results = {name: feed(store, recs) for name, store in stores.items()}
    return {"records": recs, "outcomes": results}


def test_intake_batches_agree_replays_and_repeats_are_refused(stores: dict[str, Any], fed: dict[str, Any]) -> None:
    sqlite, es = fed["outcomes"]["sqlite"], fed["outcomes"]["es"]
    assert sqlite == es
    created = [o for o in sqlite if o[1]]
    assert len(created) == len(fed["records"])  # every incident once
    assert sum(1 for o in sqlite if not o[0]) == len(range(0, len(fed["records"]), 16))  # each replay refused
    repeats = [o for o in sqlite if o[0] and not o[1]]
    assert repeats and all(o[2] for o in repeats)  # the repeat gets the stored incident back
    # A whole batch again (a sensor's retry after a lost answer): nothing new, the stored receipts back.
    again = [IntakeItem("ik_test", f"retry-{i:06d}-padpadpad", T0, r) for i, r in enumerate(fed["records"][:20])]
    for store in stores.values():
        outs = store.intake_batch(again, T0 + 7 * 86400, 300.0)
        assert [(o.fresh, o.created) for o in outs] == [(True, False)] * 20
        assert [o.stored.received_at for o in outs] == [r.received_at for r in fed["records"][:20]]


def test_single_insert_is_idempotent(stores: dict[str, Any], fed: dict[str, Any]) -> None:
    rec = fed["records"][3]
    for store in stores.values():
        created, stored = store.insert_incident(replace(rec, received_at=rec.received_at + 999))
        assert created is False and stored.received_at == rec.received_at


def _all_pages(store: Any, f: IncidentFilter) -> tuple[list[tuple[str, str]], int]:
    keys, cursor, total = [], None, -1
    while True:
        page = store.search_incidents(replace(f, cursor=cursor))
        total = page.total
        keys += [(r.enterprise_id, r.incident_id) for r in page.items]
        cursor = page.next_cursor
        if not cursor:
            return keys, total


@pytest.mark.parametrize(
    "f",
    [
        IncidentFilter(limit=7),
        IncidentFilter(enterprise_id="ent1", limit=5),
        IncidentFilter(cities=["厦门"], levels=[1, 2], limit=4),
        IncidentFilter(industries=["电力", "水务"], statuses=["open", "handling"], limit=10),
        IncidentFilter(late=True, limit=3),
        IncidentFilter(late=False, since=T0 + 6 * 86400 + 1000, until=T0 + 6 * 86400 + 3000, limit=6),
        IncidentFilter(text="modbus", limit=9),
        IncidentFilter(text="S7 PROGRAM", limit=9),
        IncidentFilter(text="ent2 inc-00", limit=9),
        IncidentFilter(text="100%_*?", limit=9),
    ],
    ids=lambda f: ",".join(f"{k}={v}" for k, v in asdict(f).items() if v not in (None, (), [], 50) and k != "limit"),
)
def test_incident_searches_agree(stores: dict[str, Any], fed: dict[str, Any], f: IncidentFilter) -> None:
    sqlite_keys, sqlite_total = _all_pages(stores["sqlite"], f)
    es_keys, es_total = _all_pages(stores["es"], f)
    assert es_keys == sqlite_keys and es_total == sqlite_total == len(sqlite_keys)
    if f.text == "modbus":
        assert sqlite_total > 0


def test_reads_by_id_agree(stores: dict[str, Any], fed: dict[str, Any]) -> None:
    for rec in fed["records"][:10]:
        a = stores["sqlite"].get_incident(rec.enterprise_id, rec.incident_id)
        b = stores["es"].get_incident(rec.enterprise_id, rec.incident_id)
        assert a is not None and asdict(a) == asdict(b)
    assert stores["es"].get_incident("ent0", "nope") is None
    assert [asdict(r) for r in stores["es"].find_incident("inc-0005")] == [
        asdict(r) for r in stores["sqlite"].find_incident("inc-0005")
    ]


@pytest.mark.parametrize(
    "q",
    [
        SituationQuery(),
        SituationQuery(interval=3600.0, top=3),
        SituationQuery(since=T0 + 86400, until=T0 + 3 * 86400, interval=7200.0),
        SituationQuery(cities=["福州"], industries=["化工", "制造"], top=2),
        SituationQuery(since=T0 + 10 * 86400),  # nothing
    ],
)
def test_situational_picture_agrees(stores: dict[str, Any], fed: dict[str, Any], q: SituationQuery) -> None:
    a = stores["sqlite"].situation(q, T0 + 7 * 86400)
    b = stores["es"].situation(q, T0 + 7 * 86400)
    assert a == b
    if q.since is None:
        assert a["totals"]["incidents"] > 0 and a["by_protocol"] and a["timeline"] and a["late_reports"]


def test_updates_history_and_compare_and_set_agree(stores: dict[str, Any], fed: dict[str, Any]) -> None:
    rec = fed["records"][10]
    for store in stores.values():
        cur = store.get_incident(rec.enterprise_id, rec.incident_id)
        doc = dict(cur.doc, status="closed", techniques=["T0831"])
        new = replace(
            cur,
            doc=doc,
            status="closed",
            revision=cur.revision + 1,
            updated_at=cur.updated_at + 60,
            techniques=["T0831"],
        )
        upd = UpdateRecord("u-1", cur.updated_at + 60, "ik_test", {"status": "closed"}, new.revision)
        assert store.apply_update(new, upd, cur.revision) == "applied"
        assert store.apply_update(new, upd, cur.revision) == "duplicate"  # the same update again
        other = UpdateRecord("u-2", cur.updated_at + 61, "ik_test", {"status": "open"}, new.revision)
        assert store.apply_update(new, other, cur.revision) == "conflict"  # based on an old revision
        gone = replace(new, incident_id="inc-nothing")
        assert store.apply_update(gone, other, 1) == "missing"
    a = stores["sqlite"].incident_history(rec.enterprise_id, rec.incident_id)
    b = stores["es"].incident_history(rec.enterprise_id, rec.incident_id)
    assert [asdict(u) for u in a] == [asdict(u) for u in b] and [u.update_id for u in a] == ["u-1"]
    assert asdict(stores["sqlite"].get_incident(rec.enterprise_id, rec.incident_id)) == asdict(
        stores["es"].get_incident(rec.enterprise_id, rec.incident_id)
    )
    q = SituationQuery()
    assert stores["sqlite"].situation(q, T0) == stores["es"].situation(q, T0)  # the aggregates follow


def test_advisories_and_acknowledgements_agree(stores: dict[str, Any], fed: dict[str, Any]) -> None:
    advs = [
        Advisory(
            f"adv_20260101_{i:08x}",
            f"Advisory {i}",
            "Block TCP/502.",
            "warning",
            "high",
            {"all": i == 0},
            "tok_analyst",
            T0 + i * 60,
            None,
            ["T0855"],
            ["https://example.org"],
        )
        for i in range(5)
    ]
    for store in stores.values():
        for i, a in enumerate(advs):
            store.add_advisory(a, [e.id for e in enterprises()][: 2 + i % 4])
        store.mark_delivered([advs[0].id, advs[1].id], "ent1", T0 + 1000)
        store.mark_delivered([advs[0].id], "ent1", T0 + 2000)  # the first delivery counts
        assert store.ack_advisory(advs[0].id, "ent1", T0 + 3000, "blocked", "ik_1").acked_at == T0 + 3000
        again = store.ack_advisory(advs[0].id, "ent1", T0 + 4000, "again", "ik_1")
        assert again.acked_at == T0 + 3000 and again.ack_note == "blocked"  # the first acknowledgement counts
        store.ack_advisory(advs[2].id, "ent0", T0 + 5000, "", "ik_0")
        assert store.ack_advisory(advs[2].id, "ent5", T0, "", "ik_5") is None  # not a recipient
    s, e = stores["sqlite"], stores["es"]
    for ent in (None, "ent0", "ent1", "ent4", "ent5"):
        pages = []
        for store in (s, e):
            out, cursor = [], None
            while True:
                page = store.list_advisories(ent, 2, cursor)
                out.append(([asdict(a) for a in page.items], page.total))
                cursor = page.next_cursor
                if not cursor:
                    break
            pages.append(out)
        assert pages[0] == pages[1]
    for a in advs:
        assert asdict(s.get_advisory(a.id)) == asdict(e.get_advisory(a.id))
        assert [asdict(r) for r in s.recipients(a.id)] == [asdict(r) for r in e.recipients(a.id)]
    ids = [a.id for a in advs]
    assert s.ack_counts(ids) == e.ack_counts(ids) and s.ack_counts(ids)[advs[0].id] == (2, 1)
    assert asdict(s.recipient(advs[1].id, "ent1")) == asdict(e.recipient(advs[1].id, "ent1"))
    assert e.get_advisory("adv_20260101_ffffffff") is None


def test_audit_log_agrees(stores: dict[str, Any]) -> None:
    entries = [
        AuditEntry(
            T0 + i,
            f"ik_{i % 3}",
            "enterprise",
            f"ent{i % 3}",
            "POST",
            "/api/v1/incidents",
            "POST /api/v1/incidents",
            f"incident:ent{i % 3}/inc-{i}",
            201 if i % 4 else 401,
            "ok" if i % 4 else "denied",
            "" if i % 4 else "bad_signature",
            "127.0.0.1",
            f"req{i:04d}",
        )
        for i in range(30)
    ]
    for store in stores.values():
        store.write_audit(entries[:10])
        store.write_audit(entries[10:])
    for f in (
        AuditFilter(limit=7),
        AuditFilter(actor="ik_1", limit=3),
        AuditFilter(result="denied"),
        AuditFilter(since=T0 + 5, until=T0 + 12, limit=4),
        AuditFilter(enterprise_id="ent2", action="POST /api/v1/incidents"),
    ):
        got = []
        for store in stores.values():
            items, cursor = [], None
            while True:
                page = store.search_audit(replace(f, cursor=cursor))
                items += [{k: v for k, v in i.items() if k != "seq"} for i in page.items]
                cursor = page.next_cursor
                if not cursor:
                    break
            got.append((items, page.total))
        assert got[0] == got[1] and got[0][1] == len(got[0][0]) > 0


def test_mappings_are_explicit_and_every_queried_field_is_indexable(stores: dict[str, Any]) -> None:
    from api.province import es_indices

    es = stores["es"]
    for kind, name in es_indices.names(es.prefix).items():
        mapping = es.es.indices.get_mapping(index=name)[name]["mappings"]
        assert str(mapping.get("dynamic")).lower() == "false"
        props = mapping["properties"]
        for field in es_indices.QUERY_FIELDS[kind]:
            spec = props[field]
            assert spec["type"] in ("keyword", "integer", "long", "double", "boolean"), (kind, field, spec)
            assert spec.get("index", True) is not False
    assert es.es.indices.get_index_template(name=es_indices.names(es.prefix)["incidents"])["index_templates"]
