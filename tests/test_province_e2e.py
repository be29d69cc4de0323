"""End to end with two real uvicorn servers on 127.0.0.1: the provincial platform (``icswatch province
serve`` in a subprocess) and an enterprise side that replays attack captures through the sensor and
the alerting runtime, with the outbox writer as an output and the forwarder worker running in the
server's lifespan (as the enterprise API will run it).

- the incidents appear at the province with the right enterprise, level and deadline;
- an advisory goes down and is acknowledged;
- fault: the platform is killed in the middle of reporting and restarted later: every incident is
  delivered exactly once (ids and counts), nothing is lost, nothing duplicated, the outbox drains;
  then every acknowledgement is "lost" and everything re-sent: the platform answers duplicate and
  nothing changes.
"""

from __future__ import annotations

import sqlite3
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import httpx
import pytest
from fastapi import FastAPI

from province_testutil import REPO, ProvinceServer, ThreadServer, make_platform, replay

PCAPS = sorted((REPO / "pcaps").glob("rule_*.pcap"))


def enterprise_app(cfg: Any, store_path: Path) -> FastAPI:
    """A stand-in for the enterprise API (issue 9): replay captures, show the outbox, relay advisories."""
    from alerts.forwarder import Forwarder
    from alerts.outbox import Outbox, OutboxWriter
    from alerts.records import Observer
    from alerts.sqlite_store import SQLiteStore
    from alerts.store import IncidentQuery

    outbox = Outbox(cfg.linkage.outbox)
    forwarder = Forwarder.from_config(cfg, outbox)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        forwarder.start()
        yield
        forwarder.close()
        outbox.close()

    app = FastAPI(lifespan=lifespan)

    @app.post("/replay")
    def run_replay(body: dict[str, Any]) -> dict[str, Any]:
        store = SQLiteStore(store_path, Observer.from_config(cfg.sensor))
        writer = OutboxWriter.from_config(cfg, outbox)
        summary = replay([Path(p) for p in body["pcaps"]], [store, writer], ["outputs.batch_size=1"])
        return {"alerts": summary.total, "incidents": len(summary.incidents)}

    @app.get("/incidents")
    def incidents() -> dict[str, Any]:
        store = SQLiteStore(store_path)
        try:
            page = store.search_incidents(IncidentQuery(limit=1000))
        finally:
            store.close()
        return {i["icswatch"]["incident"]["id"]: i["icswatch"]["incident"]["level"] for i in page.items}

    @app.get("/linkage/status")
    def status() -> dict[str, Any]:
        return outbox.status() | {"stats": vars(forwarder.stats)}

    @app.post("/linkage/advisories/fetch")
    def fetch() -> list[dict[str, Any]]:
        res = forwarder.fetch_advisories()
        assert res.ok, res.error
        return outbox.advisories()

    @app.post("/linkage/advisories/{advisory_id}/ack")
    def ack(advisory_id: str) -> dict[str, int]:
        return {"seq": outbox.acknowledge(advisory_id, "patched the firewall")}

    return app


def linkage_config(tmp: Path, url: str, key_id: str, enterprise: str) -> Any:
    from icswatch.config import load_config

    return load_config(
        None,
        [
            f"sensor.enterprise_id={enterprise}",
            "sensor.site=Plant 1",
            "linkage.enabled=true",
            f"linkage.url={url}",
            f"linkage.key_id={key_id}",
            f"linkage.outbox={tmp / 'outbox.db'}",
            "linkage.retry_base=0.2",
            "linkage.retry_max=1.0",
            "linkage.poll_seconds=0.2",
            "linkage.timeout=3",
        ],
    )


@pytest.fixture()
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    plat = make_platform(tmp_path / "province.db")
    province = ProvinceServer(plat.db, plat.master_key).start()
    servers: list[ThreadServer] = []

    def enterprise(name: str) -> tuple[ThreadServer, httpx.Client]:
        key_id, secret = plat.keys[name]
        monkeypatch.setenv("ICSWATCH_LINKAGE_SECRET", secret)
        d = tmp_path / name
        d.mkdir()
        cfg = linkage_config(d, province.url, key_id, name)
        srv = ThreadServer(enterprise_app(cfg, d / "icswatch.db")).start()
        servers.append(srv)
        return srv, httpx.Client(base_url=srv.url, timeout=120)

    analyst = httpx.Client(base_url=province.url, timeout=10, headers={"Authorization": "Bearer " + plat.analyst})
    yield {"plat": plat, "province": province, "enterprise": enterprise, "analyst": analyst}
    analyst.close()
    for s in servers:
        s.stop()
    province.stop()


def wait_drained(ent: httpx.Client, timeout: float = 40.0) -> dict[str, Any]:
    end = time.monotonic() + timeout
    st: dict[str, Any] = {}
    while time.monotonic() < end:
        st = ent.get("/linkage/status").json()
        if st["entries"]["pending"] == 0:
            return st
        time.sleep(0.1)
    raise AssertionError(f"the outbox did not drain: {st}")


def province_incidents(analyst: httpx.Client, enterprise: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 1000, "q": enterprise}
        if cursor:
            params["cursor"] = cursor
        page = analyst.get("/api/v1/incidents", params=params).json()
        items.extend(i for i in page["items"] if i["enterprise_id"] == enterprise)
        cursor = page["next_cursor"]
        if not cursor:
            return items


def reportable(levels: dict[str, int]) -> dict[str, int]:
    return {i: lv for i, lv in levels.items() if lv <= 3}


def test_incidents_reach_the_province_and_an_advisory_comes_back(world: dict[str, Any]) -> None:
    _, ent = world["enterprise"]("acme")
    r = ent.post("/replay", json={"pcaps": [str(p) for p in PCAPS]})
    assert r.status_code == 200 and r.json()["alerts"] > 0
    st = wait_drained(ent)
    assert st["entries"]["failed"] == 0
    expected = reportable(ent.get("/incidents").json())
    assert expected, "the captures should produce incidents at 较大 or graver"
    got = province_incidents(world["analyst"], "acme")
    assert {i["incident_id"] for i in got} == set(expected)
    for inc in got:
        assert inc["enterprise_id"] == "acme" and inc["city"] == "福州" and inc["cii"] is True
        assert inc["level"] == expected[inc["incident_id"]]  # updates carried every level raise
        detail = world["analyst"].get(f"/api/v1/incidents/{inc['incident_id']}").json()
        discovered = detail["discovered_at"]
        # acme operates critical infrastructure: 1 hour from discovery, and it was reported at once
        from datetime import datetime, timedelta

        d = datetime.fromisoformat(discovered.replace("Z", "+00:00"))
        assert detail["deadline"] == (d + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        assert detail["late"] is False
        assert detail["report"]["evidence"]["alert_count"] >= 1
        assert "10.10.2." not in str(detail["report"])  # internal addresses were pseudonymised
    # warnings down
    adv = (
        world["analyst"]
        .post(
            "/api/v1/advisories",
            json={
                "title": "UMAS PLC stop attempts in the region",
                "body": "Restrict UMAS to the engineering station.",
                "targets": {"cities": ["福州"]},
                "techniques": ["T0881"],
            },
        )
        .json()
    )
    fetched = ent.post("/linkage/advisories/fetch").json()
    assert [a["id"] for a in fetched] == [adv["id"]]
    ent.post(f"/linkage/advisories/{adv['id']}/ack")
    wait_drained(ent)
    acks = world["analyst"].get(f"/api/v1/advisories/{adv['id']}/acks").json()
    assert acks["acknowledged"] == 1 and acks["items"][0]["enterprise_id"] == "acme"
    assert acks["items"][0]["note"] == "patched the firewall"


def test_province_down_during_reporting_exactly_once(world: dict[str, Any]) -> None:
    province: ProvinceServer = world["province"]
    _, ent = world["enterprise"]("beta")
    half = len(PCAPS) // 2
    ent.post("/replay", json={"pcaps": [str(p) for p in PCAPS[:half]]})
    end = time.monotonic() + 20
    while ent.get("/linkage/status").json()["entries"]["sent"] == 0 and time.monotonic() < end:
        time.sleep(0.05)
    assert province.proc is not None
    province.proc.kill()  # a crash, in the middle of reporting
    province.proc.wait(10)
    ent.post("/replay", json={"pcaps": [str(p) for p in PCAPS[half:]]})
    time.sleep(1.5)  # the worker keeps failing and backing off
    during = ent.get("/linkage/status").json()
    assert during["entries"]["pending"] > 0 and during["stats"]["retried"] > 0
    province.start()
    st = wait_drained(ent)
    assert st["entries"]["failed"] == 0

    expected = reportable(ent.get("/incidents").json())
    got = province_incidents(world["analyst"], "beta")
    ids = [i["incident_id"] for i in got]
    assert len(ids) == len(set(ids)) == len(expected) and set(ids) == set(expected)  # none lost, none twice
    assert all(i["level"] == expected[i["incident_id"]] for i in got)
    histories = {i: len(world["analyst"].get(f"/api/v1/incidents/{i}/history").json()["items"]) for i in ids}
    revisions = {i["incident_id"]: i["revision"] for i in got}
    assert all(revisions[i] == histories[i] + 1 for i in ids)  # every applied update exactly once

    # Every acknowledgement "lost" (the sensor crashed before recording it): everything is sent again.
    outbox_db = world["plat"].db.parent / "beta" / "outbox.db"
    with sqlite3.connect(outbox_db) as c:
        n = c.execute("UPDATE entries SET state = 'pending', next_at = 0, duplicate = 0 WHERE state = 'sent'").rowcount
    assert n > 0
    st = wait_drained(ent)
    assert st["duplicates_acknowledged"] == n  # the platform recognised every one
    again = province_incidents(world["analyst"], "beta")
    assert sorted(i["incident_id"] for i in again) == sorted(ids)
    assert {i["incident_id"]: i["revision"] for i in again} == revisions
