"""The enterprise API against a real ``icswatch serve`` (uvicorn on 127.0.0.1) over the demo captures of
pcaps/ replayed into a temporary store: every route, the roles (no token, no data; a viewer cannot
acknowledge), the analyst workflow and its audit trail, the limits and the security headers."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_api_support import REPO, ApiEnv, api_env

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def env(request: pytest.FixtureRequest) -> ApiEnv:
    return api_env(request)


@pytest.fixture(scope="module")
def viewer(env: ApiEnv) -> httpx.Client:
    return env.client("viewer")


@pytest.fixture(scope="module")
def analyst(env: ApiEnv) -> httpx.Client:
    return env.client("analyst")


@pytest.fixture(scope="module")
def admin(env: ApiEnv) -> httpx.Client:
    return env.client("admin")


def all_alerts(c: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    out, cursor = [], None
    while True:
        page = c.get("/api/v1/alerts", params={**params, "limit": 7, **({"cursor": cursor} if cursor else {})}).json()
        out.extend(page["items"])
        cursor = page["next_cursor"]
        if not cursor:
            return out


def sample_paths(env: ApiEnv, viewer: httpx.Client) -> dict[str, str]:
    """A real value for every path parameter."""
    alert = viewer.get("/api/v1/alerts", params={"limit": 1, "status": "open"}).json()["items"][0]
    incident = viewer.get("/api/v1/incidents", params={"limit": 1}).json()["items"][0]
    asset = viewer.get("/api/v1/assets", params={"limit": 1}).json()["items"][0]
    rule = viewer.get("/api/v1/rules").json()["items"][0]
    return {"alert_id": alert["id"], "incident_id": incident["id"], "address": asset["address"], "rule_id": rule["id"],
            "job_id": "job_0000000000000000", "token_id": "tok_000000000000", "suppression_id": "sup_000000000000"}


# --- no token, no data ----------------------------------------------------------------------------


def test_health_needs_no_token_and_shows_no_data(env: ApiEnv) -> None:
    r = httpx.get(env.url + "/api/v1/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and set(body["checks"]) == {"alert_store", "state", "jobs"}
    assert "alerts" not in json.dumps(body).replace("alert_store", "")


def test_every_route_refuses_without_a_valid_token(env: ApiEnv, viewer: httpx.Client) -> None:
    spec = viewer.get("/openapi.json").json()
    values = sample_paths(env, viewer)
    checked = 0
    with httpx.Client(base_url=env.url, timeout=30) as anon:
        for path, ops in spec["paths"].items():
            if path == "/api/v1/health":
                continue
            url = re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], path)
            for method in ops:
                for headers in ({}, {"Authorization": "Bearer icsw_" + "x" * 43}, {"Authorization": "Basic dXNlcjpwYXNz"}):
                    r = anon.request(method.upper(), url, headers=headers, content=b"{}" if method == "post" else None)
                    assert r.status_code == 401, (method, url, headers, r.status_code, r.text[:200])
                    assert r.json()["error"]["code"] in ("missing_token", "bad_token", "bad_authorization")
                    assert r.headers["www-authenticate"].startswith("Bearer")
                    assert "items" not in r.text
                checked += 1
    assert checked >= 40


def test_viewer_reads_but_cannot_write(env: ApiEnv, viewer: httpx.Client, analyst: httpx.Client) -> None:
    a = viewer.get("/api/v1/alerts", params={"limit": 1, "status": "open"}).json()["items"][0]
    for path, body in (
        (f"/api/v1/alerts/{a['id']}/acknowledge", {}),
        (f"/api/v1/alerts/{a['id']}/close", {"reason": "x"}),
        (f"/api/v1/alerts/{a['id']}/comments", {"text": "x"}),
        (f"/api/v1/alerts/{a['id']}/false-positive", {"reason": "x"}),
        ("/api/v1/rules/reload", None),
        ("/api/v1/tokens", {"name": "x", "role": "admin"}),
    ):
        r = viewer.post(path, json=body)
        assert r.status_code == 403, (path, r.text)
        assert r.json()["error"]["code"] == "forbidden"
    assert viewer.get(f"/api/v1/alerts/{a['id']}").json()["status"] == "open"
    # analysts cannot do the admin's work either
    assert analyst.post("/api/v1/rules/reload").status_code == 403
    assert analyst.get("/api/v1/tokens").status_code == 403
    assert analyst.get("/api/v1/audit").status_code == 403
    assert viewer.get("/api/v1/auth/me").json()["role"] == "viewer"


# --- alerts ---------------------------------------------------------------------------------------------


def test_alert_search_filters_sort_and_cursor_pages(env: ApiEnv, viewer: httpx.Client) -> None:
    page = viewer.get("/api/v1/alerts", params={"limit": 500}).json()
    assert page["total"] == env.replay["alerts"] == len(page["items"]) and page["next_cursor"] is None
    items = page["items"]
    ts = [a["ts"] for a in items]
    assert ts == sorted(ts, reverse=True)
    # every page of 7, following the cursor, gives each alert once and in order
    paged = all_alerts(viewer)
    assert [a["id"] for a in paged] == [a["id"] for a in items]
    oldest = all_alerts(viewer, sort="ts")
    assert [a["id"] for a in oldest] == [a["id"] for a in reversed(items)] or [a["ts"] for a in oldest] == sorted(ts)
    gravest = viewer.get("/api/v1/alerts", params={"sort": "-severity", "limit": 500}).json()["items"]
    assert [a["severity_score"] for a in gravest] == sorted((a["severity_score"] for a in items), reverse=True)

    def count(**params: Any) -> int:
        r = viewer.get("/api/v1/alerts", params={**params, "limit": 1})
        assert r.status_code == 200, r.text
        return r.json()["total"]

    assert count(severity="high") == sum(a["severity"] == "high" for a in items)
    assert count(severity=["high", "critical"]) == sum(a["severity"] in ("high", "critical") for a in items)
    assert count(min_severity="high") == sum(a["severity"] in ("high", "critical") for a in items)
    assert count(protocol="modbus") == sum(a["protocol"] == "modbus" for a in items) > 0
    rule = items[-1]["rule_id"]
    assert count(rule=rule) == sum(a["rule_id"] == rule for a in items) > 0
    assert count(technique="T0855") == sum("T0855" in a["techniques"] for a in items) > 0
    asset = items[0]["asset"]
    assert count(asset=asset) == sum(a["asset"] == asset for a in items) > 0
    ip = items[0]["src"]
    assert count(ip=ip) == sum(ip in (a["src"], a["dst"]) for a in items) > 0
    assert count(status="open") + count(status=["acknowledged", "closed", "false_positive"]) == len(items)
    found = {a["id"] for a in viewer.get("/api/v1/alerts", params={"q": "UMAS", "limit": 500}).json()["items"]}
    assert found >= {a["id"] for a in items if "umas" in (a["rule_id"] + a["rule_name"]).lower()} and found
    mid = sorted(ts)[len(ts) // 2]
    from datetime import UTC, datetime

    iso = datetime.fromtimestamp(mid, UTC).isoformat()
    assert count(start=iso) == sum(t >= mid for t in ts)
    assert count(end=iso) == sum(t < mid for t in ts)
    assert count(start=iso.replace("+00:00", "")) == sum(t >= mid for t in ts)  # no zone: UTC
    # bad input is a 4xx with the error shape, never a 5xx
    for params in ({"severity": "huge"}, {"limit": 0}, {"limit": 501}, {"sort": "rule"}, {"start": "yesterday"},
                   {"dataset": "../etc"}, {"q": "x" * 201}):
        r = viewer.get("/api/v1/alerts", params=params)
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request", (params, r.text)
    r = viewer.get("/api/v1/alerts", params={"cursor": "not-a-cursor"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_query"
    r = viewer.get("/api/v1/alerts", params={"dataset": "job_0123456789abcdef"})
    assert r.status_code == 404


def test_alert_detail_has_its_evidence_and_context(viewer: httpx.Client) -> None:
    items = viewer.get("/api/v1/alerts", params={"limit": 500, "protocol": "modbus"}).json()["items"]
    detailed = 0
    for a in items[:10]:
        d = viewer.get(f"/api/v1/alerts/{a['id']}").json()
        assert d["id"] == a["id"] and d["ecs"]["event"]["id"] == a["id"] and d["ecs"]["event"]["kind"] == "alert"
        roles = [e["role"] for e in d["events"]]
        assert "evidence" in roles
        assert roles == sorted(roles, key=["before", "evidence", "after"].index)
        ev = [e for e in d["events"] if e["role"] == "evidence"]
        assert len(ev) == len(d["ecs"]["ics"]["evidence"])
        assert all(e["protocol"] == "modbus" for e in ev)
        assert d["description"] and d["evidence_summary"]
        detailed += 1
    assert detailed
    r = viewer.get("/api/v1/alerts/0123456789abcdef01234567")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert viewer.get("/api/v1/alerts/bad id!").status_code in (404, 422)


def test_alert_workflow_is_recorded_and_audited(env: ApiEnv, viewer: httpx.Client, analyst: httpx.Client, admin: httpx.Client) -> None:
    a = viewer.get("/api/v1/alerts", params={"limit": 1, "status": "open", "sort": "ts"}).json()["items"][0]
    base = f"/api/v1/alerts/{a['id']}"
    r = analyst.post(base + "/acknowledge", json={"comment": "looking"})
    assert r.status_code == 200, r.text
    assert r.json()["alert"]["status"] == "acknowledged" and r.json()["activity"]["detail"]["from"] == "open"
    r = analyst.post(base + "/acknowledge")
    assert r.status_code == 409 and r.json()["error"]["code"] == "no_change"
    r = analyst.post(base + "/assign", json={"assignee": "alice"})
    assert r.json()["alert"]["assignee"] == "alice"
    r = analyst.post(base + "/comments", json={"text": "PLC-1 maintenance window? 维护窗口"})
    assert r.status_code == 201 and r.json()["alert"]["comments"] == 1
    r = analyst.post(base + "/close", json={"reason": "planned maintenance, CR-2291"})
    assert r.json()["alert"]["status"] == "closed"
    r = analyst.post(base + "/close", json={"reason": "again"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "no_change"
    r = analyst.post(base + "/acknowledge")
    assert r.status_code == 409 and r.json()["error"]["code"] == "bad_transition"
    d = viewer.get(base).json()
    assert d["status"] == "closed" and d["close_reason"] == "planned maintenance, CR-2291" and d["assignee"] == "alice"
    assert [x["action"] for x in d["activity"]] == ["acknowledge", "assign", "comment", "close"]
    assert all(x["actor"].startswith("analyst-test (tok_") for x in d["activity"])
    r = analyst.post(base + "/reopen", json={"comment": "not maintenance after all"})
    assert r.json()["alert"]["status"] == "open"
    r = analyst.post(base + "/assign", json={"assignee": None})
    assert r.json()["alert"]["assignee"] is None
    assert viewer.get("/api/v1/alerts", params={"q": a["rule_id"], "status": "open", "limit": 500}).json()["total"] >= 1
    # bodies are checked: unknown keys, empty reasons
    assert analyst.post(base + "/close", json={"reason": ""}).status_code == 422
    assert analyst.post(base + "/close", json={"reason": "x", "by": "mallory"}).status_code == 422
    assert analyst.post(base + "/close", content=b"{not json", headers={"Content-Type": "application/json"}).status_code == 400
    # the audit log has every write, with who and the answer, the refused ones included
    viewer.post(base + "/acknowledge")  # 403
    log = admin.get("/api/v1/audit", params={"limit": 1000}).json()["items"]
    mine = [e for e in log if e["path"].startswith(base)]
    assert [e["action"].split()[1].rsplit("/", 1)[-1] for e in mine][::-1][:5] == ["acknowledge", "acknowledge", "assign", "comments", "close"]
    statuses = {(e["actor"].split(" ")[0], e["status"]) for e in mine}
    assert ("analyst-test", 200) in statuses and ("analyst-test", 409) in statuses and ("viewer-test", 403) in statuses
    assert all(e["ts"] > time.time() - 600 and e["client"] == "127.0.0.1" for e in mine)
    # reads are not in the audit log
    assert not any(e["method"] == "GET" for e in log)


def test_false_positive_adds_a_standing_suppression(env: ApiEnv, viewer: httpx.Client, analyst: httpx.Client, admin: httpx.Client) -> None:
    a = next(x for x in viewer.get("/api/v1/alerts", params={"limit": 500, "status": "open"}).json()["items"]
             if not x["rule_id"].startswith("baseline-"))
    r = analyst.post(f"/api/v1/alerts/{a['id']}/false-positive", json={"reason": "the new HMI", "scope": "pair", "days": 30})
    assert r.status_code == 200, r.text
    body = r.json()
    sup = body["suppression"]
    assert body["alert"]["status"] == "false_positive"
    assert (sup["rule"], sup["src"], sup["dst"], sup["alert_id"]) == (a["rule_id"], a["src"], a["dst"], a["id"])
    assert sup["until"] > time.time() + 29 * 86400
    listed = viewer.get("/api/v1/rules/suppressions").json()
    assert any(s["id"] == sup["id"] for s in listed)
    exported = viewer.get("/api/v1/rules/overrides").json()
    assert {"rule": a["rule_id"], "src": a["src"], "dst": a["dst"], "until": sup["until"], "reason": "the new HMI"} in exported["rules"]["suppress"]
    r = analyst.post(f"/api/v1/alerts/{a['id']}/false-positive", json={"reason": "again"})
    assert r.status_code == 409
    # baseline acceptance is for baseline alerts only
    b = next(x for x in viewer.get("/api/v1/alerts", params={"limit": 500, "status": "open"}).json()["items"]
             if not x["rule_id"].startswith("baseline-"))
    r = analyst.post(f"/api/v1/alerts/{b['id']}/false-positive", json={"reason": "x", "action": "baseline"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "not_a_baseline_alert"
    assert admin.delete(f"/api/v1/rules/suppressions/{sup['id']}").status_code == 204
    assert admin.delete(f"/api/v1/rules/suppressions/{sup['id']}").status_code == 404


def test_false_positive_accepts_a_baseline_deviation(env: ApiEnv, viewer: httpx.Client, analyst: httpx.Client) -> None:
    before = viewer.get("/api/v1/baseline").json()
    assert before["counts"]["accepted"] == 0 and before["counts"]["assets"] > 0 and before["counts"]["pairs"] > 0
    a = viewer.get("/api/v1/alerts", params={"rule": "baseline-new-asset", "limit": 1}).json()["items"][0]
    text_before = (env.dir / "baseline.yaml").read_text()
    r = analyst.post(f"/api/v1/alerts/{a['id']}/false-positive", json={"reason": "new historian, CR-7", "action": "baseline"})
    assert r.status_code == 200, r.text
    rec = r.json()["baseline"]
    assert rec["alert"] == a["id"] and rec["by"] == "analyst-test" and rec["why"] == "new historian, CR-7"
    assert rec["change"]["kind"] == "asset"
    accepted = viewer.get("/api/v1/baseline/accepted").json()
    assert accepted["total"] == 1 and accepted["items"][0]["alert"] == a["id"]
    after = viewer.get("/api/v1/baseline").json()
    assert after["counts"]["assets"] >= before["counts"]["assets"]
    text = (env.dir / "baseline.yaml").read_text()
    assert text != text_before and a["id"] in text and "new historian, CR-7" in text


# --- incidents --------------------------------------------------------------------------------------------


def test_incidents_list_detail_timeline_and_workflow(env: ApiEnv, viewer: httpx.Client, analyst: httpx.Client) -> None:
    page = viewer.get("/api/v1/incidents", params={"limit": 500}).json()
    assert page["total"] == env.replay["incidents"] == len(page["items"])
    levels = [i["level"] for i in page["items"]]
    assert set(levels) <= {1, 2, 3, 4} and all(i["level_name"] for i in page["items"])
    assert viewer.get("/api/v1/incidents", params={"level": [1, 2], "limit": 1}).json()["total"] == sum(lv <= 2 for lv in levels)
    gravest = viewer.get("/api/v1/incidents", params={"sort": "-severity", "limit": 500}).json()["items"]
    assert len(gravest) == len(page["items"])
    inc = max(page["items"], key=lambda i: i["alert_count"])
    d = viewer.get(f"/api/v1/incidents/{inc['id']}").json()
    assert len(d["alerts"]) == inc["alert_count"] and all(a["incident_id"] == inc["id"] for a in d["alerts"])
    assert [a["ts"] for a in d["alerts"]] == sorted(a["ts"] for a in d["alerts"])
    assert viewer.get("/api/v1/alerts", params={"incident": inc["id"], "limit": 1}).json()["total"] == inc["alert_count"]
    base = f"/api/v1/incidents/{inc['id']}"
    assert analyst.post(base + "/status", json={"status": "acknowledged"}).json()["incident"]["status"] == "acknowledged"
    assert analyst.post(base + "/assign", json={"assignee": "bob"}).json()["incident"]["assignee"] == "bob"
    assert analyst.post(base + "/comments", json={"text": "isolating PLC-1"}).status_code == 201
    r = analyst.post(base + "/status", json={"status": "closed", "comment": "contained"})
    assert r.json()["incident"]["status"] == "closed"
    r = analyst.post(base + "/status", json={"status": "acknowledged"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "bad_transition"
    assert analyst.post(base + "/status", json={"status": "open"}).json()["incident"]["status"] == "open"
    assert analyst.post(base + "/status", json={"status": "pending"}).status_code == 422
    tl = viewer.get(base + "/timeline").json()["entries"]
    assert sum(e["kind"] == "alert" for e in tl) == inc["alert_count"]
    actions = [e["title"] for e in tl if e["kind"] == "activity"]
    assert actions == ["status", "assign", "comment", "status", "status"]
    assert [e["ts"] for e in tl] == sorted(e["ts"] for e in tl)
    assert viewer.get("/api/v1/incidents/nope-nope").status_code == 404
    assert viewer.post(base + "/report", json={}).status_code == 403


def test_report_without_linkage_is_recorded_only(viewer: httpx.Client, analyst: httpx.Client) -> None:
    inc = viewer.get("/api/v1/incidents", params={"limit": 1, "sort": "severity"}).json()["items"][0]
    r = analyst.post(f"/api/v1/incidents/{inc['id']}/report", json={"note": "per 管理办法 §12"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["linkage_enabled"] is False and body["queued"] == 0 and "not enabled" in body["message"]
    assert body["mark"]["marked_by"].startswith("analyst-test")
    d = viewer.get(f"/api/v1/incidents/{inc['id']}").json()
    assert d["reported"] is True and d["report"]["note"] == "per 管理办法 §12"
    assert any(i["id"] == inc["id"] and i["reported"] for i in viewer.get("/api/v1/incidents", params={"limit": 500}).json()["items"])


@pytest.fixture(scope="module")
def second(env: ApiEnv) -> tuple[Any, dict[str, str]]:
    """A second server: linkage enabled (reports go to its outbox), tiny rate limits, one CORS origin."""
    outbox = env.dir / "second-outbox.db"
    return env.copy(
        "second",
        {"linkage": {"enabled": True, "url": "http://127.0.0.1:9", "key_id": "ik_test", "outbox": str(outbox)},
         "sensor": {"name": "plant-1-sensor", "site": "Plant 1", "enterprise_id": "acme"}},
        rate_limit=2, rate_burst=6, cors_origins=["https://soc.example"],
    )


def test_report_with_linkage_is_queued_in_the_outbox(env: ApiEnv, second: tuple[Any, dict[str, str]]) -> None:
    from alerts.outbox import Outbox

    server, tokens = second
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {tokens['analyst']}"}, timeout=30) as c:
        inc = c.get("/api/v1/incidents", params={"limit": 1, "sort": "severity"}).json()["items"][0]
        r = c.post(f"/api/v1/incidents/{inc['id']}/report", json={"note": "level II"})
        assert r.status_code == 200, r.text
        assert r.json()["linkage_enabled"] is True and r.json()["queued"] == 1 and "outbox" in r.json()["message"]
        time.sleep(0.6)  # the rate limit refills
        assert c.post(f"/api/v1/incidents/{inc['id']}/report", json={}).json()["queued"] == 0  # nothing new
    box = Outbox(env.dir / "second-outbox.db")
    try:
        entries = box.entries()
        assert [(e["kind"], e["incident_id"]) for e in entries] == [("report", inc["id"])]
        report = json.loads(box.body(entries[0]["seq"]))
        assert report["incident_id"] == inc["id"] and report["level"] == inc["level"]
    finally:
        box.close()


def test_rate_limit_and_cors(env: ApiEnv, second: tuple[Any, dict[str, str]]) -> None:
    server, tokens = second
    codes = []
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {tokens['viewer']}"}, timeout=30) as c:
        for _ in range(20):
            r = c.get("/api/v1/auth/me")
            codes.append(r.status_code)
            if r.status_code == 429:
                assert int(r.headers["retry-after"]) >= 1 and r.json()["error"]["code"] == "rate_limited"
        assert codes[:6] == [200] * 6 and 429 in codes
        # another client (another token) has its own bucket; health is never limited
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {tokens['admin']}"}, timeout=30) as other:
            assert other.get("/api/v1/auth/me").status_code == 200
        assert all(httpx.get(server.url + "/api/v1/health").status_code == 200 for _ in range(10))
        time.sleep(1.2)
        r = c.options("/api/v1/alerts", headers={"Origin": "https://soc.example", "Access-Control-Request-Method": "GET",
                                                 "Access-Control-Request-Headers": "authorization"})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://soc.example"
        r = c.options("/api/v1/alerts", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"})
        assert "access-control-allow-origin" not in r.headers
    # the main server allows no other origin at all
    r = httpx.options(env.url + "/api/v1/alerts", headers={"Origin": "https://soc.example", "Access-Control-Request-Method": "GET"})
    assert "access-control-allow-origin" not in r.headers


# --- assets, baseline, rules, stats, sensors, metrics -----------------------------------------------------------


def test_assets_table_detail_csv_and_graph(env: ApiEnv, viewer: httpx.Client) -> None:
    page = viewer.get("/api/v1/assets", params={"limit": 1000}).json()
    assert page["total"] == env.replay["assets"] == len(page["items"])
    plcs = viewer.get("/api/v1/assets", params={"role": "plc", "limit": 1000}).json()
    assert plcs["total"] == sum(a["role"] == "plc" for a in page["items"]) > 0
    modbus = viewer.get("/api/v1/assets", params={"protocol": "modbus", "limit": 1000}).json()
    assert all("modbus" in {**a["client_protocols"], **a["server_protocols"]} for a in modbus["items"])
    second = viewer.get("/api/v1/assets", params={"limit": 5, "offset": 5}).json()["items"]
    assert [a["address"] for a in second] == [a["address"] for a in page["items"][5:10]]
    by_alerts = viewer.get("/api/v1/assets", params={"sort": "-alerts", "limit": 1000}).json()["items"]
    assert by_alerts[0]["alerts"] == max(a["alerts"] for a in page["items"]) > 0
    plc = max(plcs["items"], key=lambda a: a["alerts"])
    d = viewer.get(f"/api/v1/assets/{plc['address']}").json()
    assert d["talkers"] and all(t["protocols"] for t in d["talkers"] if t["direction"] != "unknown")
    assert any(t["direction"] == "server" for t in d["talkers"])  # a PLC answers its masters
    assert d["alerts"] == plc["alerts"] and d["recent_alerts"]
    assert sum(b["count"] for b in d["alerts_by_rule"]) >= d["alerts"]
    assert viewer.get("/api/v1/assets/10.99.99.99").status_code == 404
    r = viewer.get("/api/v1/assets/export.csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(r.content.decode("utf-8-sig"))))
    assert len(rows) == page["total"] and rows[0]["address"] == page["items"][0]["address"]
    assert all(not row[k].startswith(("=", "+", "-", "@")) for row in rows for k in row)
    g = viewer.get("/api/v1/assets/graph").json()
    ids = {n["id"] for n in g["nodes"]}
    assert g["edges"] and all(e["source"] in ids and e["target"] in ids and e["protocol"] for e in g["edges"])
    assert any(e["alerts"] for e in g["edges"]) and any(e["protocol"] == "modbus" for e in g["edges"])
    assert {e["protocol"] for e in g["edges"]} >= {"modbus", "iec104", "dnp3"}


def test_rules_list_switch_reload(viewer: httpx.Client, admin: httpx.Client) -> None:
    rules = viewer.get("/api/v1/rules").json()
    assert rules["total"] == len(rules["items"]) >= 20 and rules["enabled"] <= rules["total"] and rules["problems"] == []
    fired = [r for r in rules["items"] if r["alerts"]]
    assert fired and sum(r["alerts"] for r in rules["items"]) <= viewer.get("/api/v1/alerts", params={"limit": 1}).json()["total"]
    rid = fired[0]["id"]
    one = viewer.get(f"/api/v1/rules/{rid}").json()
    assert one["id"] == rid and one["enabled"] and one["file"].startswith("rules/")
    assert viewer.post(f"/api/v1/rules/{rid}/disable").status_code == 403
    r = admin.post(f"/api/v1/rules/{rid}/disable")
    assert r.status_code == 200 and r.json()["enabled"] is False and r.json()["override"]["by"].startswith("admin-test")
    after = viewer.get("/api/v1/rules").json()
    assert after["enabled"] == rules["enabled"] - 1
    assert rid in viewer.get("/api/v1/rules/overrides").json()["rules"]["disabled"]
    r = admin.post("/api/v1/rules/reload")
    assert r.status_code == 200 and r.json()["rules"] == rules["total"] and r.json()["enabled"] == rules["enabled"] - 1
    assert admin.post(f"/api/v1/rules/{rid}/enable").json()["enabled"] is True
    assert viewer.get("/api/v1/rules").json()["enabled"] == rules["enabled"]
    assert admin.post("/api/v1/rules/no-such-rule/disable").status_code == 404
    r = admin.post("/api/v1/rules/suppressions", json={"rule": "modbus-*", "src": "not-an-ip", "reason": "x"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_suppression"
    r = admin.post("/api/v1/rules/suppressions", json={"rule": "modbus-*", "src": "@allowed_masters", "reason": "masters"})
    assert r.status_code == 201
    assert admin.delete(f"/api/v1/rules/suppressions/{r.json()['id']}").status_code == 204


def test_stats(env: ApiEnv, viewer: httpx.Client) -> None:
    s = viewer.get("/api/v1/stats/summary").json()
    assert s["alerts"] == env.replay["alerts"] == sum(s["by_severity"].values()) == sum(s["by_status"].values())
    assert s["incidents"] == env.replay["incidents"] and s["assets"] == env.replay["assets"]
    assert s["first_alert"] <= s["last_alert"]
    for by in ("severity", "protocol", "rule", "technique", "status", "asset", "src", "dst"):
        c = viewer.get("/api/v1/stats/counts", params={"by": by}).json()
        assert c["by"] == by and c["buckets"]
        if by != "technique":
            assert sum(b["count"] for b in c["buckets"]) == s["alerts"], by
    sev = {b["key"]: b["count"] for b in viewer.get("/api/v1/stats/counts", params={"by": "severity"}).json()["buckets"]}
    assert sev == {k: v for k, v in s["by_severity"].items() if v}
    t = viewer.get("/api/v1/stats/counts", params={"by": "severity", "interval": 3600}).json()
    assert all(b["bucket"] % 3600 == 0 for b in t["buckets"]) and sum(b["count"] for b in t["buckets"]) == s["alerts"]
    auto = viewer.get("/api/v1/stats/counts", params={"by": "protocol", "auto": "true"}).json()
    assert auto["interval"] >= 1 and sum(b["count"] for b in auto["buckets"]) == s["alerts"]
    only = viewer.get("/api/v1/stats/counts", params={"by": "rule", "protocol": "iec104"}).json()
    assert sum(b["count"] for b in only["buckets"]) == viewer.get("/api/v1/alerts", params={"protocol": "iec104"}).json()["total"]
    tt = viewer.get("/api/v1/stats/top-talkers", params={"limit": 3}).json()
    assert len(tt["sources"]) <= 3 and tt["sources"][0]["count"] >= tt["sources"][-1]["count"]
    assert tt["busiest_assets"][0]["events"] >= tt["busiest_assets"][-1]["events"]
    assert viewer.get("/api/v1/stats/counts", params={"by": "password"}).status_code == 422


def test_sensors_and_metrics(env: ApiEnv, viewer: httpx.Client) -> None:
    items = {s["name"]: s for s in viewer.get("/api/v1/sensors").json()["items"]}
    assert items["sensor-1"]["status"] == "running" and items["sensor-1"]["processed"] == 119995 and items["sensor-1"]["dropped"] == 5
    assert items["sensor-gone"]["status"] == "missing"
    assert httpx.get(env.url + "/metrics").status_code == 401
    r = viewer.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: dict[str, float] = {}
    for line in r.text.splitlines():
        if line.startswith("#") or not line:
            continue
        m = re.fullmatch(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? (-?[0-9.e+]+)', line)
        assert m, line
        samples[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    assert sum(v for k, v in samples.items() if k.startswith("icswatch_alerts_stored{")) == env.replay["alerts"]
    assert samples['icswatch_sensor_up{sensor="sensor-1"}'] == 1 and samples['icswatch_sensor_up{sensor="sensor-gone"}'] == 0
    assert samples['icswatch_sensor_counter_total{sensor="sensor-1",name="tcp_gap"}'] == 4
    assert samples["icswatch_assets"] == env.replay["assets"]
    assert any(k.startswith("icswatch_api_requests_total{") for k in samples)


# --- tokens, limits, headers, docs, CLI ------------------------------------------------------------------------


def test_tokens_issue_list_revoke(env: ApiEnv, admin: httpx.Client) -> None:
    r = admin.post("/api/v1/tokens", json={"name": "carol", "role": "analyst", "days": 1})
    assert r.status_code == 201
    tok = r.json()
    assert tok["token"].startswith("icsw_") and tok["expires_at"] > time.time()
    listed = admin.get("/api/v1/tokens").json()["items"]
    assert any(t["id"] == tok["id"] for t in listed) and tok["token"] not in json.dumps(listed)
    with httpx.Client(base_url=env.url, headers={"Authorization": f"Bearer {tok['token']}"}) as c:
        assert c.get("/api/v1/auth/me").json() == {"token_id": tok["id"], "name": "carol", "role": "analyst"}
        assert admin.delete(f"/api/v1/tokens/{tok['id']}").json()["revoked_at"]
        r = c.get("/api/v1/auth/me")
        assert r.status_code == 401 and r.json()["error"]["code"] == "revoked_token"
    assert admin.post("/api/v1/tokens", json={"name": "x", "role": "root"}).status_code == 422
    # only hashes are stored
    import sqlite3

    con = sqlite3.connect(env.dir / "api-state.db")
    stored = [r[0] for r in con.execute("SELECT hash FROM tokens")]
    con.close()
    assert tok["token"] not in stored and all(re.fullmatch(r"[0-9a-f]{64}", h) for h in stored)


def test_body_limit_security_headers_and_docs(env: ApiEnv, analyst: httpx.Client, viewer: httpx.Client) -> None:
    a = viewer.get("/api/v1/alerts", params={"limit": 1}).json()["items"][0]
    r = analyst.post(f"/api/v1/alerts/{a['id']}/comments", json={"text": "x" * 70_000})
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
    r = viewer.get("/api/v1/alerts", params={"limit": 1})
    assert r.headers["cache-control"] == "no-store" and r.headers["x-content-type-options"] == "nosniff"
    page = httpx.get(env.url + "/")
    assert page.status_code == 200 and "alerts-table" in page.text
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-eval" not in csp
    assert page.headers["x-frame-options"] == "DENY" and page.headers["referrer-policy"] == "no-referrer"
    assert "server" not in page.headers
    docs = httpx.get(env.url + "/docs")
    assert docs.status_code == 200 and "swagger-ui-bundle.js" in docs.text and "cdn" not in docs.text.lower()
    assert httpx.get(env.url + "/static/vendor/swagger-ui/swagger-ui-bundle.js").status_code == 200
    assert httpx.get(env.url + "/vendor/echarts.min.js").status_code == 200
    spec = httpx.get(env.url + "/openapi.json").json()
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert all(p.startswith("/api/v1/") or p == "/metrics" for p in spec["paths"])
    assert httpx.get(env.url + "/static/../../../etc/passwd").status_code == 404


def test_token_cli(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    cmd = [sys.executable, "-m", "icswatch.commands.serve", "token"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*cmd, *args, "--state-db", str(state)], capture_output=True, text=True, cwd=REPO, timeout=120, check=False)

    r = run("issue", "--role", "analyst", "--name", "alice")
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()
    assert token.startswith("icsw_") and len(token) > 40 and token not in r.stderr and "only time" in r.stderr
    r = run("list")
    assert "alice" in r.stdout and "analyst" in r.stdout and token not in r.stdout
    token_id = re.search(r"tok_[0-9a-f]{12}", r.stdout).group(0)  # type: ignore[union-attr]
    assert run("revoke", token_id).returncode == 0
    assert "revoked" in run("list").stdout
    assert run("revoke", "tok_000000000000").returncode == 1
    assert subprocess.run([*cmd, "issue", "--role", "root", "--name", "x"], capture_output=True, cwd=REPO, check=False).returncode == 2


def _has_keys(excerpt: Any, actual: Any, where: str) -> None:
    """Every key of the documented excerpt is in the answer (lists: checked against their first item)."""
    if isinstance(excerpt, dict):
        assert isinstance(actual, dict), where
        for k, v in excerpt.items():
            assert k in actual, f"{where}: the answer has no {k!r}"
            _has_keys(v, actual[k], f"{where}.{k}")
    elif isinstance(excerpt, list) and excerpt and isinstance(excerpt[0], dict):
        assert isinstance(actual, list) and actual, where
        item = next((a for a in actual if all(a.get(k) == v for k, v in excerpt[0].items() if k == "role")), actual[0])
        _has_keys(excerpt[0], item, where + "[0]")


def test_docs_examples_run(env: ApiEnv, analyst: httpx.Client) -> None:
    """Every ```http example of docs/api.md is sent to the server and answers as the doc says."""
    text = (REPO / "docs" / "api.md").read_text(encoding="utf-8")
    examples = re.findall(r"```http\n(.*?)```(?:\s*```json\n(.*?)```)?", text, re.DOTALL)
    assert len(examples) >= 8
    values = sample_paths(env, analyst)
    excerpts = 0
    for block, excerpt in examples:
        lines = block.strip().splitlines()
        request, expect = lines[0], 200
        body_lines = []
        for line in lines[1:]:
            if line.startswith("# -> "):
                expect = int(line[5:8])
            else:
                body_lines.append(line)
        method, path = request.split(" ", 1)
        path = re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], path)
        body = json.loads("\n".join(body_lines)) if "".join(body_lines).strip() else None
        r = analyst.request(method, path, json=body)
        assert r.status_code == expect, (request, r.status_code, r.text[:300])
        if excerpt:
            _has_keys(json.loads(excerpt), r.json(), request)
            excerpts += 1
    assert excerpts >= 4


def test_serve_with_tls_and_two_workers(env: ApiEnv, tmp_path: Path) -> None:
    """``icswatch serve --workers 2 --ssl-certfile ... --ssl-keyfile ...``: HTTPS, HSTS, and the worker
    processes share the tokens and the state (a token revoked through one is refused by both)."""
    import os

    from test_api_support import free_port

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=60)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "icswatch.commands.serve", "serve", "-c", str(env.config), "--port", str(port), "--workers", "2",
         "--ssl-certfile", str(cert), "--ssl-keyfile", str(key), "--log-level", "warning"],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"https://127.0.0.1:{port}"
    try:
        end = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/api/v1/health", verify=False, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < end, "the TLS server did not start"
            time.sleep(0.2)
        with httpx.Client(base_url=url, verify=False, headers={"Authorization": f"Bearer {env.tokens['admin']}"}) as c:
            r = c.get("/api/v1/alerts", params={"limit": 1})
            assert r.status_code == 200 and r.headers["strict-transport-security"].startswith("max-age=")
            tok = c.post("/api/v1/tokens", json={"name": "short-lived", "role": "viewer"}).json()
            auth = {"Authorization": f"Bearer {tok['token']}"}
            assert all(c.get("/api/v1/auth/me", headers=auth).status_code == 200 for _ in range(6))
            assert c.delete(f"/api/v1/tokens/{tok['id']}").status_code == 200
            # whichever worker answers, the revoked token is refused
            assert all(c.get("/api/v1/auth/me", headers=auth).status_code == 401 for _ in range(6))
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=3)
    finally:
        proc.terminate()
        proc.wait(20)
