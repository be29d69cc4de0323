"""Sustained signed incident intake against the provincial platform (SQLite store), on loopback.

    python bench/province_load.py                          # 8 clients, 20 s, 50 enterprises
    python bench/province_load.py --clients 16 --seconds 30 --json bench/out/province-load.json
    python bench/province_load.py --check                  # exit 1 below 1,000 reports/s or p99 >= 100 ms

The platform runs as ``icswatch province serve`` would (one uvicorn process, uvloop + httptools when
installed) on a fresh database; the load comes from one client process running ``--clients``
concurrent keep-alive HTTP/1.1 connections (raw asyncio streams: a heavier client would eat the CPU
the server is measured on, the machine has 2 cores). Every request is a new incident report with its
own key, timestamp, nonce, body digest and HMAC, exactly what a sensor sends; all of the platform's
work happens per request: signature check, replay cache insert, schema validation, deadline, the
incident row and its aggregate side tables, the audit entry.

Reported: reports/s (accepted 201s over the measured window, after a warm-up), latency p50/p90/p99/
max from the client's send to the last byte of the answer, errors. Traffic goes to 127.0.0.1 only
and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from alerts.forwarder import signed_headers  # noqa: E402


def setup(db: Path, enterprises: int) -> tuple[str, list[tuple[str, str]]]:
    from api.province import auth
    from api.province.keys import SecretBox, verify_master
    from api.province.models import EnterpriseIn
    from api.province.service import ProvinceService
    from api.province.settings import ProvinceSettings
    from api.province.sqlite_store import SQLiteProvinceStore
    from api.province.uscc import check_char

    master = secrets.token_bytes(32)
    store = SQLiteProvinceStore(db)
    box = SecretBox(master)
    verify_master(store, box)
    svc = ProvinceService(store, ProvinceSettings(db=str(db)))
    cities = ["福州", "厦门", "泉州", "漳州", "南平", "三明", "龙岩", "莆田", "宁德"]
    industries = ["化工", "电力", "水务", "制造", "石化", "冶金"]
    keys = []
    for i in range(enterprises):
        body17 = f"9135010{i:010d}"[:17]
        uscc = body17 + check_char(body17)
        svc.add_enterprise(
            EnterpriseIn(
                id=f"e{i:04d}",
                name=f"企业{i}",
                uscc=uscc,
                city=cities[i % len(cities)],
                industry=industries[i % len(industries)],
                security_class=1 + i % 3,
                cii=i % 4 == 0,
            )
        )
        keys.append(auth.issue_credential(store, box, f"e{i:04d}"))
    store.close()
    return base64.urlsafe_b64encode(master).decode(), keys


def report(n: int) -> bytes:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    doc = {
        "schema_version": "1",
        "incident_id": f"bench-{n:09d}-{secrets.token_hex(4)}",
        "title": "Unauthorised Modbus writes",
        "level": 1 + n % 4,
        "level_criteria": "high alert, reached Impair Process Control",
        "discovered_at": now,
        "occurred_at": now,
        "site": "Plant 1",
        "affected_assets": [
            {"address": "int-0a1b2c3d4e5f", "asset_type": ("plc", "rtu", "hmi")[n % 3], "protocols": ["modbus"]}
        ],
        "protocols": [("modbus", "s7comm", "iec104", "dnp3")[n % 4]],
        "techniques": ["T0846", "T0855"],
        "tactics": ["Discovery", "Impair Process Control"],
        "impact": "process control at risk",
        "evidence": {
            "alert_count": 3,
            "rules": [{"id": "modbus-write-unauthorized-master", "count": 3}],
            "samples": [
                {
                    "rule_id": "modbus-write-unauthorized-master",
                    "src": "int-aa",
                    "dst": "int-bb",
                    "function": "write_multiple_registers",
                    "address": 100,
                    "values_redacted": 4,
                }
            ],
        },
    }
    return json.dumps(doc, separators=(",", ":")).encode()


async def client(
    port: int, keys: list[tuple[str, str]], idx: int, stop: float, warm: float, lat: list[float], status: dict[int, int]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    n = idx * 10_000_000
    try:
        while time.perf_counter() < stop:
            n += 1
            key = keys[n % len(keys)]
            body = report(n)
            h = signed_headers(key[0], key[1], "POST", "/api/v1/incidents", "", body)
            head = "".join(f"{k}: {v}\r\n" for k, v in h.items())
            req = (
                f"POST /api/v1/incidents HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n{head}\r\n"
            ).encode() + body
            t0 = time.perf_counter()
            writer.write(req)
            line = await reader.readline()
            code = int(line.split()[1])
            length = 0
            while True:
                hl = await reader.readline()
                if hl in (b"\r\n", b""):
                    break
                if hl[:15].lower() == b"content-length:":
                    length = int(hl[15:])
            await reader.readexactly(length)
            t1 = time.perf_counter()
            if t0 >= warm:
                lat.append(t1 - t0)
                status[code] = status.get(code, 0) + 1
    finally:
        writer.close()


async def load(port: int, keys: list[tuple[str, str]], clients: int, seconds: float, warmup: float) -> dict:
    lat: list[float] = []
    status: dict[int, int] = {}
    start = time.perf_counter()
    warm = start + warmup
    stop = warm + seconds
    await asyncio.gather(*(client(port, keys, i, stop, warm, lat, status) for i in range(clients)))
    ok = status.get(201, 0)
    lat.sort()

    def pct(p: float) -> float:
        return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 2) if lat else 0.0

    return {
        "clients": clients,
        "seconds": seconds,
        "requests": len(lat),
        "accepted": ok,
        "status": status,
        "reports_per_s": round(ok / seconds, 1),
        "p50_ms": pct(0.50),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "max_ms": round(lat[-1] * 1000, 2) if lat else 0.0,
        "mean_ms": round(statistics.fmean(lat) * 1000, 2) if lat else 0.0,
    }


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process (Linux /proc), in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--enterprises", type=int, default=50)
    ap.add_argument("--json", help="write the figures as JSON")
    ap.add_argument("--check", action="store_true", help="exit 1 below 1,000 reports/s or at p99 >= 100 ms")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="province-load-") as tmp:
        db = Path(tmp) / "province.db"
        master, keys = setup(db, args.enterprises)
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = dict(os.environ, ICSWATCH_PROVINCE_MASTER_KEY=master, PYTHONPATH=str(REPO))
        proc = subprocess.Popen(
            [sys.executable, "-m", "icswatch.commands.province", "serve", "--port", str(port), "--db", str(db)],
            env=env,
            cwd=REPO,
            stderr=subprocess.DEVNULL,
        )
        try:
            import httpx

            for _ in range(200):
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=0.5).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            cpu0 = _cpu_seconds(proc.pid)
            result = asyncio.run(load(port, keys, args.clients, args.seconds, args.warmup))
            cpu = _cpu_seconds(proc.pid) - cpu0
            # CPU the platform spent per accepted report (warm-up included, so slightly pessimistic): on a
            # shared machine the throughput depends on what else runs; this figure much less so.
            total = result["accepted"] * (args.seconds + args.warmup) / args.seconds
            result["server_cpu_ms_per_report"] = round(cpu * 1000 / max(1.0, total), 3)
            result["server_cpu_share"] = round(cpu / (args.seconds + args.warmup), 2)
        finally:
            proc.terminate()
            proc.wait(15)
        import sqlite3

        with sqlite3.connect(db) as c:
            result["stored_incidents"] = c.execute("SELECT COUNT(*) FROM incidents").fetchone()[0]
            result["audit_entries"] = c.execute("SELECT COUNT(*) FROM audit").fetchone()[0]
    result["target"] = {"reports_per_s": 1000, "p99_ms": 100}
    result["met"] = result["reports_per_s"] >= 1000 and result["p99_ms"] < 100
    print(
        f"province intake (SQLite): {result['clients']} clients, {result['seconds']:.0f} s: "
        f"{result['reports_per_s']:,.0f} reports/s, p50 {result['p50_ms']} ms, p90 {result['p90_ms']} ms, "
        f"p99 {result['p99_ms']} ms, max {result['max_ms']} ms; status {result['status']}; "
        f"platform CPU {result.get('server_cpu_ms_per_report')} ms/report ({result.get('server_cpu_share')} cores); "
        f"stored {result['stored_incidents']}, audited {result['audit_entries']}; target met: {result['met']}"
    )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1), encoding="utf-8")
    return 1 if args.check and not result["met"] else 0


if __name__ == "__main__":
    sys.exit(main())
