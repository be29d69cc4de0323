"""``icswatch province serve`` as deployed, in a subprocess on 127.0.0.1:

- ``--workers 2``: two uvicorn worker processes share the port and the SQLite file; the intake stays
  idempotent and replay-proof across them (the same incident and the same signed request fired at
  both at once), every acknowledged report is stored and every request audited;
- ``--store es`` with the cluster from ICSWATCH_ES_URL: reports go to Elasticsearch, the analysts read
  them back through the API, and the admin commands' audit entries (``--store es`` too) land in the
  same audit index as the API's.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx

from es_testutil import EsServer, es_server  # noqa: F401 (fixture)
from icswatch.commands.province import main as province
from province_testutil import (
    ProvinceServer,
    dumps,
    fire_at_once,
    make_platform,
    province_es_store,
    sample_report,
    signed_post,
)


def worker_pids(pid: int) -> list[int]:
    """The uvicorn workers of a ``serve --workers N`` process (multiprocessing children)."""
    out = []
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        cmdline = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")
        if b"multiprocessing" in cmdline and b"resource_tracker" not in cmdline:
            out.append(int(child))
    return out


def test_two_workers_share_the_database_safely(tmp_path: Path) -> None:
    db = tmp_path / "province.db"
    plat = make_platform(db)
    server = ProvinceServer(db, plat.master_key, args=("--workers", "2"), rate_limit=0).start()
    try:
        assert server.proc is not None
        deadline = time.monotonic() + 20
        while len(worker_pids(server.proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(worker_pids(server.proc.pid)) == 2
        acme, beta = plat.keys["acme"], plat.keys["beta"]
        # One incident from 24 connections at once, each request signed anew (its own nonce).
        same = fire_at_once(server.url, [signed_post(acme, dumps(sample_report("workers-same"))) for _ in range(24)])
        assert sorted(r.status_code for r in same) == [200] * 23 + [201]
        assert len({r.json()["received_at"] for r in same}) == 1
        replayed = fire_at_once(server.url, [signed_post(beta, dumps(sample_report("workers-replay")))] * 10)
        assert sorted(r.status_code for r in replayed) == [201] + [401] * 9
        many = fire_at_once(server.url, [signed_post(beta, dumps(sample_report(f"workers-{i}"))) for i in range(40)])
        assert [r.status_code for r in many] == [201] * 40
        requests = 24 + 10 + 40
    finally:
        server.stop()  # the workers flush their audit queues on the way out
    with sqlite3.connect(db) as c:
        stored = {r[0] for r in c.execute("SELECT incident_id FROM incidents WHERE incident_id LIKE 'workers-%'")}
        audited = c.execute("SELECT COUNT(*) FROM audit WHERE path = '/api/v1/incidents'").fetchone()[0]
    assert stored == {"workers-same", "workers-replay", *(f"workers-{i}" for i in range(40))}
    assert audited == requests


def test_serve_with_the_elasticsearch_store(es_server: EsServer, tmp_path: Path, monkeypatch: Any) -> None:
    from api.province.store import AuditFilter

    db = tmp_path / "province.db"
    plat = make_platform(db)
    store, cleanup = province_es_store(es_server, db)  # the test's own index prefix, and a reader of it
    monkeypatch.setenv("ICSWATCH_ES_URL", es_server.url)  # the enterprise side's variable: es_urls' fallback
    monkeypatch.setenv("ICSWATCH_PROVINCE_ES_INDEX_PREFIX", store.prefix)
    if es_server.api_key:
        monkeypatch.setenv("ICSWATCH_ES_API_KEY", es_server.api_key)
    if es_server.ca_file:
        monkeypatch.setenv("ICSWATCH_PROVINCE_ES_CA_FILE", es_server.ca_file)
    server = ProvinceServer(db, plat.master_key, args=("--store", "es"), rate_limit=0)
    try:
        server.start()
        acme = plat.keys["acme"]
        with httpx.Client(base_url=server.url, timeout=30) as c:
            for i in range(5):
                body, headers = signed_post(acme, dumps(sample_report(f"es-serve-{i}", level=2)))
                assert c.post("/api/v1/incidents", content=body, headers=headers).status_code == 201
            body, headers = signed_post(acme, dumps(sample_report("es-serve-0", level=2)))
            again = c.post("/api/v1/incidents", content=body, headers=headers)
            assert again.status_code == 200 and again.json()["duplicate"] is True
            staff = {"Authorization": "Bearer " + plat.analyst}
            listed = c.get("/api/v1/incidents", params={"q": "es-serve"}, headers=staff).json()
            assert sorted(i["incident_id"] for i in listed["items"]) == [f"es-serve-{i}" for i in range(5)]
            situation = c.get("/api/v1/situation", headers=staff).json()
            assert situation["totals"]["incidents"] == 5 and situation["by_city"] == [{"key": "福州", "count": 5}]
        assert store.get_incident("acme", "es-serve-3") is not None  # in Elasticsearch, not in the file
        with sqlite3.connect(db) as c:
            assert c.execute("SELECT COUNT(*) FROM incidents").fetchone()[0] == 0
        # An admin command on the platform host, on the same store: its audit entry goes to ES too.
        monkeypatch.setenv("ICSWATCH_PROVINCE_MASTER_KEY", plat.master_key)
        assert (
            province(["token", "issue", "--db", str(db), "--store", "es", "--name", "carol", "--role", "analyst"]) == 0
        )
        server.stop()  # its audit queue is flushed on the way out
        store.refresh()
        assert store.search_audit(AuditFilter(action="token issue")).total == 1
        assert store.search_audit(AuditFilter(action="POST /api/v1/incidents")).total == 6
    finally:
        server.stop()
        store.close()
        cleanup()


def test_serve_refuses_an_elasticsearch_store_it_cannot_use(tmp_path: Path, monkeypatch: Any, capsys: Any) -> None:
    from province_testutil import free_port

    monkeypatch.delenv("ICSWATCH_ES_URL", raising=False)
    monkeypatch.delenv("ICSWATCH_PROVINCE_ES_URLS", raising=False)
    monkeypatch.setenv("ICSWATCH_PROVINCE_MASTER_KEY", make_platform(tmp_path / "p.db").master_key)
    db = str(tmp_path / "p.db")
    assert province(["serve", "--db", db, "--store", "es"]) == 1
    assert "store=es needs Elasticsearch" in capsys.readouterr().err
    nobody = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    assert province(["serve", "--db", db, "--store", "es", "--es-url", nobody]) == 1
    err = capsys.readouterr().err
    assert "cannot be used" in err and nobody in err
