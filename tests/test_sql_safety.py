"""SQL is built only with parameters (issue 11).

Static: tools/sql_audit.py walks the ``ast`` of the repository and proves that every string handed to
``execute``/``executemany``/``executescript`` is a constant or is built only from constants and
identifiers taken from fixed tables (or checked against one, with a raise). It finds nothing in the
repository, and it does find each kind of injection in known-bad snippets (so the first assertion
means something).

Behavioural: injection strings in every text filter of both APIs (real uvicorn on 127.0.0.1) are
data: they match nothing, the sort and grouping parameters refuse anything outside their lists, and
the databases are intact afterwards."""

from __future__ import annotations

import sqlite3
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from province_testutil import ProvinceServer, dumps, make_platform, sample_report, signed_request
from security_testutil import Lite, lite_enterprise

from tools.sql_audit import ALLOWED, audit, audit_source, sql_calls

pytestmark = pytest.mark.timeout(300)

INJECTIONS = (
    "x' OR '1'='1",
    "1; DROP TABLE alerts; --",
    "') OR 1=1 --",
    "%' UNION SELECT name, sql FROM sqlite_master --",
    '" OR ""="',
    "\\' OR 1=1 /*",
    "％' OR 1=1 --",  # a full-width percent: no normalisation turns it into SQL
)


# -- static -----------------------------------------------------------------------------------------------------


def test_every_sql_string_in_the_repository_is_built_safely() -> None:
    findings = audit()
    assert not findings, "\n".join(map(str, findings))
    assert sql_calls() >= 250  # the audit saw the stores, the outbox, the spool, the API state, the tests
    assert all(reason.strip() for reason in ALLOWED.values())  # every whitelisted name says why


def _bad(code: str, extra: dict[str, str] | None = None) -> list[str]:
    return [str(f) for f in audit_source({"snippet.py": textwrap.dedent(code), **(extra or {})})]


def test_the_audit_finds_interpolated_values() -> None:
    # a request value in an f-string, through a helper's parameter
    assert _bad("""
        def find(c, name):
            return c.execute(f"SELECT * FROM t WHERE name = '{name}'").fetchall()
        def route(c, request):
            return find(c, request.query_params["name"])
    """)
    # concatenated attribute (ORDER BY from the query), str.format and % formatting
    assert _bad("""
        def search(c, q):
            c.execute("SELECT * FROM t ORDER BY " + q.sort)
    """)
    assert _bad("""
        def search(c, user):
            c.execute("SELECT * FROM t WHERE a = '{}'".format(user))
        search(None, input())
    """)
    assert _bad("""
        def search(c, user):
            c.execute("SELECT * FROM t WHERE a = '%s'" % user)
        search(None, input())
    """)
    # a WHERE list filled with a value, directly or by a helper of the module
    assert _bad("""
        def search(c, q):
            where = []
            where.append(f"name = '{q.name}'")
            c.execute("SELECT * FROM t WHERE " + " AND ".join(where))
    """)
    assert _bad("""
        def _add(where, column):
            where.append(f"{column} = ?")
        def search(c, q):
            where = []
            _add(where, q.column)
            c.execute("SELECT * FROM t WHERE " + " AND ".join(where))
    """)
    # a membership test that does not raise, or comes after the use, is no guard
    assert _bad("""
        SORTS = ("ts", "-ts")
        def search(c, q):
            if q.sort not in SORTS:
                print("odd sort")
            c.execute(f"SELECT * FROM t ORDER BY {q.sort}")
    """)
    assert _bad("""
        SORTS = ("ts", "-ts")
        def search(c, q):
            c.execute(f"SELECT * FROM t ORDER BY {q.sort}")
            if q.sort not in SORTS:
                raise ValueError(q.sort)
    """)
    # a table that is not fixed (built from input) whitelists nothing
    assert _bad("""
        def search(c, q):
            columns = {q.a: q.b}
            c.execute(f"SELECT {columns[q.key]} FROM t")
    """)


def test_the_audit_accepts_parameters_fixed_tables_and_guards() -> None:
    assert not _bad("""
        SORT_COLUMNS = {"ts": "ts ASC", "-ts": "ts DESC"}
        SORTS = ("severity", "ts")
        def _in(column, values, where, params):
            if values:
                where.append(f"{column} IN ({', '.join('?' for _ in values)})")
                params.extend(values)
        def search(c, q):
            where, params = [], []
            _in("rule_id", q.rules, where, params)
            if q.text:
                where.append("search LIKE ?")
                params.append(q.text)
            if q.group not in SORTS:
                raise ValueError("unknown grouping")
            order = SORT_COLUMNS[q.sort]
            sql = f"SELECT {q.group}, COUNT(*) FROM t" + (" WHERE " + " AND ".join(where) if where else "")
            sql += f" GROUP BY 1 ORDER BY {order} LIMIT ?"
            return c.execute(sql, [*params, int(q.limit)]).fetchall()
        def delete_all(c, dataset):
            for table in ("notes", "activity"):
                c.execute(f"DELETE FROM {table} WHERE dataset = ?", (dataset,))
    """)


# -- behaviour: the enterprise API -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lite(tmp_path_factory: pytest.TempPathFactory) -> Lite:
    return lite_enterprise(tmp_path_factory.mktemp("sql-lite"))


def _counts(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as c:
        return {t: c.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("alerts", "incidents", "alert_techniques")}


def test_injection_strings_in_enterprise_filters_are_data(lite: Lite) -> None:
    before = _counts(lite.db)
    assert before["alerts"] > 0
    server = lite.thread()
    try:
        with lite.client(server.url) as c:
            assert c.get("/api/v1/alerts").json()["total"] == before["alerts"]
            for s in INJECTIONS:
                for param, longest in (("rule", 100), ("asset", 64), ("ip", 64), ("protocol", 32), ("technique", 20),
                                       ("incident", 128), ("q", 200)):
                    r = c.get("/api/v1/alerts", params={param: s[:longest]})
                    assert r.status_code == 200, (param, s, r.text)
                    assert r.json()["total"] == 0, (param, s)  # matched nothing, did not widen the search
                for param, longest in (("asset", 64), ("technique", 20), ("q", 200)):
                    r = c.get("/api/v1/incidents", params={param: s[:longest]})
                    assert r.status_code == 200 and r.json()["total"] == 0, (param, s, r.text)
                r = c.get("/api/v1/assets", params={"q": s, "role": s[:40], "protocol": s[:32]})
                assert r.status_code == 200 and r.json()["items"] == [], (s, r.text)
                # identifiers come from fixed lists: anything else is refused, never interpolated
                for path, param in (("/api/v1/alerts", "sort"), ("/api/v1/incidents", "sort"), ("/api/v1/assets", "sort")):
                    assert c.get(path, params={param: s}).status_code == 422, (path, s)
                assert c.get("/api/v1/stats/counts", params={"by": s}).status_code == 422
                assert c.get("/api/v1/alerts", params={"dataset": s}).status_code == 422
                assert c.get("/api/v1/audit", params={"actor": s}).json()["items"] == []
            # LIKE wildcards in text search are literal characters, not patterns
            assert c.get("/api/v1/alerts", params={"q": "modbus"}).json()["total"] > 0
            assert c.get("/api/v1/alerts", params={"q": "mo_bus"}).json()["total"] == 0  # '_' is not "any character"
            assert c.get("/api/v1/alerts", params={"q": "mod%us"}).json()["total"] == 0  # nor '%' "anything"
            assert c.get("/api/v1/alerts").json()["total"] == before["alerts"]
    finally:
        server.stop()
    assert _counts(lite.db) == before


# -- behaviour: the provincial platform --------------------------------------------------------------------------


@pytest.fixture()
def province(tmp_path: Path) -> Iterator[tuple[Any, ProvinceServer]]:
    plat = make_platform(tmp_path / "province.db")
    server = ProvinceServer(plat.db, plat.master_key).start()
    yield plat, server
    server.stop()


def test_injection_strings_in_province_filters_and_reports_are_data(province: tuple[Any, ProvinceServer]) -> None:
    plat, server = province
    staff = {"Authorization": "Bearer " + plat.admin}
    with httpx.Client(base_url=server.url, timeout=10) as c:
        # an enterprise's report whose text fields carry SQL: stored verbatim, nothing else happens
        sneaky = sample_report("inc-sql-1", title="x'); DROP TABLE incidents; --", site="' OR 1=1 --")
        r = signed_request(c, "POST", "/api/v1/incidents", plat.keys["acme"], dumps(sneaky))
        assert r.status_code == 201, r.text
        got = c.get("/api/v1/incidents/inc-sql-1", params={"enterprise_id": "acme"}, headers=staff)
        assert got.status_code == 200 and got.json()["title"] == sneaky["title"]
        assert got.json()["report"]["site"] == sneaky["site"]
        assert len(c.get("/api/v1/incidents", headers=staff).json()["items"]) == 1
        for s in INJECTIONS:
            for param in ("q", "city", "industry", "status"):
                r = c.get("/api/v1/incidents", params={param: s}, headers=staff)
                assert r.status_code == 200 and r.json()["items"] == [], (param, s, r.text)
            r = c.get("/api/v1/incidents/inc-sql-1", params={"enterprise_id": s}, headers=staff)
            assert r.status_code == 404, (s, r.text)
            r = c.get("/api/v1/situation", params={"city": s, "industry": s}, headers=staff)
            assert r.status_code == 200 and r.json()["totals"]["incidents"] == 0, (s, r.text)
            r = c.get("/api/v1/enterprises", params={"city": s, "industry": s}, headers=staff)
            assert r.status_code == 200 and r.json()["items"] == [], (s, r.text)
            r = c.get("/api/v1/audit", params={"actor": s[:100], "action": s}, headers=staff)
            assert r.status_code == 200 and r.json()["items"] == [], (s, r.text)
            assert c.get("/api/v1/audit", params={"result": s}, headers=staff).status_code == 422
    with sqlite3.connect(plat.db) as db:
        assert db.execute("SELECT COUNT(*) FROM incidents").fetchone()[0] == 1
        assert db.execute("SELECT COUNT(*) FROM enterprises").fetchone()[0] == 3
