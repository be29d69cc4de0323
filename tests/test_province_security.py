"""Every way in that must be refused, against a real uvicorn server: bad signature, stale timestamp,
replayed nonce, unknown / revoked / expired keys, one enterprise reading or writing another's data,
wrong roles, oversized and malformed bodies. Each refusal is the right 4xx, carries no data, and is in
the audit log."""

from __future__ import annotations

import base64
import time
from typing import Any, Iterator

import httpx
import pytest

from alerts.forwarder import signed_headers
from province_testutil import ThreadServer, dumps, make_platform, sample_report, signed_request


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from api.province import ProvinceSettings, create_app

    db = tmp_path_factory.mktemp("province-sec") / "province.db"
    plat = make_platform(db)
    app = create_app(
        ProvinceSettings(db=str(db), max_body=64 * 1024), master_key=base64.urlsafe_b64decode(plat.master_key)
    )
    server = ThreadServer(app).start()
    client = httpx.Client(base_url=server.url, timeout=10)
    # Data that must not leak: one incident of beta, one advisory for beta only.
    r = signed_request(client, "POST", "/api/v1/incidents", plat.keys["beta"], dumps(sample_report("beta-secret-1")))
    assert r.status_code == 201
    adv = client.post(
        "/api/v1/advisories",
        headers={"Authorization": "Bearer " + plat.analyst},
        json={"title": "for beta", "body": "b", "targets": {"enterprises": ["beta"]}},
    ).json()
    yield {"plat": plat, "client": client, "app": app, "beta_adv": adv["id"]}
    client.close()
    server.stop()


def refused(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and body["error"]["code"] == code  # an error, and nothing else
    assert "beta-secret-1" not in r.text


def audited(env: dict[str, Any], request_id: str, result: str, detail: str) -> dict[str, Any]:
    env["app"].state.audit.flush()
    page = (
        env["client"]
        .get("/api/v1/audit", params={"limit": 200}, headers={"Authorization": "Bearer " + env["plat"].admin})
        .json()
    )
    hits = [e for e in page["items"] if e["request_id"] == request_id]
    assert hits, f"request {request_id} is not in the audit log"
    assert hits[0]["result"] == result and hits[0]["detail"] == detail, hits[0]
    return hits[0]


def post_report(env: dict[str, Any], key: tuple[str, str], report: dict[str, Any], **over: str) -> httpx.Response:
    return signed_request(env["client"], "POST", "/api/v1/incidents", key, dumps(report), **over)


def test_bad_signature(env: dict[str, Any]) -> None:
    key_id, secret = env["plat"].keys["acme"]
    r = post_report(env, (key_id, secret[:-2] + "xx"), sample_report("sec-badsig"))
    refused(r, 401, "bad_signature")
    e = audited(env, r.headers["x-request-id"], "denied", "bad_signature")
    assert e["actor"] == key_id and e["role"] == "none"


def test_tampered_body_after_signing(env: dict[str, Any]) -> None:
    key_id, secret = env["plat"].keys["acme"]
    body = dumps(sample_report("sec-tamper"))
    headers = signed_headers(key_id, secret, "POST", "/api/v1/incidents", "", body)
    headers.pop("X-Icswatch-Content-SHA256")  # without the digest header the signature itself must catch it
    r = env["client"].post("/api/v1/incidents", content=body.replace(b"Plant 1", b"Plant 2"), headers=headers)
    refused(r, 401, "bad_signature")
    audited(env, r.headers["x-request-id"], "denied", "bad_signature")


def test_expired_timestamp(env: dict[str, Any]) -> None:
    key_id, secret = env["plat"].keys["acme"]
    body = dumps(sample_report("sec-old"))
    headers = signed_headers(key_id, secret, "POST", "/api/v1/incidents", "", body, timestamp=int(time.time()) - 3600)
    r = env["client"].post("/api/v1/incidents", content=body, headers=headers)
    refused(r, 401, "stale_timestamp")
    audited(env, r.headers["x-request-id"], "denied", "stale_timestamp")


def test_replayed_nonce(env: dict[str, Any]) -> None:
    key_id, secret = env["plat"].keys["acme"]
    body = dumps(sample_report("sec-replay"))
    headers = signed_headers(key_id, secret, "POST", "/api/v1/incidents", "", body)
    first = env["client"].post("/api/v1/incidents", content=body, headers=headers)
    assert first.status_code == 201
    r = env["client"].post("/api/v1/incidents", content=body, headers=headers)  # the same bytes, captured and resent
    refused(r, 401, "replayed_nonce")
    audited(env, r.headers["x-request-id"], "denied", "replayed_nonce")


def test_unknown_key(env: dict[str, Any]) -> None:
    r = post_report(env, ("ik_0000000000000000", "isk_guess"), sample_report("sec-unknown"))
    refused(r, 401, "unknown_key")
    audited(env, r.headers["x-request-id"], "denied", "unknown_key")


def test_missing_credentials(env: dict[str, Any]) -> None:
    r = env["client"].get("/api/v1/incidents")
    refused(r, 401, "unauthenticated")
    audited(env, r.headers["x-request-id"], "denied", "unauthenticated")
    r = env["client"].get("/api/v1/situation", headers={"Authorization": "Bearer ipt_not-a-token"})
    refused(r, 401, "bad_token")


def test_revoked_key_and_rotation_overlap(env: dict[str, Any]) -> None:
    from api.province import auth

    plat = env["plat"]
    store = env["app"].state.store
    box = env["app"].state.box
    key_id, secret = auth.issue_credential(store, box, "gamma")
    assert post_report(env, (key_id, secret), sample_report("sec-rot-1")).status_code == 201
    new_id, new_secret, _ = auth.rotate_credential(store, box, key_id, overlap_s=3600)
    assert post_report(env, (key_id, secret), sample_report("sec-rot-2")).status_code == 201  # overlap: old still works
    assert post_report(env, (new_id, new_secret), sample_report("sec-rot-3")).status_code == 201
    auth.revoke_credential(store, key_id)
    r = post_report(env, (key_id, secret), sample_report("sec-rot-4"))
    refused(r, 401, "revoked_key")
    audited(env, r.headers["x-request-id"], "denied", "revoked_key")
    newest, newest_secret, _ = auth.rotate_credential(store, box, new_id, overlap_s=0)
    r = post_report(env, (new_id, new_secret), sample_report("sec-rot-5"))
    refused(r, 401, "expired_key")
    assert post_report(env, (newest, newest_secret), sample_report("sec-rot-6")).status_code == 201
    del plat


def test_enterprise_cannot_read_or_write_another_enterprises_data(env: dict[str, Any]) -> None:
    c = env["client"]
    acme = env["plat"].keys["acme"]
    # read beta's incident by id: not found, exactly as if it did not exist
    r = signed_request(c, "GET", "/api/v1/incidents/beta-secret-1", acme)
    refused(r, 404, "not_found")
    audited(env, r.headers["x-request-id"], "invalid", "not_found")
    r = signed_request(c, "GET", "/api/v1/incidents/beta-secret-1", acme, query="enterprise_id=beta")
    refused(r, 404, "not_found")
    r = signed_request(c, "GET", "/api/v1/incidents/beta-secret-1/history", acme)
    refused(r, 404, "not_found")
    # listing never shows beta's incidents, whatever the filter
    listed = signed_request(c, "GET", "/api/v1/incidents", acme, query="city=%E6%B7%B1%E5%9C%B3&q=beta").json()
    assert listed["items"] == [] and "beta-secret-1" not in str(listed)
    # write: update beta's incident
    r = signed_request(
        c, "PATCH", "/api/v1/incidents/beta-secret-1", acme, dumps({"update_id": "x1", "status": "closed"})
    )
    refused(r, 404, "not_found")
    audited(env, r.headers["x-request-id"], "invalid", "not_found")
    # write: report in beta's name
    r = post_report(env, acme, sample_report("sec-impersonate", enterprise_id="beta"))
    refused(r, 403, "wrong_enterprise")
    audited(env, r.headers["x-request-id"], "denied", "wrong_enterprise")
    # beta's advisory: invisible and not acknowledgeable
    adv = env["beta_adv"]
    r = signed_request(c, "GET", f"/api/v1/advisories/{adv}", acme)
    refused(r, 404, "not_found")
    r = signed_request(c, "POST", f"/api/v1/advisories/{adv}/ack", acme, b"{}")
    refused(r, 404, "not_found")
    assert adv not in str(signed_request(c, "GET", "/api/v1/advisories", acme).json())
    # staff-only resources
    for path in ("/api/v1/situation", "/api/v1/enterprises", "/api/v1/audit", "/api/v1/advisories/" + adv + "/acks"):
        r = signed_request(c, "GET", path, acme)
        refused(r, 403, "forbidden")
        audited(env, r.headers["x-request-id"], "denied", "forbidden")
    beta_stored = c.get(
        "/api/v1/incidents/beta-secret-1", headers={"Authorization": "Bearer " + env["plat"].analyst}
    ).json()
    assert beta_stored["status"] == "open" and beta_stored["revision"] == 1  # untouched


def test_roles_of_staff(env: dict[str, Any]) -> None:
    c = env["client"]
    analyst = {"Authorization": "Bearer " + env["plat"].analyst}
    r = c.get("/api/v1/audit", headers=analyst)
    refused(r, 403, "forbidden")
    r = c.post("/api/v1/enterprises/acme/credentials", headers=analyst)
    refused(r, 403, "forbidden")
    r = c.post("/api/v1/incidents", headers=analyst, content=dumps(sample_report("sec-staff")))
    refused(r, 403, "forbidden")  # reports come from enterprises, signed


def test_oversized_body(env: dict[str, Any]) -> None:
    acme = env["plat"].keys["acme"]
    big = sample_report("sec-big", impact="x" * 4000, evidence={"samples": [{"pad": "y" * 2000}] * 40})
    body = dumps(big)
    assert len(body) > 64 * 1024
    r = post_report(env, acme, big)
    refused(r, 413, "body_too_large")
    e = audited(env, r.headers["x-request-id"], "invalid", "body_too_large")
    assert e["actor"] == acme[0]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies while streaming
        for i in range(0, len(body), 8192):
            yield body[i : i + 8192]

    headers = signed_headers(acme[0], acme[1], "POST", "/api/v1/incidents", "", body)
    r = env["client"].post("/api/v1/incidents", content=chunks(), headers=headers)
    refused(r, 413, "body_too_large")


def test_malformed_and_invalid_json(env: dict[str, Any]) -> None:
    acme = env["plat"].keys["acme"]
    c = env["client"]
    r = signed_request(c, "POST", "/api/v1/incidents", acme, b'{"schema_version": "1", "incident_id": ')
    refused(r, 400, "malformed_json")
    audited(env, r.headers["x-request-id"], "invalid", "malformed_json")
    r = post_report(env, acme, sample_report("sec-invalid", level=9, techniques=["not-a-technique"]))
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_report"
    fields = {d["field"] for d in r.json()["error"]["details"]}
    assert {"level", "techniques"} <= fields
    assert "not-a-technique" not in r.text  # submitted values are not echoed back
    audited(env, r.headers["x-request-id"], "invalid", "invalid_report")
    r = post_report(env, acme, sample_report("sec-bad-level-name", level=2, level_name="一般"))
    assert r.status_code == 422
    r = post_report(env, acme, {"schema_version": "2", "incident_id": "sec-v2"})
    assert r.status_code == 422
    r = c.post(
        "/api/v1/advisories",
        content=b"[1, 2",
        headers={"Authorization": "Bearer " + env["plat"].analyst, "Content-Type": "application/json"},
    )
    refused(r, 400, "malformed_json")


def test_bad_queries_are_4xx(env: dict[str, Any]) -> None:
    c = env["client"]
    analyst = {"Authorization": "Bearer " + env["plat"].analyst}
    for params in (
        {"level": "9"},
        {"limit": "0"},
        {"since": "yesterday"},
        {"cursor": "%%%"},
        {"since": "2024-01-01T00:00:00"},
    ):
        r = c.get("/api/v1/incidents", params=params, headers=analyst)
        assert 400 <= r.status_code < 500, (params, r.status_code, r.text)
    assert c.get("/api/v1/incidents/..%2f..%2fetc", headers=analyst).status_code in (404, 422)
    assert c.get("/api/v1/nothing-here").status_code == 404
    assert c.delete("/api/v1/incidents").status_code in (401, 405)
