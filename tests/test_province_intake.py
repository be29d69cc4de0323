"""The report intake's group commit (api/province/intake.py): concurrent reports are committed together
and each still gets its own, correct answer, on every store and in both ways a batch runs (on the event
loop: SQLite NORMAL; in the writer thread: SQLite FULL and Elasticsearch).

- Unit level, on real stores: reports handed over in the same turn of the loop form one batch; a
  nonce used twice inside one batch is refused the second time; the same incident twice is created
  once; a store that fails answers every waiter 503 and the next batch works.
- HTTP level, real uvicorn on 127.0.0.1: many connections report the same incident at once (one 201,
  the others "duplicate" with the same receipt), the same signed request is fired from several
  connections at once (exactly one accepted, the others 401 replayed_nonce), a refused report spends
  its nonce, and every acknowledged report is in the store.
- Fault, Elasticsearch store: the cluster becomes unreachable (a TCP proxy cut) in the middle of the
  intake: the reports are answered 503 (never acknowledged), the platform recovers when the cluster
  is back, and nothing acknowledged is missing.
"""

from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from es_testutil import EsServer, TcpProxy, es_server  # noqa: F401 (fixture)
from province_testutil import (
    ThreadServer,
    dumps,
    fire_at_once,
    make_platform,
    province_es_store,
    sample_report,
    signed_post,
)

from api.province.errors import ApiError
from api.province.intake import GroupCommit
from api.province.store import IncidentRecord, IntakeItem

PATH = "/api/v1/incidents"


def record(incident_id: str, enterprise_id: str = "acme") -> IncidentRecord:
    now = time.time()
    return IncidentRecord(
        enterprise_id,
        incident_id,
        {"title": incident_id, "protocols": ["modbus"]},
        2,
        "open",
        "福州",
        "化工",
        True,
        now,
        now,
        now,
        now + 3600,
        False,
        now,
        protocols=["modbus"],
    )


# -- unit: GroupCommit on real stores ----------------------------------------------------------------


@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])
def test_one_batch_per_turn_of_the_loop_and_each_item_its_own_outcome(tmp_path: Path, synchronous: str) -> None:
    from api.province.sqlite_store import SQLiteProvinceStore

    store = SQLiteProvinceStore(tmp_path / "p.db", synchronous)
    committer = GroupCommit(store, 300.0)
    assert committer.in_loop is (synchronous == "NORMAL")
    items = [
        IntakeItem("ik_a", f"nonce-{i:04d}-aaaaaaaaaa", time.time(), record(f"inc-{i % 15:03d}")) for i in range(20)
    ]
    items.append(IntakeItem("ik_a", "nonce-0003-aaaaaaaaaa", time.time(), record("inc-new")))  # replay, same batch
    items.append(IntakeItem("ik_b", "nonce-0003-aaaaaaaaaa", time.time(), record("inc-other")))  # another key's

    async def run() -> list[Any]:
        return await asyncio.gather(*(committer.commit(i) for i in items))

    try:
        outcomes = asyncio.run(run())
        assert committer.stats.batches == 1 and committer.stats.largest == len(items)
        assert [o.fresh for o in outcomes] == [True] * 20 + [False, True]
        assert [o.created for o in outcomes[:20]] == [True] * 15 + [False] * 5  # inc-000..014, then repeats
        for o, item in zip(outcomes[15:20], items[15:20]):
            assert o.stored is not None and o.stored.incident_id == item.record.incident_id  # type: ignore[union-attr]
        assert outcomes[20].stored is None  # a replay writes nothing
        assert store.get_incident("acme", "inc-new") is None and store.get_incident("acme", "inc-other")
    finally:
        committer.close()
        store.close()


def test_a_failing_store_answers_503_to_the_whole_batch_and_the_next_batch_works(tmp_path: Path) -> None:
    from api.province.sqlite_store import SQLiteProvinceStore

    store = SQLiteProvinceStore(tmp_path / "p.db")
    committer = GroupCommit(store, 300.0)
    real = store.intake_batch
    failures = [1]

    def flaky(items: Any, now: float, window: float) -> Any:
        if failures:
            failures.pop()
            raise OSError("disk I/O error")  # what SQLite raises when the disk fails
        return real(items, now, window)

    store.intake_batch = flaky  # type: ignore[method-assign]

    async def run() -> tuple[list[Any], list[Any]]:
        first = await asyncio.gather(
            *(committer.commit(IntakeItem("k", f"n-{i}-xxxxxxxxxxxx", 0.0, record(f"f-{i}"))) for i in range(5)),
            return_exceptions=True,
        )
        second = await asyncio.gather(
            *(committer.commit(IntakeItem("k", f"m-{i}-xxxxxxxxxxxx", 0.0, record(f"f-{i}"))) for i in range(5))
        )
        return first, second

    try:
        first, second = asyncio.run(run())
        assert all(isinstance(e, ApiError) and e.status == 503 and e.code == "store_unavailable" for e in first)
        assert [o.created for o in second] == [True] * 5  # nothing of the failed batch was written
        assert committer.stats.failed_batches == 1
    finally:
        committer.close()
        store.close()


def test_the_replay_cache_is_pruned_and_bounded_in_the_background(tmp_path: Path, monkeypatch: Any) -> None:
    from api.province import sqlite_store
    from api.province.sqlite_store import SQLiteProvinceStore

    monkeypatch.setattr(sqlite_store, "MAINTENANCE_SECONDS", 0.05)
    monkeypatch.setattr(sqlite_store, "NONCE_BOUND_EVERY", 1)
    store = SQLiteProvinceStore(tmp_path / "p.db", max_nonces=1000)
    now = time.time()
    try:
        expired = [IntakeItem("ik_a", f"old-{i:05d}-aaaaaaaaaaaa", now - 400, None) for i in range(1500)]
        fresh = [IntakeItem("ik_a", f"new-{i:05d}-aaaaaaaaaaaa", now - 200 + i * 0.1, None) for i in range(1200)]
        assert all(o.fresh for o in store.intake_batch(expired + fresh, now, 300.0))
        deadline = time.monotonic() + 20
        while store.nonce_count() > 1000 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert store.nonce_count() == 1000  # the expired ones, then the oldest over the bound
        outcomes = store.intake_batch([fresh[-1], fresh[0], expired[0]], now, 300.0)
        # The newest is still remembered (a replay); the oldest fresh one was dropped to keep the bound
        # (its timestamp was the nearest to leaving the window); an expired one fails the timestamp check
        # before it ever gets here.
        assert [o.fresh for o in outcomes] == [False, True, True]
        maintenance = store._maintenance
        assert maintenance is not None
        while (maintenance.checkpoints < 1 or maintenance.pruned < 1700) and time.monotonic() < deadline:
            time.sleep(0.05)  # the round that pruned checkpoints right after
        assert maintenance.checkpoints >= 1 and maintenance.pruned >= 1700
    finally:
        store.close()


# -- HTTP: real servers ------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["sqlite", "sqlite-full", "es"])
def platform(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from api.province import ProvinceSettings, create_app

    db = tmp_path_factory.mktemp("province-intake") / "province.db"
    plat = make_platform(db)
    store, cleanup = None, None
    synchronous = "FULL" if request.param == "sqlite-full" else "NORMAL"
    if request.param == "es":
        store, cleanup = province_es_store(request.getfixturevalue("es_server"), db)
    settings = ProvinceSettings(db=str(db), synchronous=synchronous, rate_limit=0)
    app = create_app(settings, store, master_key=base64.urlsafe_b64decode(plat.master_key))
    server = ThreadServer(app).start()
    yield {"plat": plat, "app": app, "url": server.url, "kind": request.param}
    server.stop()
    if cleanup is not None:
        cleanup()


def test_the_same_incident_from_many_connections_at_once_is_created_once(platform: dict[str, Any]) -> None:
    key = platform["plat"].keys["acme"]
    body = dumps(sample_report(f"burst-{platform['kind']}", level=2))
    answers = fire_at_once(platform["url"], [signed_post(key, body) for _ in range(24)])
    codes = sorted(r.status_code for r in answers)
    assert codes == [200] * 23 + [201], [r.text for r in answers if r.status_code not in (200, 201)]
    receipts = [r.json() for r in answers]
    assert sum(1 for r in receipts if r["duplicate"]) == 23
    assert len({(r["received_at"], r["deadline"], r["revision"]) for r in receipts}) == 1  # one stored incident
    rec = platform["app"].state.store.get_incident("acme", f"burst-{platform['kind']}")
    assert rec is not None and rec.level == 2


def test_the_same_signed_request_fired_at_once_is_accepted_once(platform: dict[str, Any]) -> None:
    key = platform["plat"].keys["beta"]
    req = signed_post(key, dumps(sample_report(f"replay-{platform['kind']}", level=3)))
    answers = fire_at_once(platform["url"], [req] * 8)
    assert sorted(r.status_code for r in answers) == [201] + [401] * 7
    assert {r.json()["error"]["code"] for r in answers if r.status_code == 401} == {"replayed_nonce"}


def test_a_refused_report_spends_its_nonce_and_acknowledged_reports_are_stored(platform: dict[str, Any]) -> None:
    key = platform["plat"].keys["gamma"]
    bad = signed_post(key, dumps(sample_report(f"bad-{platform['kind']}", level=9)))
    with httpx.Client(base_url=platform["url"], timeout=30) as c:
        r = c.post(PATH, content=bad[0], headers=bad[1])
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_report"
        r = c.post(PATH, content=bad[0], headers=bad[1])  # the same bytes again: the nonce is spent
        assert r.status_code == 401 and r.json()["error"]["code"] == "replayed_nonce"
    reqs = [signed_post(key, dumps(sample_report(f"many-{platform['kind']}-{i}", level=4))) for i in range(30)]
    answers = fire_at_once(platform["url"], reqs)
    assert [r.status_code for r in answers] == [201] * 30
    store = platform["app"].state.store
    for i in range(30):
        assert store.get_incident("gamma", f"many-{platform['kind']}-{i}") is not None
    stats = platform["app"].state.intake.committer.stats
    assert stats.reports >= 30 + 24 + 8 and stats.failed_batches == 0


def test_elasticsearch_outage_during_intake_is_503_and_nothing_acknowledged_is_lost(
    es_server: EsServer, tmp_path: Path
) -> None:
    from api.province import ProvinceSettings, create_app
    from api.province.store import AuditFilter

    target = urlsplit(es_server.url)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 9200)
    netloc = f"127.0.0.1:{proxy.port}"
    if target.username:
        netloc = f"{target.username}:{target.password or ''}@{netloc}"
    tls = {"verify_certs": False} if target.scheme == "https" else {}
    db = tmp_path / "province.db"
    plat = make_platform(db)
    store, cleanup = province_es_store(es_server, db, url=f"{target.scheme}://{netloc}", timeout=2.0, **tls)
    app = create_app(
        ProvinceSettings(db=str(db), rate_limit=0), store, master_key=base64.urlsafe_b64decode(plat.master_key)
    )
    server = ThreadServer(app).start()
    key = plat.keys["acme"]
    acknowledged: list[str] = []
    refused = 0
    try:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            for i in range(60):
                if i == 20:
                    proxy.down()
                if i == 40:
                    proxy.up()
                body = dumps(sample_report(f"outage-{i}", level=3))
                r = c.post(PATH, content=body, headers=signed_post(key, body)[1])
                if r.status_code == 201:
                    acknowledged.append(f"outage-{i}")
                else:
                    assert r.status_code == 503 and r.json()["error"]["code"] == "store_unavailable", r.text
                    assert r.headers.get("retry-after") == "1"
                    refused += 1
        assert refused >= 15 and len(acknowledged) >= 35  # the cut was felt, and the platform came back
        for incident_id in acknowledged:
            assert store.get_incident("acme", incident_id) is not None
        # The audit entries of the outage were kept and written once the cluster was back, none twice.
        assert app.state.audit.flush(timeout=30)
        store.refresh()
        assert store.search_audit(AuditFilter(action="POST /api/v1/incidents")).total == 60
        assert app.state.audit.failed == 0
    finally:
        server.stop()
        proxy.down()
        cleanup()
