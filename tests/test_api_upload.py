"""Pcap upload and replay for testers, against the real server: a 50 MB capture uploads, its job reports
progress and its alerts appear in its own dataset; refusals (not a capture, over the limit, empty,
wrong role) are clear 4xx answers; the rule switches and suppressions made through the API apply
to the replays."""

from __future__ import annotations

import gzip
import json
import socket
import time
from typing import Any

import httpx
import pytest
from test_api_support import PCAPS, ApiEnv, api_env

pytestmark = pytest.mark.timeout(400)


@pytest.fixture(scope="module")
def env(request: pytest.FixtureRequest) -> ApiEnv:
    return api_env(request)


def wait_done(c: httpx.Client, job_id: str, timeout: float = 240.0, poll: float = 0.2) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    seen = []
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        job = c.get(f"/api/v1/jobs/{job_id}").json()
        seen.append(job)
        if job["state"] in ("done", "failed", "cancelled"):
            return job, seen
        time.sleep(poll)
    raise TimeoutError(f"job {job_id} still {seen[-1]['state']} after {timeout} s")


def upload(c: httpx.Client, data: Any, label: str = "test", **kw: Any) -> httpx.Response:
    return c.post("/api/v1/jobs", params={"label": label}, content=data,
                  headers={"Content-Type": "application/octet-stream", **kw.pop("headers", {})}, **kw)


def test_upload_of_a_50_mb_capture_reports_progress_and_its_alerts_appear(env: ApiEnv) -> None:
    big = env.big_capture()
    size = big.stat().st_size
    assert size >= 50_000_000  # 50 MB
    analyst = env.client("analyst", timeout=120)
    with open(big, "rb") as fh:
        r = upload(analyst, fh, label="bench 460k")
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["state"] == "queued" and job["size"] == size and job["format"] == "pcap" and len(job["sha256"]) == 64
    assert r.headers["location"] == f"/api/v1/jobs/{job['id']}"
    import hashlib

    assert job["sha256"] == hashlib.sha256(big.read_bytes()).hexdigest()
    done, seen = wait_done(analyst, job["id"])
    assert done["state"] == "done", done
    running = [j for j in seen if j["state"] == "running" and j["packets"] > 0]
    assert running, "no progress was reported while the job ran"
    assert all(0 < j["percent"] < 100 for j in running)
    packets = [j["packets"] for j in running]
    assert packets == sorted(packets)
    assert done["percent"] == 100 and done["packets"] == 460_000 and done["bytes"] > 0 and done["events"] > 400_000
    assert done["alerts"] > 0 and done["error"] is None and done["warning"] is None
    # the alerts are in the job's own dataset, not in the plant's
    ds = {"dataset": job["id"]}
    page = analyst.get("/api/v1/alerts", params={**ds, "limit": 5}).json()
    assert page["total"] == done["alerts"] and page["dataset"] == job["id"]
    assert analyst.get("/api/v1/alerts", params={"limit": 1}).json()["total"] == env.replay["alerts"]
    a = page["items"][0]
    assert analyst.get(f"/api/v1/alerts/{a['id']}", params=ds).json()["events"]
    assert analyst.get("/api/v1/stats/summary", params=ds).json()["alerts"] == done["alerts"]
    assets = analyst.get("/api/v1/assets", params=ds).json()
    assert assets["total"] > 10 and all("modbus" in {**x["client_protocols"], **x["server_protocols"]} for x in assets["items"])
    assert analyst.get("/api/v1/incidents", params=ds).json()["total"] >= 1
    # results: one JSON download with the summary, the alerts and the incidents
    r = analyst.get(f"/api/v1/jobs/{job['id']}/results")
    assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
    res = r.json()
    assert res["job"]["id"] == job["id"] and res["alerts_total"] == done["alerts"] == len(res["alerts"])
    assert res["summary"]["packets"] == 460_000 and res["summary"]["protocols"]["modbus"]["pdus"] > 400_000
    assert res["summary"]["alerts"]["total"] == done["alerts"] and res["incidents"]
    assert all(d["event"]["kind"] == "alert" for d in res["alerts"])
    # the capture itself is gone, the dataset stays
    jobdir = env.dir / "uploads" / job["id"]
    assert not (jobdir / "capture").exists() and (jobdir / "dataset.db").exists()
    leaked = str(env.dir) in json.dumps(res)
    assert not leaked, "a server path is in the results"
    assert "capture" not in json.dumps(res["job"])
    listed = analyst.get("/api/v1/jobs").json()["items"]
    assert any(j["id"] == job["id"] for j in listed)


def test_refusals_are_clear_4xx(env: ApiEnv) -> None:
    analyst = env.client("analyst")
    # not a capture: refused by its content whatever it is called
    r = upload(analyst, b"%PDF-1.7 this is not a capture at all", label="plant.pcap")
    assert r.status_code == 415 and r.json()["error"]["code"] == "not_a_capture"
    assert "starts with 25504446" in r.json()["error"]["message"]
    r = upload(analyst, gzip.compress(b"just text, gzip-compressed"), label="x.pcap.gz")
    assert r.status_code == 415 and r.json()["error"]["code"] == "not_a_capture"
    r = upload(analyst, b"\xd4\xc3")
    assert r.status_code == 415
    r = upload(analyst, b"")
    assert r.status_code == 400 and r.json()["error"]["code"] == "empty_upload"
    r = analyst.post("/api/v1/jobs", content=(PCAPS / "modbus_normal.pcap").read_bytes(), headers={"Content-Type": "multipart/form-data"})
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type"
    # roles
    assert upload(env.client("viewer"), (PCAPS / "modbus_normal.pcap").read_bytes()).status_code == 403
    assert upload(env.client(None), (PCAPS / "modbus_normal.pcap").read_bytes()).status_code == 401
    # nothing was left behind by the refusals
    jobs = analyst.get("/api/v1/jobs").json()["items"]
    assert not any(j["label"] in ("plant.pcap", "x.pcap.gz") for j in jobs)
    dirs = [p for p in (env.dir / "uploads").iterdir() if p.is_dir()]
    assert {p.name for p in dirs} <= {j["id"] for j in jobs}


def _raw(env: ApiEnv, head: bytes, body_chunks: list[bytes] = (), read_after_head: bool = True) -> tuple[int, bytes]:  # type: ignore[assignment]
    """Send a request by hand (to check what the server does before the body has arrived)."""
    with socket.create_connection(("127.0.0.1", env.server.port), timeout=30) as s:
        s.sendall(head)
        for chunk in body_chunks:
            try:
                s.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
        data = b""
        while b"\r\n\r\n" not in data or len(data) < data.index(b"\r\n\r\n") + 4 + int(
            next((l.split(b":")[1] for l in data.split(b"\r\n") if l.lower().startswith(b"content-length:")), b"0")
        ):
            try:
                more = s.recv(65536)
            except ConnectionResetError:
                break
            if not more:
                break
            data += more
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1]


def test_over_the_limit_is_refused_before_the_body_is_read(env: ApiEnv) -> None:
    limit = 60 * 1024 * 1024
    token = env.tokens["analyst"]
    head = (
        f"POST /api/v1/jobs?label=huge HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {limit + 1}\r\n\r\n"
    ).encode()
    t0 = time.monotonic()
    status, body = _raw(env, head)  # not one byte of the body is sent
    assert status == 413 and json.loads(body)["error"]["code"] == "body_too_large"
    assert time.monotonic() - t0 < 10
    # a chunked upload (no length announced) is cut as soon as it passes the limit
    head = (
        f"POST /api/v1/jobs?label=huge-chunked HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        "Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    block = (PCAPS / "modbus_normal.pcap").read_bytes()[:24] + b"\0" * (1024 * 1024 - 24)
    chunk = f"{len(block):x}\r\n".encode() + block + b"\r\n"
    filler = b"\0" * (1024 * 1024)
    more = f"{len(filler):x}\r\n".encode() + filler + b"\r\n"
    status, body = _raw(env, head, [chunk] + [more] * 62)
    assert status == 413 and json.loads(body)["error"]["code"] == "body_too_large"
    jobs = env.client("analyst").get("/api/v1/jobs").json()["items"]
    assert not any(j["label"].startswith("huge") for j in jobs)


def test_replays_follow_the_api_rule_switches_and_suppressions(env: ApiEnv) -> None:
    analyst, admin = env.client("analyst"), env.client("admin")
    cap = (PCAPS / "rule_modbus-write-unauthorized-master.pcap").read_bytes()
    gz = gzip.compress(cap)

    def run(label: str, data: bytes) -> dict[str, Any]:
        r = upload(analyst, data, label=label)
        assert r.status_code == 202, r.text
        job, _ = wait_done(analyst, r.json()["id"])
        assert job["state"] == "done", job
        return job

    plain = run("plain", gz)
    assert plain["format"] == "gzip+pcap"
    rules = {b["key"] for b in analyst.get("/api/v1/stats/counts", params={"by": "rule", "dataset": plain["id"]}).json()["buckets"]}
    assert "modbus-write-unauthorized-master" in rules
    assert admin.post("/api/v1/rules/modbus-write-unauthorized-master/disable").status_code == 200
    try:
        off = run("rule off", cap)
    finally:
        admin.post("/api/v1/rules/modbus-write-unauthorized-master/enable")
    rules_off = {b["key"] for b in analyst.get("/api/v1/stats/counts", params={"by": "rule", "dataset": off["id"]}).json()["buckets"]}
    assert "modbus-write-unauthorized-master" not in rules_off
    # results of an unfinished or unknown job, deleting one
    assert analyst.get("/api/v1/jobs/job_0123456789abcdef/results").status_code == 404
    assert analyst.delete(f"/api/v1/jobs/{off['id']}").status_code == 204
    assert analyst.get(f"/api/v1/jobs/{off['id']}").status_code == 404
    assert analyst.get("/api/v1/alerts", params={"dataset": off["id"]}).status_code == 404
    assert not (env.dir / "uploads" / off["id"]).exists()
    assert analyst.post(f"/api/v1/jobs/{plain['id']}/cancel").status_code == 409


def test_a_damaged_capture_is_replayed_up_to_the_damage(env: ApiEnv) -> None:
    analyst = env.client("analyst")
    data = (PCAPS / "modbus_normal.pcap").read_bytes()
    r = upload(analyst, data[: len(data) // 2 + 7], label="cut")
    assert r.status_code == 202
    job, _ = wait_done(analyst, r.json()["id"])
    assert job["state"] == "done" and job["warning"] and "damaged" in job["warning"] and job["packets"] > 0
    assert str(env.dir) not in job["warning"]
