"""Helpers for the province linkage tests: real uvicorn servers on free loopback ports, a registry
set-up, signed requests, and a small headless-Chromium driver (DevTools protocol over a websocket)."""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
USCC_A = "91350100M000100Y43"
USCC_B = "914403001922038216"
USCC_C = "91110000100005220B"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def master_key_b64() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


class ProvinceServer:
    """``icswatch province serve`` in a subprocess: a real uvicorn on 127.0.0.1, stoppable and restartable
    on the same port and database (the fault test)."""

    def __init__(self, db: Path, master_key: str, port: int | None = None, **settings: Any) -> None:
        self.db = db
        self.port = port or free_port()
        self.env = dict(os.environ, ICSWATCH_PROVINCE_MASTER_KEY=master_key, PYTHONPATH=str(REPO))
        for k, v in settings.items():
            self.env["ICSWATCH_PROVINCE_" + k.upper()] = str(v)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = db.with_suffix(".serve.log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> "ProvinceServer":
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


def sample_report(incident_id: str = "inc-0001", level: int = 2, **over: Any) -> dict[str, Any]:
    from datetime import datetime, timezone

    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
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


# -- headless Chromium -------------------------------------------------------------------------------

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--mute-audio",
)


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        p = shutil.which(name)
        if p:
            return p
    return None


class Chromium:
    """Just enough of the DevTools protocol: navigate, evaluate JavaScript, take a screenshot."""

    def __init__(self, width: int = 1440, height: int = 1000) -> None:
        exe = chromium_path()
        if exe is None:
            raise RuntimeError("chromium is not installed (apt-get install chromium)")
        self.profile = tempfile.mkdtemp(prefix="icswatch-chromium-")
        self.proc = subprocess.Popen(
            [
                exe,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={self.profile}",
                "--remote-debugging-port=0",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port_file = Path(self.profile) / "DevToolsActivePort"
        end = time.monotonic() + 30
        while not port_file.exists() or not port_file.read_text().strip():
            if time.monotonic() > end or self.proc.poll() is not None:
                self.close()
                raise RuntimeError("chromium did not start")
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        pages = []
        while not pages and time.monotonic() < end:
            pages = [t for t in httpx.get(f"http://127.0.0.1:{port}/json", timeout=5).json() if t.get("type") == "page"]
            time.sleep(0.05)
        from contextlib import ExitStack

        from websockets.sync.client import connect

        self._stack = ExitStack()
        self.ws = self._stack.enter_context(
            connect(pages[0]["webSocketDebuggerUrl"], max_size=64 * 1024 * 1024, open_timeout=10)
        )
        self._id = 0
        self._lock = threading.Lock()
        self.console: list[str] = []
        self.call("Runtime.enable")
        self.call("Page.enable")

    def call(self, method: str, params: dict[str, Any] | None = None, timeout: float = 30.0) -> dict[str, Any]:
        with self._lock:
            self._id += 1
            my = self._id
            self.ws.send(json.dumps({"id": my, "method": method, "params": params or {}}))
            end = time.monotonic() + timeout
            while True:
                msg = json.loads(self.ws.recv(timeout=max(0.1, end - time.monotonic())))
                if msg.get("id") == my:
                    if "error" in msg:
                        raise RuntimeError(f"{method}: {msg['error']}")
                    return msg.get("result", {})
                if msg.get("method") == "Runtime.exceptionThrown":
                    self.console.append(json.dumps(msg["params"].get("exceptionDetails", {}))[:500])

    def navigate(self, url: str) -> None:
        self.call("Page.navigate", {"url": url})

    def eval(self, expression: str) -> Any:
        r = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in r:
            raise RuntimeError(f"JavaScript error: {r['exceptionDetails']}")
        return r.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 20.0) -> Any:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                v = self.eval(expression)
            except RuntimeError:
                v = None
            if v:
                return v
            time.sleep(0.1)
        raise TimeoutError(f"waited {timeout} s for {expression}")

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            self._stack.close()
        except Exception:  # noqa: BLE001 - the browser may already be gone
            pass
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.profile, ignore_errors=True)


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

    def start(self) -> "ThreadServer":
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
