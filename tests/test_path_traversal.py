"""Every file-taking parameter a remote user controls is confined (issue 11), against the real apps on
127.0.0.1 (uvicorn), with hostile names: ``../../etc/passwd``, absolute paths, NUL bytes, ``..%2f``,
over-long names and Unicode look-alikes.

- the capture upload: the client never names the file; the ``label`` is stored as text only; the
  capture lands at ``upload_dir/<job id>/capture`` (0600, in a 0700 directory, never executable)
  whatever is claimed about it, and its type is read from its magic, never from a name;
- job ids in paths and the ``dataset`` parameter: only ``job_`` + 16 hex digits ever becomes part of a
  path; anything else is 404/422 before the file system is touched;
- static files and the dashboards of both apps: nothing outside their directories is ever served.

Requests are written by hand on a socket where an HTTP client would normalise the path first."""

from __future__ import annotations

import os
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from province_testutil import REPO, ProvinceServer, make_platform
from security_testutil import Lite, lite_enterprise

pytestmark = pytest.mark.timeout(300)

PCAP = (REPO / "pcaps" / "rule_modbus-function-code-scan.pcap").read_bytes()
SECRET_MARK = "icswatch-traversal-canary"

HOSTILE_NAMES = (
    "../../etc/passwd",
    "/etc/passwd",
    "..\\..\\windows\\win.ini",
    "..%2f..%2fetc%2fpasswd",
    "%2e%2e/%2e%2e/etc/passwd",
    "capture\x00.sh",
    "evil\u202egpj.sh",  # right-to-left override: shows as "evilhs.jpg"
    "\uff0e\uff0e\uff0f\uff0e\uff0e\uff0fetc\uff0fpasswd",  # full-width ../../etc/passwd
    "A" * 199 + "/",
)


def raw_get(port: int, target: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """GET with the request target sent byte for byte (no client-side normalisation)."""
    head = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    for k, v in (headers or {}).items():
        head += f"{k}: {v}\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall((head + "\r\n").encode("utf-8"))
        data = b""
        while True:
            more = s.recv(65536)
            if not more:
                break
            data += more
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in data else b""


TRAVERSALS = (
    "/static/../../../../etc/passwd",
    "/static/..%2f..%2f..%2f..%2fetc%2fpasswd",
    "/static/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/static/%2e%2e%2f%2e%2e%2fapp.py",
    "/static/..%5c..%5capp.py",
    "/static//etc/passwd",
    "/static/%00",
    "/static/app.js%00.png",
    "/vendor/..%2f..%2f..%2fapi%2fenterprise%2fapp.py",
    "/vendor/%2e%2e/%2e%2e/enterprise/app.py",
    "/static/\uff0e\uff0e/app.py",
    "/static/%EF%BC%8E%EF%BC%8E/%EF%BC%8E%EF%BC%8E/enterprise/app.py",
)


def _no_file_contents(status: int, body: bytes) -> None:
    assert status in (400, 404, 405, 422), status
    assert b"root:" not in body and b"def create_app" not in body and b"import" not in body


@pytest.fixture(scope="module")
def lite(tmp_path_factory: pytest.TempPathFactory) -> Lite:
    return lite_enterprise(tmp_path_factory.mktemp("traversal-lite"), max_jobs=50)


@pytest.fixture(scope="module")
def enterprise(lite: Lite) -> Iterator[Any]:
    server = lite.thread()
    yield server
    server.stop()


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_upload_names_are_never_paths(lite: Lite, enterprise: Any) -> None:
    outside_before = _tree(lite.dir)
    uploads = lite.dir / "uploads"
    with lite.client(enterprise.url, "analyst") as c:
        jobs = []
        for name in HOSTILE_NAMES:
            r = c.post(
                "/api/v1/jobs",
                params={"label": name},
                content=PCAP,
                headers={
                    "Content-Type": "application/octet-stream",
                    # a multipart-style claim of a file name is ignored as well
                    "Content-Disposition": f'attachment; filename="{name.encode("unicode_escape").decode()}"',
                },
            )
            assert r.status_code == 202, (name, r.text)
            job = r.json()
            jobs.append(job)
            assert job["format"] == "pcap" and len(job["id"]) == 20 and job["id"].startswith("job_")
            # the label is text: no control or format characters, at most 200 characters
            assert job["label"] == "".join(ch for ch in name if ch.isprintable())[:200]
            assert "\x00" not in job["label"] and "\u202e" not in job["label"]
        r = c.post("/api/v1/jobs", params={"label": "x" * 201}, content=PCAP,
                   headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 422  # over-long: refused, not truncated into something else
        # every upload is upload_dir/<job id>/... and nothing appeared anywhere else
        for job in jobs:
            d = uploads / job["id"]
            assert d.is_dir() and stat.S_IMODE(d.stat().st_mode) == 0o700
        for p in uploads.rglob("*"):
            rel = p.relative_to(uploads)
            assert rel.parts[0].startswith(("job_", ".settings-")), rel
            if p.is_file():
                assert not (p.stat().st_mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)), rel  # never executable
        added = {x for x in _tree(lite.dir) - outside_before if not x.startswith("uploads")}
        assert added <= {"api-state.db-wal", "api-state.db-shm", "alerts.db-wal", "alerts.db-shm"}, added
        assert not any(p.name == "passwd" or p.name.endswith((".sh", ".ini")) for p in lite.dir.rglob("*"))
        # the replays run on the content and end; the capture itself is deleted afterwards
        end = time.monotonic() + 120
        while time.monotonic() < end:
            states = [c.get(f"/api/v1/jobs/{j['id']}").json()["state"] for j in jobs]
            if all(s in ("done", "failed") for s in states):
                break
            time.sleep(0.5)
        assert states == ["done"] * len(jobs), states
        assert not any((uploads / j["id"] / "capture").exists() for j in jobs)


def test_capture_type_comes_from_the_magic_not_a_name(lite: Lite, enterprise: Any) -> None:
    with lite.client(enterprise.url, "analyst") as c:
        script = b"#!/bin/sh\necho " + SECRET_MARK.encode() + b" > /tmp/pwned\n"
        for label in ("plant.pcap", "plant.pcapng", "plant.pcap.gz", "../../plant.pcap"):
            r = c.post("/api/v1/jobs", params={"label": label}, content=script,
                       headers={"Content-Type": "application/octet-stream"})
            assert r.status_code == 415 and r.json()["error"]["code"] == "not_a_capture", (label, r.text)
        # and a real capture called anything is a capture
        r = c.post("/api/v1/jobs", params={"label": "setup.exe"}, content=PCAP,
                   headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 202 and r.json()["format"] == "pcap"
    assert not Path("/tmp/pwned").exists() or SECRET_MARK not in Path("/tmp/pwned").read_text(errors="replace")


def test_job_ids_and_datasets_never_become_paths(lite: Lite, enterprise: Any) -> None:
    # a file next to the upload directory that a traversal would reach
    (lite.dir / "uploads").mkdir(exist_ok=True)
    canary = lite.dir / "canary" / "summary.json"
    canary.parent.mkdir(exist_ok=True)
    canary.write_text(f'{{"leak": "{SECRET_MARK}"}}')
    token = {"Authorization": f"Bearer {lite.tokens['admin']}"}
    for target in (
        "/api/v1/jobs/..%2fcanary",
        "/api/v1/jobs/..%2f..%2fetc%2fpasswd",
        "/api/v1/jobs/job_0000000000000000%2f..%2f..%2fcanary",
        "/api/v1/jobs/%2e%2e/results",
        "/api/v1/jobs/job_00000000000000%00/results",
        "/api/v1/jobs/" + "job_" + "a" * 500,
        "/api/v1/alerts?dataset=..%2fcanary",
        "/api/v1/alerts?dataset=%2fetc%2fpasswd",
        "/api/v1/alerts?dataset=job_0000000000000000%00",
        "/api/v1/assets?dataset=..%2f..%2fcanary",
        "/api/v1/assets/export.csv?dataset=job_%2e%2e%2fcanary",
        "/api/v1/stats/summary?dataset=live%2f..%2f..%2fcanary",
    ):
        status, body = raw_get(enterprise.port, target, token)
        assert status in (404, 405, 422), (target, status, body[:200])
        assert SECRET_MARK.encode() not in body
    # well-formed but unknown: 404 from the state file, not a file-system probe
    status, _ = raw_get(enterprise.port, "/api/v1/alerts?dataset=job_0123456789abcdef", token)
    assert status == 404
    # deleting by a hostile id removes nothing
    with lite.client(enterprise.url, "analyst") as c:
        for bad in ("..%2fcanary", "%2e%2e", "job_0000000000000000%2f.."):
            assert c.delete(f"/api/v1/jobs/{bad}").status_code in (404, 405, 422)
    assert canary.exists()


def test_the_job_manager_refuses_hostile_ids_itself(lite: Lite) -> None:
    """Defence in depth under the routes' patterns: the manager never builds a path from a bad id."""
    from api.enterprise.errors import ApiError
    from api.enterprise.jobs import JobManager
    from api.enterprise.state import StateStore

    settings = lite.settings()
    state = StateStore(settings.state_db)
    try:
        jm = JobManager(settings, state)
        for bad in ("../canary", "/etc", "job_../../x", "job_0000000000000000/..", "job_000000000000000\x00"):
            with pytest.raises(ApiError):
                jm.job_dir(bad)
            with pytest.raises(ApiError):
                jm.summary(bad)
        # a link planted in the upload directory under a valid-looking id does not lead out
        link = settings.upload_dir / "job_feedfacefeedface"
        settings.upload_dir.mkdir(parents=True, exist_ok=True)
        os.symlink(lite.dir / "canary", link)
        try:
            with pytest.raises(ApiError):
                jm.summary("job_feedfacefeedface")
        finally:
            link.unlink()
    finally:
        state.close()


def test_static_files_of_the_enterprise_app_stay_inside(enterprise: Any) -> None:
    assert raw_get(enterprise.port, "/static/app.js")[0] == 200  # the files themselves are served
    for target in TRAVERSALS:
        _no_file_contents(*raw_get(enterprise.port, target))


@pytest.fixture(scope="module")
def province(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProvinceServer]:
    d = tmp_path_factory.mktemp("traversal-province")
    plat = make_platform(d / "province.db")
    server = ProvinceServer(plat.db, plat.master_key).start()
    yield server
    server.stop()


def test_static_files_of_the_province_app_stay_inside(province: ProvinceServer) -> None:
    assert raw_get(province.port, "/static/app.js")[0] == 200
    for target in TRAVERSALS:
        _no_file_contents(*raw_get(province.port, target.replace("enterprise", "province")))
    status, body = raw_get(province.port, "/%2e%2e/%2e%2e/etc/passwd")
    _no_file_contents(status, body)
