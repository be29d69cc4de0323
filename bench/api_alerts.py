#!/usr/bin/env python3
"""How fast the enterprise API answers an alert search over 100,000 stored alerts (target: a filtered
page in under 200 ms).

What it does: writes ``--alerts`` synthetic alerts (default 100,000) into a fresh SQLite store through
``SQLiteStore.write`` (the same batches the sensor writes: ECS documents with evidence events,
techniques, incidents), starts a real ``icswatch serve`` on a free loopback port, issues a viewer
token, and times ``GET /api/v1/alerts`` pages of 50 over HTTP, client-side (request to last byte),
for several filter shapes; each shape is requested ``--repeat`` times after one warm-up request.

    python bench/api_alerts.py                     # table on stdout
    python bench/api_alerts.py --json out.json     # and every figure as JSON
    python bench/api_alerts.py --check             # exit 1 when a filtered page's median is over 200 ms

The alerts: 60 rules, 4 severities (low 35%, medium 35%, high 22%, critical 8%), 10 protocols, 400
assets and 600 peers, 1-3 techniques each, one evidence event each, spread over 30 days; a tenth of
them acknowledged or closed. Deterministic (seeded).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TARGET_MS = 200.0
PROTOCOLS = ("modbus", "dnp3", "iec104", "s7comm", "enip", "bacnet", "opcua", "mms", "goose", "fins")
TECHNIQUES = ("T0855", "T0836", "T0846", "T0886", "T0888", "T0816", "T0843", "T0858", "T0814", "T0831", "T0830", "T0869")
SEVERITIES = ("low", "medium", "high", "critical")
SEV_WEIGHTS = (35, 35, 22, 8)


def make_alerts(n: int, seed: int = 1) -> Any:
    """Batches of (alerts, incidents) as the alerting runtime would hand them to the store."""
    from alerts.records import Alert, Incident
    from sensor.events import IcsEvent

    rng = random.Random(seed)
    rules = [(f"bench-rule-{i:02d}", f"Bench rule {i}: something odd on the wire", PROTOCOLS[i % len(PROTOCOLS)]) for i in range(60)]
    assets = [f"10.{20 + i // 200}.{(i // 20) % 10}.{i % 200 + 10}" for i in range(400)]
    peers = [f"10.9.{i // 250}.{i % 250 + 1}" for i in range(600)]
    t0 = 1_767_225_600.0
    span = 30 * 86400.0
    batch: list[Any] = []
    incidents: dict[str, Any] = {}
    for i in range(n):
        rule_id, name, proto = rules[rng.randrange(len(rules))]
        sev = rng.choices(SEVERITIES, SEV_WEIGHTS)[0]
        ts = t0 + span * i / n + rng.random()
        asset = assets[rng.randrange(len(assets))]
        src = peers[rng.randrange(len(peers))]
        techs = tuple(sorted(set(rng.sample(TECHNIQUES, rng.randint(1, 3)))))
        ev = IcsEvent(ts, proto, src, 40000 + i % 20000, asset, 502, "tcp", "request", 6, "write_single_register", "write",
                      unit=1, address=rng.randrange(1000), quantity=1, values=(rng.randrange(65536),), flow_id=i % 5000)
        inc_id = f"inc-{asset}-{int(ts // 86400)}"
        a = Alert(
            id=f"{i:024x}", ts=ts, rule_id=rule_id, rule_name=name, severity=sev, techniques=techs,
            technique_names=techs, tactics=("Impair Process Control",), description=f"{name} ({src} -> {asset})",
            protocol=proto, transport="tcp", src=src, sport=ev.sport, dst=asset, dport=502, asset=asset, first_ts=ts,
            events=(ev,), flow_id=ev.flow_id, incident_id=inc_id,
            status="open" if rng.random() > 0.1 else rng.choice(("acknowledged", "closed")),
        )
        inc = incidents.get(inc_id)
        if inc is None:
            inc = incidents[inc_id] = Incident(inc_id, asset, ts, ts)
        inc.last_ts = ts
        inc.alert_count += 1
        inc.alert_ids.append(a.id) if len(inc.alert_ids) < 50 else None
        batch.append(a)
        if len(batch) == 5000:
            yield batch, list(incidents.values())
            batch, incidents = [], {}
    if batch:
        yield batch, list(incidents.values())


def fill(db: Path, n: int) -> float:
    from alerts.sqlite_store import SQLiteStore
    from alerts.store import WriteBatch

    t = time.perf_counter()
    store = SQLiteStore(db)
    for alerts, incidents in make_alerts(n):
        store.write(WriteBatch(alerts=alerts, incidents=incidents,
                               events=[(a.id, "evidence", 0, a.events[0]) for a in alerts]))
    store.close()
    return time.perf_counter() - t


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


SHAPES: list[tuple[str, dict[str, Any]]] = [
    ("newest page, no filter", {}),
    ("severity=high & protocol=modbus", {"severity": "high", "protocol": "modbus"}),
    ("min_severity=high & status=open", {"min_severity": "high", "status": "open"}),
    ("one rule", {"rule": "bench-rule-07"}),
    ("technique=T0855", {"technique": "T0855"}),
    ("asset", {"asset": "10.20.3.75"}),
    ("ip (source or destination)", {"ip": "10.9.1.7"}),
    ("time range (one day)", {"start": "2026-01-10T00:00:00Z", "end": "2026-01-11T00:00:00Z"}),
    ("severity=critical, sort by severity", {"severity": "critical", "sort": "-severity"}),
    ("text search q=\"rule 42\"", {"q": "rule 42"}),
    ("severity=high & protocol=modbus, page 3", {"severity": "high", "protocol": "modbus", "_page": 3}),
]


def run(args: argparse.Namespace) -> dict[str, Any]:
    import httpx

    from api.enterprise.auth import issue_token
    from api.enterprise.state import StateStore

    d = Path(tempfile.mkdtemp(prefix="icswatch-api-bench-"))
    db = d / "alerts.db"
    print(f"writing {args.alerts:,} alerts into {db} ...", file=sys.stderr)
    fill_s = fill(db, args.alerts)
    st = StateStore(d / "state.db")
    token = issue_token(st, "bench", "viewer")[1]
    st.close()
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-m", "icswatch.commands.serve", "serve", "--db", str(db), "--state-db", str(d / "state.db"),
         "--upload-dir", str(d / "uploads"), "--port", str(port), "--log-level", "warning",
         "--set", "api.rate_limit=0"],
        env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    results = []
    try:
        end = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/api/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > end:
                raise SystemExit("the server did not start")
            time.sleep(0.1)
        # the server adds its read indexes in the background at start (api/enterprise/indexes.py): wait for them
        import sqlite3

        from api.enterprise.indexes import READ_INDEXES

        while True:
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            have = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
            stats = con.execute("SELECT name FROM sqlite_master WHERE name = 'sqlite_stat1'").fetchone()
            con.close()
            if {n for n, _ in READ_INDEXES} <= have and stats:
                break
            if time.monotonic() > end + 120:
                raise SystemExit("the read indexes were not created")
            time.sleep(0.2)
        time.sleep(1.0)
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
            for name, params in SHAPES:
                params = dict(params)
                pages = params.pop("_page", 1)
                cursor = None
                for _ in range(pages - 1):
                    cursor = c.get("/api/v1/alerts", params={**params, "limit": 50, **({"cursor": cursor} if cursor else {})}).json()["next_cursor"]
                q = {**params, "limit": 50, **({"cursor": cursor} if cursor else {})}
                r = c.get("/api/v1/alerts", params=q)  # warm-up
                assert r.status_code == 200, r.text
                total = r.json()["total"]
                times = []
                for _ in range(args.repeat):
                    t = time.perf_counter()
                    r = c.get("/api/v1/alerts", params=q)
                    r.content  # noqa: B018 - to the last byte
                    times.append((time.perf_counter() - t) * 1000)
                    assert r.status_code == 200
                times.sort()
                results.append({
                    "shape": name, "params": q, "matching": total, "items": len(r.json()["items"]),
                    "median_ms": round(statistics.median(times), 1), "p95_ms": round(times[int(len(times) * 0.95) - 1], 1),
                    "max_ms": round(times[-1], 1),
                })
    finally:
        proc.terminate()
        proc.wait(15)
        if not args.keep:
            import shutil

            shutil.rmtree(d, ignore_errors=True)
    return {"alerts": args.alerts, "fill_seconds": round(fill_s, 1), "repeat": args.repeat, "target_ms": TARGET_MS,
            "cpus": os.cpu_count(), "results": results}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--alerts", type=int, default=100_000)
    p.add_argument("--repeat", type=int, default=30, help="timed requests per filter shape")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    p.add_argument("--check", action="store_true", help=f"exit 1 when a filtered page's median is over {TARGET_MS:g} ms")
    p.add_argument("--keep", action="store_true", help="keep the temporary store")
    args = p.parse_args()
    out = run(args)
    print(f"GET /api/v1/alerts over {out['alerts']:,} stored alerts (pages of 50; {out['repeat']} timed requests each; "
          f"client-side over loopback; store filled in {out['fill_seconds']} s)")
    print(f"{'filter':42} {'matching':>9} {'median ms':>10} {'p95 ms':>8} {'max ms':>8}")
    worst = 0.0
    for r in out["results"]:
        print(f"{r['shape']:42} {r['matching']:>9,} {r['median_ms']:>10.1f} {r['p95_ms']:>8.1f} {r['max_ms']:>8.1f}")
        worst = max(worst, r["median_ms"])
    print(f"slowest median {worst:.1f} ms (target < {TARGET_MS:g} ms): {'ok' if worst < TARGET_MS else 'MISSED'}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1), encoding="utf-8")
    return 1 if args.check and worst >= TARGET_MS else 0


if __name__ == "__main__":
    sys.exit(main())
