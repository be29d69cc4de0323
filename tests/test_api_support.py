"""Shared set-up of the enterprise API tests (no tests here; the other tests/test_api_*.py import it).

``api_env()`` builds, once per test run: a baseline learned from the two normal plant captures, the
demo captures in pcaps/ replayed into a temporary SQLite store (the rules over every capture, the
baseline detector in protect mode over plant_attack.pcap, the asset inventory over everything),
tokens for the three roles, a sensor stats file, a configuration file, and a real ``icswatch serve``
(uvicorn in a subprocess) on a free port of 127.0.0.1. ``Server`` starts more servers on copies of
the same data (schemathesis writes; the rate-limit test needs tiny limits). ``Chromium`` drives
Debian's headless chromium over the DevTools protocol.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from browser import Chromium, chromium_path, free_port  # noqa: F401 - re-exported to the page tests

REPO = Path(__file__).resolve().parents[1]
PCAPS = REPO / "pcaps"
_ENV: dict[str, Any] = {}
_LOCK = threading.Lock()


class _Gate:
    """A detector that only looks while ``on`` (the baseline runs over the attack capture only)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = getattr(inner, "name", "gated")
        self.on = False

    def observe(self, event: Any) -> list:
        return self.inner.observe(event) if self.on else []

    def tick(self, ts: float) -> list:
        return self.inner.tick(ts) if self.on else []

    def flush(self) -> list:
        return self.inner.flush()


def replay_demo(db: Path, baseline: Path) -> dict[str, Any]:
    """Learn the baseline, replay pcaps/ into ``db`` (alerts, incidents, assets); the run's summary."""
    from alerts.asset_store import AssetStore
    from alerts.runtime import build_alerting
    from detectors.baseline import BaselineDetector, learn_captures, save
    from icswatch.config import load_config
    from sensor.assets import AssetInventory
    from sensor.pipeline import Pipeline

    os.environ.setdefault("SOURCE_DATE_EPOCH", "1767225600")
    b, _ = learn_captures([str(PCAPS / "plant_normal_1.pcap"), str(PCAPS / "plant_normal_2.pcap")])
    save(b, baseline)
    cfg = load_config(None, [f"outputs.sqlite={db}", "sensor.name=plant-1-sensor", "sensor.site=Plant 1"])
    gate = _Gate(BaselineDetector.from_file(str(baseline)))
    inventory = AssetInventory()
    runtime = build_alerting(cfg, detectors=[gate, inventory])
    pipeline = Pipeline(cfg.sensor, on_event=runtime.on_event, on_tick=runtime.on_tick)
    for path in sorted(PCAPS.glob("*.pcap")):
        gate.on = path.name == "plant_attack.pcap"
        pipeline.replay_file(path)
    summary = runtime.close()
    with AssetStore(db) as store:
        store.save(inventory)
    return {"alerts": summary.total, "incidents": len(summary.incidents), "assets": len(inventory.assets),
            "baseline_alerts": sum(n for r, n in summary.by_rule.items() if r.startswith("baseline-"))}


def write_config(path: Path, db: Path, d: Path, sections: dict[str, Any] | None = None, **api: Any) -> Path:
    import yaml

    cfg: dict[str, Any] = {
        "sensor": {"name": "plant-1-sensor", "site": "Plant 1"},
        "outputs": {"sqlite": str(db)},
        "api": {
            "state_db": str(d / "api-state.db"),
            "upload_dir": str(d / "uploads"),
            "baseline": str(d / "baseline.yaml"),
            "sensor_stats": [str(d / "sensor-1.json"), str(d / "sensor-gone.json")],
            "upload_max_bytes": 60 * 1024 * 1024,
            "rate_limit": 10000,
            "rate_burst": 10000,
            **api,
        },
        **(sections or {}),
    }
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def sensor_stats(path: Path) -> None:
    """A stats file in the shape ``icswatch sniff --stats-json`` writes."""
    from datetime import UTC, datetime

    path.write_text(json.dumps({
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "uptime": 3600.5,
        "capture": {"totals": {"kernel_received": 120000, "kernel_dropped": 3, "queue_dropped": 2, "processed": 119995}},
        "pipeline": {"processed": 119995, "events": 80000, "counters": {"tcp_gap": 4, "modbus_bad_length": 1}},
        "alerts": 12,
        "reloads": 1,
        "evidence": None,
    }), encoding="utf-8")


class Server:
    """``python -m icswatch.commands.serve serve -c CONFIG`` on a free loopback port."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.port = free_port()
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> Server:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        fh = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "icswatch.commands.serve", "serve", "-c", str(self.config), "--port", str(self.port),
             "--log-level", "warning"],
            cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT,
        )
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError("icswatch serve exited: " + self.log.read_text(errors="replace")[-3000:])
            try:
                if httpx.get(self.url + "/api/v1/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("icswatch serve did not come up: " + self.log.read_text(errors="replace")[-3000:])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


BIG_PACKETS = 460_000  # about 50 MB of Modbus/TCP (bench/gen_modbus.py)


@dataclass
class ApiEnv:
    dir: Path
    db: Path
    config: Path
    server: Server
    tokens: dict[str, str]
    replay: dict[str, Any]
    extra: list[Server] = field(default_factory=list)
    generator: subprocess.Popen[bytes] | None = None

    def big_capture(self) -> Path:
        """The ~50 MB capture, generated in the background since the set-up (it takes a while)."""
        path = self.dir / "big.pcap"
        if self.generator is not None:
            code = self.generator.wait(300)
            assert code == 0, (self.dir / "gen.log").read_text(errors="replace")
        return path

    @property
    def url(self) -> str:
        return self.server.url

    def client(self, role: str | None = "viewer", **kw: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}
        kw.setdefault("timeout", 60)
        return httpx.Client(base_url=self.url, headers=headers, **kw)

    def copy(self, name: str, sections: dict[str, Any] | None = None, **api: Any) -> tuple[Server, dict[str, str]]:
        """Another server on a copy of the data (its own state, uploads and tokens)."""
        d = self.dir / name
        d.mkdir()
        db = d / "alerts.db"
        src = sqlite_backup(self.db, db)
        shutil.copy(self.dir / "baseline.yaml", d / "baseline.yaml")
        sensor_stats(d / "sensor-1.json")
        cfg = write_config(d / "config.yaml", src, d, sections, **api)
        tokens = issue_tokens(d / "api-state.db")
        srv = Server(cfg, d / "serve.log").start()
        self.extra.append(srv)
        return srv, tokens


def sqlite_backup(src: Path, dst: Path) -> Path:
    import sqlite3

    a = sqlite3.connect(src)
    b = sqlite3.connect(dst)
    with b:
        a.backup(b)
    a.close()
    b.close()
    return dst


def issue_tokens(state_db: Path) -> dict[str, str]:
    from api.enterprise.auth import issue_token
    from api.enterprise.state import StateStore

    st = StateStore(state_db)
    try:
        return {role: issue_token(st, f"{role}-test", role)[1] for role in ("viewer", "analyst", "admin")}
    finally:
        st.close()


def api_env(request: pytest.FixtureRequest) -> ApiEnv:
    """The shared environment, built at the first call of the run and torn down at its end."""
    with _LOCK:
        env = _ENV.get("env")
        if env is not None:
            return env
        d = Path(tempfile.mkdtemp(prefix="icswatch-api-"))
        db = d / "alerts.db"
        with open(d / "gen.log", "wb") as log:
            generator = subprocess.Popen(
                [sys.executable, str(REPO / "bench" / "gen_modbus.py"), "--packets", str(BIG_PACKETS), "-q", "-o", str(d / "big.pcap")],
                stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
            )
        replay = replay_demo(db, d / "baseline.yaml")
        sensor_stats(d / "sensor-1.json")
        cfg = write_config(d / "config.yaml", db, d)
        tokens = issue_tokens(d / "api-state.db")
        server = Server(cfg, d / "serve.log").start()
        env = ApiEnv(d, db, cfg, server, tokens, replay, generator=generator)
        _ENV["env"] = env

        def teardown() -> None:
            for s in env.extra:
                s.stop()
            if generator.poll() is None:
                generator.kill()
                generator.wait(10)
            env.server.stop()
            shutil.rmtree(d, ignore_errors=True)
            _ENV.pop("env", None)

        request.config.add_cleanup(teardown)
        return env


