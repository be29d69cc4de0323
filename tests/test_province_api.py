"""The provincial platform's API against a real uvicorn server on 127.0.0.1: intake idempotency,
deadlines and lateness, updates with history, advisories down and acknowledgements, the situational
picture, the published schema, and the OpenAPI snapshot. Every test runs twice: on the SQLite store
and on the Elasticsearch store (noida-db on 127.0.0.1, or ICSWATCH_TEST_ES_URL)."""

from __future__ import annotations

import base64
import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from es_testutil import es_server  # noqa: F401 (fixture)
from province_testutil import ThreadServer, dumps, make_platform, province_es_store, sample_report, signed_request

SNAPSHOT = Path(__file__).parent / "snapshots" / "province-openapi.json"


@pytest.fixture(scope="module", params=["sqlite", "es"])
def env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from api.province import ProvinceSettings, create_app

    db = tmp_path_factory.mktemp("province") / "province.db"
    plat = make_platform(db)
    store, cleanup = None, None
    if request.param == "es":
        store, cleanup = province_es_store(request.getfixturevalue("es_server"), db)
    app = create_app(ProvinceSettings(db=str(db)), store, master_key=base64.urlsafe_b64decode(plat.master_key))
    server = ThreadServer(app).start()
    client = httpx.Client(base_url=server.url, timeout=10)
    yield {"plat": plat, "client": client, "app": app, "url": server.url, "store": request.param}
    client.close()
    server.stop()
    if cleanup is not None:
        cleanup()


def staff(env: dict[str, Any], role: str = "analyst") -> dict[str, str]:
    return {"Authorization": "Bearer " + (env["plat"].analyst if role == "analyst" else env["plat"].admin)}


def iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def post(env: dict[str, Any], ent: str, report: dict[str, Any]) -> httpx.Response:
    return signed_request(env["client"], "POST", "/api/v1/incidents", env["plat"].keys[ent], dumps(report))


def test_intake_is_idempotent_and_computes_the_deadline(env: dict[str, Any]) -> None:
    discovered = datetime.now(timezone.utc) - timedelta(minutes=10)
    report = sample_report("api-idem-1", level=2, discovered_at=iso(discovered))
    r1 = post(env, "acme", report)
    assert r1.status_code == 201, r1.text
    body = r1.json()
    assert body["duplicate"] is False and body["enterprise_id"] == "acme" and body["level_name"] == "重大"
    # acme operates critical infrastructure: 1 hour from discovery
    assert body["deadline"] == iso(discovered + timedelta(hours=1)) and body["late"] is False
    r2 = post(env, "acme", report)
    assert r2.status_code == 200 and r2.json()["duplicate"] is True
    assert r2.json()["received_at"] == body["received_at"]
    listed = env["client"].get("/api/v1/incidents", params={"q": "api-idem-1"}, headers=staff(env)).json()
    assert listed["total"] == 1


def test_deadline_for_other_enterprises_lateness_and_voluntary_reports(env: dict[str, Any]) -> None:
    now = datetime.now(timezone.utc)
    beta = post(env, "beta", sample_report("api-dl-beta", level=3, discovered_at=iso(now - timedelta(hours=1)))).json()
    assert beta["deadline"] == iso(now - timedelta(hours=1) + timedelta(hours=4)) and beta["late"] is False
    late = post(env, "acme", sample_report("api-dl-late", level=1, discovered_at=iso(now - timedelta(hours=2)))).json()
    assert late["late"] is True  # CII, 2 h after discovery: past the 1 h deadline
    general = post(env, "beta", sample_report("api-dl-general", level=4, discovered_at=iso(now))).json()
    assert general["deadline"] is None and general["late"] is False  # 一般: not mandatory
    lates = env["client"].get("/api/v1/incidents", params={"late": "true"}, headers=staff(env)).json()
    assert "api-dl-late" in [i["incident_id"] for i in lates["items"]]


def test_updates_keep_history_are_idempotent_and_escalation_starts_the_clock(env: dict[str, Any]) -> None:
    now = datetime.now(timezone.utc)
    post(env, "beta", sample_report("api-upd-1", level=4, discovered_at=iso(now - timedelta(hours=5))))
    key = env["plat"].keys["beta"]
    c = env["client"]
    up1 = {
        "update_id": "u1",
        "level": 3,
        "status": "handling",
        "add_measures": [{"text": "isolated the engineering VLAN"}],
    }
    r = signed_request(c, "PATCH", "/api/v1/incidents/api-upd-1", key, dumps(up1))
    assert r.status_code == 200, r.text
    # raised into the mandatory levels 5 h after discovery: beta's deadline (4 h) has passed
    assert r.json()["late"] is True and r.json()["deadline"] == iso(now - timedelta(hours=1))
    again = signed_request(c, "PATCH", "/api/v1/incidents/api-upd-1", key, dumps(up1))
    assert again.status_code == 200 and again.json()["duplicate"] is True
    final = {
        "update_id": "u2",
        "trend": "resolved",
        "final_report": {"summary": "contained", "root_cause": "shared password"},
    }
    r = signed_request(c, "PATCH", "/api/v1/incidents/api-upd-1", key, dumps(final))
    assert r.json()["status"] == "closed" and r.json()["revision"] == 3
    hist = signed_request(c, "GET", "/api/v1/incidents/api-upd-1/history", key).json()
    assert [h["update_id"] for h in hist["items"]] == ["u1", "u2"]
    detail = c.get("/api/v1/incidents/api-upd-1", headers=staff(env)).json()
    assert [m["text"] for m in detail["report"]["measures"]] == ["isolated the engineering VLAN"]
    assert detail["report"]["final_report"]["root_cause"] == "shared password"
    bad = signed_request(c, "PATCH", "/api/v1/incidents/api-upd-1", key, dumps({"update_id": "u3"}))
    assert bad.status_code == 422  # an update that changes nothing


def test_advisories_down_and_acknowledged(env: dict[str, Any]) -> None:
    c = env["client"]
    keys = env["plat"].keys
    r = c.post(
        "/api/v1/advisories",
        headers=staff(env),
        json={
            "title": "Modbus write campaign",
            "body": "Block TCP/502 from office networks.",
            "kind": "warning",
            "severity": "high",
            "targets": {"cities": ["福州"], "industries": ["水务"]},
            "techniques": ["T0855"],
        },
    )
    assert r.status_code == 201, r.text
    adv = r.json()
    assert adv["recipients"] == 2  # acme (福州) and gamma (水务), not beta
    for ent, sees in (("acme", True), ("gamma", True), ("beta", False)):
        items = signed_request(c, "GET", "/api/v1/advisories", keys[ent]).json()["items"]
        assert (adv["id"] in [a["id"] for a in items]) is sees
    ack = signed_request(
        c, "POST", f"/api/v1/advisories/{adv['id']}/ack", keys["acme"], dumps({"note": "blocked at the firewall"})
    )
    assert ack.status_code == 200 and ack.json()["duplicate"] is False
    again = signed_request(c, "POST", f"/api/v1/advisories/{adv['id']}/ack", keys["acme"], b"{}")
    assert again.json()["duplicate"] is True
    denied = signed_request(c, "POST", f"/api/v1/advisories/{adv['id']}/ack", keys["beta"], b"{}")
    assert denied.status_code == 404
    acks = c.get(f"/api/v1/advisories/{adv['id']}/acks", headers=staff(env)).json()
    assert acks["acknowledged"] == 1 and acks["recipients"] == 2
    by = {i["enterprise_id"]: i for i in acks["items"]}
    assert by["acme"]["acknowledged_at"] and by["acme"]["note"] == "blocked at the firewall"
    assert by["gamma"]["acknowledged_at"] is None and by["gamma"]["delivered_at"]  # fetched, not yet acknowledged


def test_situation_aggregates(env: dict[str, Any]) -> None:
    post(
        env,
        "gamma",
        sample_report(
            "api-sit-1",
            level=2,
            protocols=["dnp3"],
            techniques=["T0836"],
            affected_assets=[{"address": "int-aa", "asset_type": "rtu"}],
        ),
    )
    s = env["client"].get("/api/v1/situation", params={"interval": 3600}, headers=staff(env)).json()
    listed = env["client"].get("/api/v1/incidents", params={"limit": 1}, headers=staff(env)).json()
    assert s["totals"]["incidents"] == listed["total"]
    assert {r["key"] for r in s["by_city"]} >= {"福州", "深圳", "北京"}
    assert any(r["key"] == "dnp3" for r in s["by_protocol"])
    assert any(r["key"] == "T0836" for r in s["by_technique"])
    assert any(r["key"] == "rtu" for r in s["by_asset_type"])
    assert {r["key"] for r in s["by_level"]} >= {1, 2, 3, 4}
    assert s["totals"]["late"] == sum(1 for _ in s["late_reports"]) or s["totals"]["late"] > len(s["late_reports"])
    assert sum(r["count"] for r in s["timeline"]) == s["totals"]["incidents"]
    filtered = env["client"].get("/api/v1/situation", params={"city": "北京"}, headers=staff(env)).json()
    assert filtered["by_city"] == [{"key": "北京", "count": filtered["totals"]["incidents"]}]


def test_published_schema_validates_what_the_forwarder_sends(env: dict[str, Any]) -> None:
    import jsonschema

    from alerts.forwarder import RedactionPolicy, Redactor, build_report
    from alerts.incidents import IncidentGrouper
    from province_testutil import incident_with_alerts

    schema = env["client"].get("/api/v1/schema/incident").json()
    assert schema["x-schema-version"] == "1" and schema["$id"].endswith(":1")
    inc, docs = incident_with_alerts(IncidentGrouper)
    report = build_report(inc.to_ecs(), [], {}, enterprise_id="acme", site="Plant 1", sensor="s1", discovered_at=1.7e9)
    report = Redactor(RedactionPolicy(), b"salt").apply(report)
    jsonschema.validate(report, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**report, "level": 7}, schema)


def test_openapi_snapshot(env: dict[str, Any]) -> None:
    spec = env["client"].get("/openapi.json").json()
    text = json.dumps(spec, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    if os.environ.get("UPDATE_SNAPSHOTS") or not SNAPSHOT.exists():
        SNAPSHOT.parent.mkdir(parents=True, exist_ok=True)
        SNAPSHOT.write_text(text, encoding="utf-8")
    assert text == SNAPSHOT.read_text(encoding="utf-8"), "the API changed: review, then UPDATE_SNAPSHOTS=1 pytest"
