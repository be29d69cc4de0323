"""Secrets never logged (issue 11): API tokens, HMAC secrets and signatures, the province master key,
Elasticsearch passwords and API keys, passwords in URLs (``https://user:pass@host``).

The real flows run and everything they print is searched for the secret strings: both API servers
(``icswatch serve`` and ``icswatch province serve`` in subprocesses, with their access logs on at debug
level), their audit records, the CLI's output for Elasticsearch and the linkage, the forwarder's log
records, and the ``repr`` of every settings object. alerts/logsafe.py is the net under all of them;
its own masking is tested first on records that do carry secrets."""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from province_testutil import REPO, dumps, free_port, make_platform, sample_report, signed_request
from security_testutil import lite_enterprise

from alerts import logsafe

pytestmark = pytest.mark.timeout(300)

ES_PASSWORD = "Es-Pa55word-7f3c1a"
ES_API_KEY = "VnVhQ2ZHY0JDZGJrUW0tZTVhT3g6dWkybHAyYXhUTm1zeWFrdzl0dk5udw=="


def assert_clean(text: str, secrets: dict[str, str], where: str) -> None:
    for what, secret in secrets.items():
        assert secret and secret not in text, f"{what} found in {where}"


def serve(cmd: list[str], log: Path, env: dict[str, str], url: str) -> subprocess.Popen[bytes]:
    fh = open(log, "ab")
    proc = subprocess.Popen([sys.executable, "-m", *cmd], cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT)
    end = time.monotonic() + 60
    while True:
        assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
        try:
            if httpx.get(url + "/api/v1/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        assert time.monotonic() < end, "the server did not start"
        time.sleep(0.1)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def table_text(db: Path, table: str) -> str:
    with sqlite3.connect(db) as c:
        return "\n".join(repr(tuple(r)) for r in c.execute(f"SELECT * FROM {table}"))


# -- the net itself ---------------------------------------------------------------------------------------------


def test_log_records_are_masked_by_shape_and_by_value(caplog: pytest.LogCaptureFixture) -> None:
    logsafe.install()
    master = "mYm4sterK3y-base64-0123456789abcdefghijklmnop"
    logsafe.register_secret(master)
    token = "icsw_" + "Q" * 43
    secret = "isk_" + "s3cr3t" * 7
    log = logging.getLogger("icswatch.test.secrets")
    with caplog.at_level(logging.DEBUG, logger="icswatch.test.secrets"):
        log.warning("Authorization: Bearer %s", token)
        log.error("connecting to %s failed", f"https://elastic:{ES_PASSWORD}@es.plant.local:9200/_bulk")
        log.info("config %s", {"secret": secret, "master_key": master})
        log.debug('"GET /api/v1/alerts?token=%s HTTP/1.1" 401', token)  # a token pasted into a URL
        try:
            raise RuntimeError(f"could not open the box with {master} for {secret}")
        except RuntimeError:
            log.exception("key store failed")
    text = caplog.text
    assert_clean(text, {"token": token, "secret": secret, "master key": master, "ES password": ES_PASSWORD}, "the log")
    assert "icsw_***" in text and "elastic:***@es.plant.local" in text and "key store failed" in text
    assert "RuntimeError" in text  # the traceback is still there, only masked


def test_access_log_records_keep_their_shape() -> None:
    """uvicorn's access formatter unpacks the record's arguments: masking keeps them a tuple."""
    logsafe.install()
    token = "ipt_" + "A1b2" * 11
    rec = logging.getLogger("uvicorn.access").makeRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", f"/api/v1/audit?token={token}", "1.1", 401), None,
    )
    logsafe.redact_record(rec)
    assert isinstance(rec.args, tuple) and len(rec.args) == 5 and rec.args[4] == 401
    assert token not in rec.getMessage() and "token=***" in rec.getMessage()


def test_reprs_and_config_errors_hold_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    from alerts.es_sink import EsSettings
    from alerts.forwarder import LinkageClient
    from api.enterprise.settings import EnterpriseSettings
    from icswatch.config import ConfigError, load_config

    cfg = load_config(None, [f"elasticsearch.urls=[https://elastic:{ES_PASSWORD}@es.plant.local:9200]"])
    es = EsSettings.from_config(cfg.elasticsearch, {"ICSWATCH_ES_API_KEY": ES_API_KEY, "ICSWATCH_ES_PASSWORD": "pw-" + ES_PASSWORD})
    client = LinkageClient("https://soc.province.example", "ik_0123456789abcdef", "isk_" + "z" * 43)
    try:
        for obj in (cfg, cfg.elasticsearch, EnterpriseSettings(cfg), es, client):
            for text in (repr(obj), str(obj)):
                assert_clean(text, {"ES password": ES_PASSWORD, "ES API key": ES_API_KEY, "linkage secret": "z" * 43}, repr(type(obj)))
    finally:
        client.close()
    with pytest.raises(ConfigError) as exc:
        load_config(None, [f"elasticsearch.urls=[ftp://elastic:{ES_PASSWORD}@es.plant.local]"])
    assert ES_PASSWORD not in str(exc.value) and "ftp://elastic:***@es.plant.local" in str(exc.value)


# -- the enterprise API ----------------------------------------------------------------------------------------


def test_enterprise_server_output_and_audit_hold_no_token(tmp_path: Path) -> None:
    lite = lite_enterprise(tmp_path / "ent")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    proc = serve(
        ["icswatch.commands.serve", "serve", "-c", str(lite.config), "--port", str(port), "--log-level", "debug"],
        log, dict(os.environ, PYTHONPATH=str(REPO)), url,
    )
    issued = ""
    try:
        with httpx.Client(base_url=url, timeout=30) as c:
            admin = {"Authorization": f"Bearer {lite.tokens['admin']}"}
            assert c.get("/api/v1/alerts", headers=admin).status_code == 200
            # a token pasted into the query string is refused, and the access log line is masked
            assert c.get("/api/v1/alerts", params={"token": lite.tokens["viewer"]}).status_code == 401
            assert c.get("/api/v1/alerts", headers={"Authorization": "Bearer icsw_" + "x" * 43}).status_code == 401
            assert c.get("/api/v1/alerts", headers={"Authorization": lite.tokens["analyst"]}).status_code == 401
            r = c.post("/api/v1/tokens", json={"name": "ci", "role": "viewer"}, headers=admin)
            assert r.status_code == 201
            issued = r.json()["token"]
            assert c.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {issued}"}).status_code == 200
            # a secret in a body the API refuses is not echoed in the answer nor logged
            r = c.post("/api/v1/tokens", content=b'{"name": "' + lite.tokens["viewer"].encode() + b'", "role": ',
                       headers={**admin, "Content-Type": "application/json"})
            assert r.status_code == 400 and lite.tokens["viewer"] not in r.text
    finally:
        stop(proc)
    out = log.read_text(errors="replace")
    assert "GET /api/v1/alerts" in out and "token=***" in out  # the access log was on, and masked
    secrets = {f"{role} token": t for role, t in lite.tokens.items()} | {"issued token": issued}
    assert_clean(out, secrets, "the server's output")
    assert_clean(table_text(tmp_path / "ent" / "api-state.db", "audit"), secrets, "the audit log")


# -- the provincial platform -----------------------------------------------------------------------------------


def test_province_server_output_and_audit_hold_no_secret(tmp_path: Path) -> None:
    plat = make_platform(tmp_path / "province.db")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "province.log"
    env = dict(os.environ, PYTHONPATH=str(REPO), ICSWATCH_PROVINCE_MASTER_KEY=plat.master_key)
    proc = serve(
        ["icswatch.commands.province", "serve", "--port", str(port), "--db", str(plat.db), "--access-log",
         "--log-level", "debug"],
        log, env, url,
    )
    signatures: list[str] = []
    try:
        with httpx.Client(base_url=url, timeout=30) as c:
            for i in range(3):
                r = signed_request(c, "POST", "/api/v1/incidents", plat.keys["acme"], dumps(sample_report(f"inc-s{i}")))
                assert r.status_code == 201, r.text
                signatures.append(r.request.headers["x-icswatch-signature"])
            r = signed_request(c, "GET", "/api/v1/advisories", plat.keys["beta"])
            assert r.status_code == 200
            signatures.append(r.request.headers["x-icswatch-signature"])
            bad = signed_request(c, "GET", "/api/v1/advisories", (plat.keys["beta"][0], plat.keys["acme"][1]))
            assert bad.status_code == 401  # another enterprise's secret: the answer does not echo it either
            assert plat.keys["acme"][1] not in bad.text
            staff = {"Authorization": "Bearer " + plat.admin}
            assert c.get("/api/v1/audit", headers=staff).status_code == 200
            assert c.get("/api/v1/incidents", params={"token": plat.analyst}).status_code == 401
    finally:
        stop(proc)
    out = log.read_text(errors="replace")
    assert "POST /api/v1/incidents" in out and "token=***" in out  # access log on, and masked
    secrets = {
        "acme secret": plat.keys["acme"][1],
        "beta secret": plat.keys["beta"][1],
        "analyst token": plat.analyst,
        "admin token": plat.admin,
        "master key": plat.master_key,
    } | {f"signature {i}": s for i, s in enumerate(signatures)}
    assert_clean(out, secrets, "the platform's output")
    assert_clean(table_text(plat.db, "audit"), secrets, "the audit log")


# -- the CLI and the forwarder -----------------------------------------------------------------------------------


def _cli(args: list[str], tmp_path: Path, **env: str) -> str:
    r = subprocess.run(
        [sys.executable, "-m", "icswatch.cli", *args], cwd=tmp_path, capture_output=True, text=True, timeout=240, check=False,
        env=dict(os.environ, PYTHONPATH=str(REPO), **env),
    )
    return r.stdout + r.stderr


def test_cli_output_holds_no_elasticsearch_credential(tmp_path: Path) -> None:
    closed = free_port()  # nothing listens: every attempt fails and is reported
    url = f"https://elastic:{ES_PASSWORD}@127.0.0.1:{closed}"
    out = _cli(["es", "check", "--es-url", url], tmp_path, ICSWATCH_ES_API_KEY=ES_API_KEY)
    assert "cannot reach Elasticsearch" in out and "elastic:***@127.0.0.1" in out
    out += _cli(
        ["replay", str(REPO / "pcaps" / "rule_modbus-function-code-scan.pcap"), "--es-url", url,
         "--set", f"outputs.sqlite={tmp_path / 'a.db'}", "--set", f"elasticsearch.spool={tmp_path / 'spool.db'}",
         "--set", "elasticsearch.retries=0", "--set", "elasticsearch.close_timeout=2",
         "--set", "elasticsearch.retry_base=0.1"],
        tmp_path, ICSWATCH_ES_PASSWORD="pw-" + ES_PASSWORD,
    )
    assert "Elasticsearch" in out
    assert_clean(out, {"ES password": ES_PASSWORD, "ES API key": ES_API_KEY}, "the CLI's output")


def test_forwarder_logs_and_linkage_status_hold_no_secret(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from province_testutil import ProvinceServer

    from alerts.forwarder import Forwarder, LinkageClient
    from alerts.outbox import Outbox

    plat = make_platform(tmp_path / "province.db")
    server = ProvinceServer(plat.db, plat.master_key).start()
    outbox = Outbox(tmp_path / "outbox.db")
    key_id, secret = plat.keys["acme"]
    with outbox.transaction() as c:
        outbox.enqueue(c, "report", "inc-ok", "inc-ok", "POST", "/api/v1/incidents", dumps(sample_report("inc-ok")), time.time())
        outbox.enqueue(c, "report", "inc-bad", "inc-bad", "POST", "/api/v1/incidents", b'{"schema_version": "1"}', time.time())
    try:
        with caplog.at_level(logging.DEBUG):
            fwd = Forwarder(outbox, LinkageClient(server.url, key_id, secret, timeout=5), retry_base=0.1, poll_seconds=0.1)
            fwd.drain(timeout=30)
            # a wrong secret: refused, retried, logged, never shown
            wrong = Forwarder(outbox, LinkageClient(server.url, key_id, "isk_" + "w" * 43, timeout=5))
            with outbox.transaction() as c:
                outbox.enqueue(c, "report", "inc-2", "inc-2", "POST", "/api/v1/incidents", dumps(sample_report("inc-2")), time.time())
            wrong.run_once()
            fwd.close()
            wrong.close()
        assert outbox.status()["entries"]["failed"] == 1 and "refused entry" in caplog.text
        status = _cli(["linkage", "status", "--list", "--set", f"linkage.outbox={tmp_path / 'outbox.db'}"], tmp_path)
        assert "inc-bad" in status or "failed" in status
    finally:
        outbox.close()
        server.stop()
    assert_clean(caplog.text + status, {"secret": secret, "wrong secret": "w" * 43}, "the forwarder's logs")
