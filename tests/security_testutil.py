"""A small enterprise API for the security tests (no tests here): a few crafted attack captures of
pcaps/ replayed into a fresh SQLite store, tokens for the three roles, and the real app served by
uvicorn on 127.0.0.1, either in a thread of the test process (``thread()``) or as ``icswatch serve``
in a subprocess with its output captured (``process()``). Lighter than test_api_support's shared
environment (no 50 MB capture, no baseline), so these tests start in a few seconds."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from province_testutil import REPO, ThreadServer, replay

ATTACKS = ("rule_modbus-function-code-scan.pcap", "rule_modbus-umas-plc-stop.pcap", "rule_s7-plc-stop.pcap")


@dataclass
class Lite:
    dir: Path
    db: Path
    config: Path
    tokens: dict[str, str]

    def settings(self) -> Any:
        from api.enterprise.settings import EnterpriseSettings
        from icswatch.config import load_config

        return EnterpriseSettings(load_config(self.config))

    def thread(self) -> ThreadServer:
        from api.enterprise.app import create_app

        return ThreadServer(create_app(self.settings())).start()

    def client(self, url: str, role: str = "admin", **kw: Any) -> httpx.Client:
        kw.setdefault("timeout", 30)
        return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {self.tokens[role]}"}, **kw)


def lite_enterprise(d: Path, **api: Any) -> Lite:
    import yaml

    from alerts.records import Observer
    from alerts.sqlite_store import SQLiteStore
    from api.enterprise.auth import issue_token
    from api.enterprise.state import StateStore
    from icswatch.config import load_config

    d.mkdir(parents=True, exist_ok=True)
    db = d / "alerts.db"
    cfg = load_config(None, ["sensor.name=plant-1-sensor", "sensor.site=Plant 1"])
    store = SQLiteStore(db, Observer.from_config(cfg.sensor))
    replay([REPO / "pcaps" / p for p in ATTACKS if (REPO / "pcaps" / p).exists()], [store], ["outputs.batch_size=1"])
    config = d / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "sensor": {"name": "plant-1-sensor", "site": "Plant 1"},
                "outputs": {"sqlite": str(db)},
                "api": {
                    "state_db": str(d / "api-state.db"),
                    "upload_dir": str(d / "uploads"),
                    "rate_limit": 10000,
                    "rate_burst": 10000,
                    **api,
                },
            }
        ),
        encoding="utf-8",
    )
    st = StateStore(d / "api-state.db")
    try:
        tokens = {role: issue_token(st, f"{role}-test", role)[1] for role in ("viewer", "analyst", "admin")}
    finally:
        st.close()
    return Lite(d, db, config, tokens)
