"""Helpers for the province linkage tests: real uvicorn servers on free loopback ports, a registry
set-up, signed requests, and a small headless-Chromium driver (DevTools protocol over a websocket)."""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any

import httpx
from browser import Chromium, chromium_path, free_port  # noqa: F401 - re-exported to the page tests

REPO = Path(__file__).resolve().parents[1]
USCC_A = "91350100M000100Y43"
USCC_B = "914403001922038216"
USCC_C = "91110000100005220B"


def master_key_b64() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


class ProvinceServer:
    """``icswatch province serve`` in a subprocess: a real uvicorn on 127.0.0.1, stoppable and restartable
    on the same port and database (the fault test)."""

    def __init__(
        self, db: Path, master_key: str, port: int | None = None, *, args: tuple[str, ...] = (), **settings: Any
    ) -> None:
        self.db = db
        self.args = args  # more `serve` flags (--workers 2, --store es ...)
        self.port = port or free_port()
        self.env = dict(os.environ, ICSWATCH_PROVINCE_MASTER_KEY=master_key, PYTHONPATH=str(REPO))
        for k, v in settings.items():
            self.env["ICSWATCH_PROVINCE_" + k.upper()] = str(v)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = db.with_suffix(".serve.log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> ProvinceServer:
        fh = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "icswatch.commands.province",
                "serve",
                "--port",
                str(self.port),
                "--db",
                str(self.db),
                *self.args,
            ],
            env=self.env,
            cwd=REPO,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"province server exited: {self.log.read_text(errors='replace')[-2000:]}")
            try:
                if httpx.get(self.url + "/api/v1/health", timeout=0.5).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("province server did not come up")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


@dataclass
class Platform:
    """A registry made directly in the database (the server reads it on each request)."""

    db: Path
    master_key: str
    keys: dict[str, tuple[str, str]]  # enterprise id -> (key id, secret)
    analyst: str
    admin: str

    def store(self) -> Any:
        from api.province.sqlite_store import SQLiteProvinceStore

        return SQLiteProvinceStore(self.db)


def province_es_store(
    es_server: Any, db: Path, prefix: str | None = None, url: str | None = None, **es: Any
) -> tuple[Any, Any]:
    """The Elasticsearch province store on the test cluster (registry in ``db``; ``url``: another way to
    it, such as a TcpProxy), under its own index prefix, and a function that deletes its indices and
    templates. ``es``: more EsSettings (timeout, verify_certs)."""
    import uuid

    from alerts.es_sink import EsSettings
    from api.province import es_indices
    from api.province.es_store import ElasticsearchProvinceStore
    from api.province.sqlite_store import SQLiteProvinceStore

    prefix = prefix or f"icswatch-test-province-{uuid.uuid4().hex[:8]}"
    settings = EsSettings(
        urls=[url or es_server.url], api_key=es_server.api_key, ca_file=es_server.ca_file, index_prefix=prefix, **es
    )
    store = ElasticsearchProvinceStore(SQLiteProvinceStore(db), settings, replicas=None if es_server.external else 0)

    def cleanup() -> None:
        es = es_server.client()
        for name in es_indices.names(prefix).values():
            try:
                es.indices.delete(index=name, ignore_unavailable=True)
                es.indices.delete_index_template(name=name)
            except Exception:  # noqa: BLE001 - best effort: the next test uses another prefix anyway
                pass

    return store, cleanup


def make_platform(db: Path, master_key: str | None = None) -> Platform:
    from api.province import auth
    from api.province.keys import SecretBox, verify_master
    from api.province.models import EnterpriseIn
    from api.province.service import ProvinceService
    from api.province.settings import ProvinceSettings
    from api.province.sqlite_store import SQLiteProvinceStore

    master_key = master_key or master_key_b64()
    raw = base64.urlsafe_b64decode(master_key)
    store = SQLiteProvinceStore(db)
    box = SecretBox(raw)
    verify_master(store, box)
    svc = ProvinceService(store, ProvinceSettings(db=str(db)))
    keys = {}
    for eid, name, uscc, city, industry, cii in (
        ("acme", "福州化工有限公司", USCC_A, "福州", "化工", True),
        ("beta", "深圳电子制造厂", USCC_B, "深圳", "电子", False),
        ("gamma", "北京水务集团", USCC_C, "北京", "水务", True),
    ):
        svc.add_enterprise(
            EnterpriseIn(id=eid, name=name, uscc=uscc, city=city, industry=industry, security_class=2, cii=cii)
        )
        keys[eid] = auth.issue_credential(store, box, eid)
    _, analyst = auth.issue_token(store, "analyst", "analyst")
    _, admin = auth.issue_token(store, "admin", "admin")
    store.close()
    return Platform(db, master_key, keys, analyst, admin)


def signed_request(
    client: httpx.Client,
    method: str,
    path: str,
    key: tuple[str, str],
    body: bytes = b"",
    query: str = "",
    **header_overrides: str,
) -> httpx.Response:
    from alerts.forwarder import signed_headers

    headers = signed_headers(key[0], key[1], method, path, query, body)
    headers.update(header_overrides)
    if body:
        headers["Content-Type"] = "application/json"
    return client.request(method, path + (f"?{query}" if query else ""), content=body, headers=headers)


def signed_post(key: tuple[str, str], body: bytes, path: str = "/api/v1/incidents") -> tuple[bytes, dict[str, str]]:
    """A report body and the headers that sign it (sent as is, possibly several times)."""
    from alerts.forwarder import signed_headers

    headers = signed_headers(key[0], key[1], "POST", path, "", body)
    headers["Content-Type"] = "application/json"
    return body, headers


def fire_at_once(
    url: str, requests: list[tuple[bytes, dict[str, str]]], path: str = "/api/v1/incidents"
) -> list[httpx.Response]:
    """POST every request at the same moment, each on its own connection (opened beforehand)."""
    from concurrent.futures import ThreadPoolExecutor

    barrier = threading.Barrier(len(requests))

    def one(req: tuple[bytes, dict[str, str]]) -> httpx.Response:
        with httpx.Client(base_url=url, timeout=30) as c:
            c.get("/api/v1/health")
            barrier.wait()
            return c.post(path, content=req[0], headers=req[1])

    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(one, requests))


def sample_report(incident_id: str = "inc-0001", level: int = 2, **over: Any) -> dict[str, Any]:
    from datetime import datetime

    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    report = {
        "schema_version": "1",
        "incident_id": incident_id,
        "title": "Unauthorised Modbus writes to PLC-1",
        "level": level,
        "level_criteria": "high alert, reached Impair Process Control, chain of 2 tactics",
        "discovered_at": now,
        "occurred_at": now,
        "site": "Plant 1",
        "affected_assets": [
            {"address": "int-0a1b2c3d4e5f", "asset_type": "plc", "protocols": ["modbus"], "critical": True}
        ],
        "protocols": ["modbus"],
        "techniques": ["T0846", "T0855"],
        "tactics": ["Discovery", "Impair Process Control"],
        "impact": "process control at risk",
        "evidence": {"alert_count": 3, "rules": [{"id": "modbus-write-unauthorized-master", "count": 3}]},
    }
    report.update(over)
    return report


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode()


class ThreadServer:
    """A real uvicorn server in a thread of the test process (quick to start; stoppable)."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        import uvicorn

        self.port = port or free_port()
        self.app = app
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on", access_log=False)
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ThreadServer:
        self.thread.start()
        end = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > end or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)


# -- the enterprise side ----------------------------------------------------------------------------


class BatchRecorder:
    """An alert output that keeps every batch (what the outbox writer would be handed)."""

    name = "recorder"

    def __init__(self) -> None:
        self.batches: list[Any] = []

    def write(self, batch: Any) -> None:
        self.batches.append(batch)

    def close(self) -> None:
        pass


def replay(pcaps: list[Path], outputs: list[Any], overrides: list[str] = ()) -> Any:  # type: ignore[assignment]
    """Replay captures through the sensor and the alerting runtime into ``outputs``; the summary."""
    from alerts.runtime import build_alerting
    from icswatch.config import load_config
    from sensor.pipeline import Pipeline

    cfg = load_config(None, ["sensor.enterprise_id=acme", "sensor.site=Plant 1", *overrides])
    rt = build_alerting(cfg, outputs=outputs)
    pipe = Pipeline(cfg.sensor, on_event=rt.on_event, on_tick=rt.on_tick)
    for p in pcaps:
        pipe.replay_file(p)
    return rt.close()


def incident_with_alerts(_grouper: Any = None) -> tuple[Any, list[dict[str, Any]]]:
    """A real incident and its alerts' ECS documents, from a crafted attack capture."""
    rec = BatchRecorder()
    replay([REPO / "pcaps" / "rule_modbus-function-code-scan.pcap"], [rec])
    batch = rec.batches[-1]
    inc = batch.incidents[0]
    return inc, [batch.doc(a) for a in batch.alerts if a.incident_id == inc.id]
