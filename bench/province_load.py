"""Sustained signed incident intake against the provincial platform, on loopback, SQLite or Elasticsearch.

    python bench/province_load.py                                   # SQLite store, 16 connections, 20 s
    python bench/province_load.py --store es                        # ES store on a local noida-db
    python bench/province_load.py --store es --es-url http://127.0.0.1:9200    # a real cluster
    python bench/province_load.py --clients 32 --client-procs 2 --seconds 30 --json bench/out/province-load.json
    python bench/province_load.py --synchronous FULL                # a flush per commit (power-cut safe)
    python bench/province_load.py --profile bench/out/province.prof # the platform under cProfile (CPU time)
    python bench/province_load.py --repo /tmp/old-checkout          # the platform from other code (before/after)
    python bench/province_load.py --check                           # exit 1 below 1,000 reports/s or p99 >= 100 ms

The platform runs as ``icswatch province serve`` runs it (uvicorn with uvloop + httptools, ``--workers``
processes) with ``--enterprises`` registered enterprises, each with its own key, on a database in the
state of a platform that has been taking reports for a while (``--prefill-nonces`` in the replay
cache, leaving the window during the run, ``--prefill-incidents`` already stored). The load comes
from ``--client-procs`` processes holding ``--clients`` keep-alive HTTP/1.1 connections in all, each
sending one request at a time (closed loop: a client sends its next report when the last one is
answered). The clients are lean on purpose (asyncio protocols on uvloop, a report made from a template)
because they share the machine's cores with the platform; their CPU is measured and printed too.

Every request is a new incident report, signed as a sensor signs it (its own timestamp, nonce, body
digest and HMAC), and the platform does all of its work for each: rate limit, signature check, replay
cache, schema validation, deadline, the incident and its aggregate rows, the receipt, the audit entry.
The bench sets the rate limit far above what it sends (``--rate-limit``), so it is on the path but never
refuses; a 429 would count as an error.

Printed: reports/s (201 answers inside the measured window, after ``--warmup``), latency p50/p90/p99/max
from a client's send to the last byte of the answer, errors, the CPU of the platform, of the clients
(and of the Elasticsearch server with ``--store es``) per report and in cores, the rest of the machine's
load during the window (other jobs on a shared machine), and a check that every acknowledged report is
stored. Traffic stays on 127.0.0.1; everything stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import resource
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from alerts.forwarder import signed_headers  # noqa: E402

TARGET_RPS = 1000
TARGET_P99_MS = 100.0
PATH = "/api/v1/incidents"
ES_PREFIX = "icswatch-province-bench"


# -- the platform's registry -------------------------------------------------------------------------


def setup(db: Path, enterprises: int) -> tuple[str, list[tuple[str, str]]]:
    """A fresh registry (enterprises and keys) in ``db``; (master key, [(key id, secret)])."""
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
        svc.add_enterprise(
            EnterpriseIn(
                id=f"e{i:04d}",
                name=f"企业{i}",
                uscc=body17 + check_char(body17),
                city=cities[i % len(cities)],
                industry=industries[i % len(industries)],
                security_class=1 + i % 3,
                cii=i % 4 == 0,
            )
        )
        keys.append(auth.issue_credential(store, box, f"e{i:04d}"))
    store.close()
    return base64.urlsafe_b64encode(master).decode(), keys


def prefill(db: Path, es_url: str | None, keys: list[tuple[str, str]], nonces: int, incidents: int) -> None:
    """The state of a platform that has been taking reports for a while, so the run does not measure an
    empty database: ``nonces`` in the replay cache, their timestamps spread over the last window (they
    leave it during the run and the platform prunes them), and ``incidents`` already reported."""
    import sqlite3

    from api.province.auth import Principal
    from api.province.service import ProvinceService
    from api.province.settings import ProvinceSettings
    from api.province.store import IntakeItem
    from api.province.stores import open_store

    settings = ProvinceSettings(db=str(db))
    now = time.time()
    window = settings.clock_skew
    with sqlite3.connect(db) as c:
        c.executemany(
            "INSERT INTO nonces VALUES (?, ?, ?)",
            (
                (keys[i % len(keys)][0], secrets.token_urlsafe(18), now - window + window * i / max(1, nonces))
                for i in range(nonces)
            ),
        )
    if not incidents:
        return
    if es_url:
        settings = ProvinceSettings(db=str(db), store="es", es_urls=[es_url], es_index_prefix=ES_PREFIX)
    store = open_store(settings)
    try:
        svc = ProvinceService(store, settings)
        principals = []
        for key_id, _ in keys:
            found = store.credential_and_enterprise(key_id)
            assert found is not None and found[1] is not None
            principals.append(Principal("enterprise", key_id, "enterprise", found[1].id, found[1]))
        for b in range(0, incidents, 500):
            items = []
            for n in range(b, min(incidents, b + 500)):
                rec = svc.prepare_intake(principals[n % len(principals)], report(n, "prefill"))
                items.append(IntakeItem("prefill", f"prefill-{n:012d}", now - window - 10, rec))
            store.intake_batch(items, now, window)
    finally:
        store.close()


# -- the reports ---------------------------------------------------------------------------------------

ID_MARK = "@@INCIDENT@@"
TIME_MARK = "@@NOW@@"


def report_doc(n: int) -> dict[str, Any]:
    """A realistic report (about 1 KB), varied over level, asset type and protocol."""
    return {
        "schema_version": "1",
        "incident_id": ID_MARK,
        "title": "Unauthorised Modbus writes",
        "level": 1 + n % 4,
        "level_criteria": "high alert, reached Impair Process Control",
        "discovered_at": TIME_MARK,
        "occurred_at": TIME_MARK,
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


# Twelve variants (lcm of 4 levels, 3 asset types, 4 protocols), serialised once: a report is then two
# substitutions instead of a json.dumps, which keeps the clients' CPU for sending.
TEMPLATES = [json.dumps(report_doc(n), separators=(",", ":"), ensure_ascii=False) for n in range(12)]


def report(n: int, tag: str) -> bytes:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return TEMPLATES[n % 12].replace(ID_MARK, f"bench-{tag}-{n:09d}").replace(TIME_MARK, now).encode()


# -- the clients ---------------------------------------------------------------------------------------


class Connection(asyncio.Protocol):
    """One keep-alive connection sending signed reports one after another (closed loop)."""

    def __init__(self, run: ClientRun, idx: int) -> None:
        self.run = run
        self.idx = idx
        self.n = 0
        self.buf = b""
        self.need = -1  # bytes of the answer still expected once its head is parsed
        self.status = 0
        self.t0 = 0.0
        self.sent_at = 0.0
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.send()

    def send(self) -> None:
        run = self.run
        if time.time() >= run.stop:
            assert self.transport is not None
            self.transport.close()
            return
        self.n += 1
        key = run.keys[(self.idx * 7919 + self.n) % len(run.keys)]
        body = report(self.n, f"{run.tag}-{self.idx}")
        h = signed_headers(key[0], key[1], "POST", PATH, "", body)
        head = "".join(f"{k}: {v}\r\n" for k, v in h.items())
        req = (
            f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{head}\r\n"
        ).encode() + body
        self.sent_at = time.time()
        self.t0 = time.perf_counter()
        assert self.transport is not None
        self.transport.write(req)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            if self.need < 0:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = self.buf[:end].split(b"\r\n")
                self.status = int(head[0].split()[1])
                length = 0
                for line in head[1:]:
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                self.buf = self.buf[end + 4 :]
                self.need = length
            if len(self.buf) < self.need:
                return
            self.buf = self.buf[self.need :]
            self.need = -1
            self.run.answered(self.sent_at, time.perf_counter() - self.t0, self.status)
            self.send()

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None or time.time() < self.run.stop:
            self.run.errors["connection_lost"] = self.run.errors.get("connection_lost", 0) + 1
        if not self.closed.done():
            self.closed.set_result(None)


class ClientRun:
    def __init__(self, keys: list[tuple[str, str]], warm: float, stop: float, tag: str) -> None:
        self.keys = keys
        self.warm = warm
        self.stop = stop
        self.tag = tag
        self.latencies: list[float] = []
        self.status: dict[int, int] = {}  # inside the window
        self.accepted_total = 0  # every 201, warm-up included (what must be stored)
        self.errors: dict[str, int] = {}

    def answered(self, sent_at: float, latency: float, status: int) -> None:
        if status == 201:
            self.accepted_total += 1
        if self.warm <= sent_at < self.stop:
            self.latencies.append(latency)
            self.status[status] = self.status.get(status, 0) + 1


async def _client_main(port: int, run: ClientRun, connections: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    conns = []
    for i in range(connections):
        _, proto = await loop.create_connection(lambda i=i: Connection(run, i), "127.0.0.1", port)
        conns.append(proto)
    await asyncio.sleep(max(0.0, run.warm - time.time()))
    cpu0 = _own_cpu()
    await asyncio.sleep(max(0.0, run.stop - time.time()))
    cpu = _own_cpu() - cpu0
    await asyncio.wait([c.closed for c in conns], timeout=30)
    return {
        "latencies_ms": [round(x * 1000, 3) for x in run.latencies],
        "status": run.status,
        "accepted_total": run.accepted_total,
        "errors": run.errors,
        "cpu_s": cpu,
    }


def _own_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def client_process(spec: dict[str, Any]) -> int:
    """One client process (``--client SPEC.json``): the results as JSON on stdout."""
    run = ClientRun([tuple(k) for k in spec["keys"]], spec["warm"], spec["stop"], spec["tag"])  # type: ignore[misc]
    main = _client_main(spec["port"], run, spec["connections"])
    try:
        import uvloop
    except ImportError:  # uvicorn[standard] brings it; without it, asyncio's loop (more client CPU)
        result = asyncio.run(main)
    else:
        result = uvloop.run(main)
    json.dump(result, sys.stdout)
    return 0


# -- measuring -------------------------------------------------------------------------------------------


def proc_cpu(pid: int) -> float:
    """utime + stime of a process and of its children still running (Linux /proc), in seconds."""
    total = 0.0
    tck = os.sysconf("SC_CLK_TCK")
    pids = [pid]
    try:
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            pids.append(int(child))
    except OSError:
        pass
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tck
        except (OSError, IndexError, ValueError):
            pass
    return total


def machine_cpu() -> float:
    """CPU seconds the whole machine spent (every core, user + system + irq), from /proc/stat."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
        return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_up(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    import httpx

    for _ in range(300):
        if proc.poll() is not None:
            raise RuntimeError(f"the platform exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=0.5).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("the platform did not come up")


def percentile(sorted_ms: list[float], p: float) -> float:
    return round(sorted_ms[min(len(sorted_ms) - 1, int(p * len(sorted_ms)))], 2) if sorted_ms else 0.0


# -- the profiled platform -------------------------------------------------------------------------------


def serve_profiled(out: str, serve_args: list[str]) -> int:
    """``icswatch province serve`` under cProfile, every thread, in CPU time (thread_time: a thread
    waiting for the GIL or a lock costs nothing here, unlike wall-clock profiles)."""
    import cProfile
    import pstats
    import threading

    profiles: list[cProfile.Profile] = []

    def per_thread(frame: Any, event: str, arg: Any) -> None:
        sys.setprofile(None)
        p = cProfile.Profile(time.thread_time)
        profiles.append(p)
        p.enable()

    threading.setprofile(per_thread)
    # uvicorn re-raises the SIGTERM it caught once it has shut down, with the handler it found: make that
    # one harmless, so the profile below is written.
    signal.signal(signal.SIGTERM, lambda *_: None)
    from icswatch.commands import province

    main = cProfile.Profile(time.thread_time)
    main.enable()
    try:
        province.main(["serve", *serve_args])
    finally:
        main.disable()
        stats = pstats.Stats(main)
        for p in profiles:
            stats.add(p)
        stats.dump_stats(out)
    return 0


# -- the run ---------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="province-load-") as tmp_name:
        tmp = Path(tmp_name)
        db = tmp / "province.db"
        master, keys = setup(db, args.enterprises)
        port = free_port()
        env = dict(
            os.environ,
            PYTHONPATH=str(REPO),
            ICSWATCH_PROVINCE_MASTER_KEY=master,
            ICSWATCH_PROVINCE_SYNCHRONOUS=args.synchronous,
            # On the path, never refusing: every report must be accepted for the figures to mean anything.
            ICSWATCH_PROVINCE_RATE_LIMIT=str(args.rate_limit),
            ICSWATCH_PROVINCE_RATE_BURST=str(max(1000, int(args.rate_limit))),
        )
        serve_args = ["--port", str(port), "--db", str(db)]
        if args.store != "sqlite":
            serve_args += ["--store", args.store]
        if args.workers > 1:
            serve_args += ["--workers", str(args.workers)]
        es_server = None
        es_pid = None
        es_url = args.es_url or os.environ.get("ICSWATCH_ES_URL")
        if args.store == "es":
            if not es_url:
                sys.path.insert(0, str(REPO / "tests"))
                from es_testutil import start_noida  # the tests' server, started the same way

                es_server = start_noida(tmp / "noida")
                es_url = es_server.url
                try:
                    es_pid = int(json.loads((tmp / "noida" / "noida.control.json").read_text())["pid"])
                except (OSError, ValueError, KeyError):
                    es_pid = None
            serve_args += ["--es-url", es_url]
            env["ICSWATCH_PROVINCE_ES_INDEX_PREFIX"] = ES_PREFIX
        prefill(db, es_url if args.store == "es" else None, keys, args.prefill_nonces, args.prefill_incidents)
        platform = Path(args.repo).resolve() if args.repo else REPO
        env["PYTHONPATH"] = str(platform)
        if args.profile:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--serve-profiled", args.profile, "--", *serve_args]
        else:
            cmd = [sys.executable, "-m", "icswatch.commands.province", "serve", *serve_args]
        log = tmp / "serve.log"
        with open(log, "wb") as fh:
            proc = subprocess.Popen(cmd, env=env, cwd=platform, stdout=fh, stderr=subprocess.STDOUT)
        try:
            wait_up(port, proc, log)
            start = time.time() + 1.0  # the clients connect first
            warm = start + args.warmup
            stop = warm + args.seconds
            per = [
                args.clients // args.client_procs + (1 if i < args.clients % args.client_procs else 0)
                for i in range(args.client_procs)
            ]
            clients = []
            for i, n in enumerate(per):
                spec = {"port": port, "keys": keys, "warm": warm, "stop": stop, "tag": f"{i}", "connections": n}
                spec_file = tmp / f"client-{i}.json"
                spec_file.write_text(json.dumps(spec))
                c = subprocess.Popen(
                    [sys.executable, str(Path(__file__).resolve()), "--client", str(spec_file)],
                    stdout=subprocess.PIPE,
                    env=dict(os.environ, PYTHONPATH=str(REPO)),
                )
                clients.append(c)
            time.sleep(max(0.0, warm - time.time()))
            load0 = os.getloadavg()
            server0, es0, machine0 = proc_cpu(proc.pid), (proc_cpu(es_pid) if es_pid else 0.0), machine_cpu()
            time.sleep(max(0.0, stop - time.time()))
            server_cpu = proc_cpu(proc.pid) - server0
            es_cpu = (proc_cpu(es_pid) - es0) if es_pid else 0.0
            machine = machine_cpu() - machine0
            load1 = os.getloadavg()
            outs = []
            for c in clients:
                out, _ = c.communicate(timeout=120)
                outs.append(json.loads(out))
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        stored, audited = count_stored(args.store, db, es_url)
        if es_server is not None:
            es_server.stop()
        if args.profile:
            print_profile(args.profile)

    lat = sorted(x for o in outs for x in o["latencies_ms"])
    status: dict[str, int] = {}
    errors: dict[str, int] = {}
    for o in outs:
        for k, v in o["status"].items():
            status[k] = status.get(k, 0) + v
        for k, v in o["errors"].items():
            errors[k] = errors.get(k, 0) + v
    accepted = status.get("201", 0)
    accepted_total = sum(o["accepted_total"] for o in outs)
    client_cpu = sum(o["cpu_s"] for o in outs)
    secs = args.seconds
    ours = server_cpu + client_cpu + es_cpu
    result: dict[str, Any] = {
        "store": args.store,
        "synchronous": args.synchronous,
        "es": ("noida-db on this machine" if es_server else es_url) if args.store == "es" else None,
        "workers": args.workers,
        "platform_code": str(Path(args.repo).resolve()) if args.repo else "this checkout",
        "clients": args.clients,
        "client_procs": args.client_procs,
        "enterprises": args.enterprises,
        "prefilled": {"nonces": args.prefill_nonces, "incidents": args.prefill_incidents},
        "seconds": secs,
        "requests": len(lat),
        "accepted": accepted,
        "status": status,
        "errors": sum(v for k, v in status.items() if k != "201") + sum(errors.values()),
        "error_kinds": errors,
        "reports_per_s": round(accepted / secs, 1),
        "p50_ms": percentile(lat, 0.50),
        "p90_ms": percentile(lat, 0.90),
        "p99_ms": percentile(lat, 0.99),
        "max_ms": round(lat[-1], 2) if lat else 0.0,
        "server_cpu_cores": round(server_cpu / secs, 2),
        "server_cpu_ms_per_report": round(server_cpu * 1000 / max(1, accepted), 3),
        "client_cpu_cores": round(client_cpu / secs, 2),
        "client_cpu_ms_per_report": round(client_cpu * 1000 / max(1, accepted), 3),
        "es_cpu_cores": round(es_cpu / secs, 2) if es_pid else None,
        "es_cpu_ms_per_report": round(es_cpu * 1000 / max(1, accepted), 3) if es_pid else None,
        "other_load_cores": round(max(0.0, machine - ours) / secs, 2),
        "machine_cores": len(os.sched_getaffinity(0)),
        "loadavg_before_after": [round(load0[0], 2), round(load1[0], 2)],
        "acknowledged": accepted_total,
        "stored_incidents": stored,
        "audit_entries": audited,
        "profiled": bool(args.profile),
    }
    result["all_acknowledged_stored"] = stored == accepted_total + args.prefill_incidents
    result["target"] = {"reports_per_s": TARGET_RPS, "p99_ms": TARGET_P99_MS}
    result["met"] = result["reports_per_s"] >= TARGET_RPS and result["p99_ms"] < TARGET_P99_MS
    return result


def count_stored(store: str, db: Path, es_url: str | None) -> tuple[int, int]:
    """(incidents, audit entries) in the platform's store after the run."""
    if store == "sqlite":
        import sqlite3

        with sqlite3.connect(db) as c:
            return (
                int(c.execute("SELECT COUNT(*) FROM incidents").fetchone()[0]),
                int(c.execute("SELECT COUNT(*) FROM audit").fetchone()[0]),
            )
    from alerts.es_sink import EsSettings, connect, make_client

    es, _ = connect(make_client(EsSettings(urls=[es_url or ""])))
    try:
        es.indices.refresh(index=f"{ES_PREFIX}-*")
        incidents = int(es.count(index=f"{ES_PREFIX}-incidents")["count"])
        audit = int(es.count(index=f"{ES_PREFIX}-audit")["count"])
        for name in list(es.indices.get(index=f"{ES_PREFIX}-*", allow_no_indices=True) or {}):
            es.indices.delete(index=name, ignore_unavailable=True)
        return incidents, audit
    finally:
        es.close()


def print_profile(path: str, top: int = 35) -> None:
    import pstats

    print(f"\nplatform profile (CPU time, all threads; cProfile slows Python code down): {path}", file=sys.stderr)
    stats = pstats.Stats(path, stream=sys.stderr)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)


def summary(r: dict[str, Any]) -> str:
    es = f", ES server {r['es_cpu_ms_per_report']} ms/report ({r['es_cpu_cores']} cores)" if r["es_cpu_cores"] else ""
    return (
        f"province intake ({r['store']}, synchronous={r['synchronous']}, {r['workers']} worker(s)): "
        f"{r['clients']} connections in "
        f"{r['client_procs']} client process(es), {r['seconds']:.0f} s: {r['reports_per_s']:,.0f} reports/s, "
        f"p50 {r['p50_ms']} ms, p90 {r['p90_ms']} ms, p99 {r['p99_ms']} ms, max {r['max_ms']} ms; "
        f"errors {r['errors']} (status {r['status']}); "
        f"CPU per report: platform {r['server_cpu_ms_per_report']} ms ({r['server_cpu_cores']} cores), "
        f"clients {r['client_cpu_ms_per_report']} ms ({r['client_cpu_cores']} cores){es}; "
        f"other load on the machine {r['other_load_cores']} of {r['machine_cores']} cores "
        f"(loadavg {r['loadavg_before_after'][0]} -> {r['loadavg_before_after'][1]}); "
        f"acknowledged {r['acknowledged']}, stored {r['stored_incidents'] - r['prefilled']['incidents']} of them, "
        f"audited {r['audit_entries']}; "
        f"target met: {r['met']}"
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--client"]:
        return client_process(json.loads(Path(argv[1]).read_text()))
    if argv[:1] == ["--serve-profiled"]:
        return serve_profiled(argv[1], argv[3:] if argv[2:3] == ["--"] else argv[2:])
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--store", choices=("sqlite", "es"), default="sqlite")
    ap.add_argument("--es-url", help="Elasticsearch for --store es (default: ICSWATCH_ES_URL, else a local noida-db)")
    ap.add_argument("--clients", type=int, default=16, help="keep-alive connections in all (default 16)")
    ap.add_argument("--client-procs", type=int, default=1, help="client processes sharing them (default 1)")
    ap.add_argument("--seconds", type=float, default=20.0, help="measured window (default 20)")
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--enterprises", type=int, default=50)
    ap.add_argument(
        "--prefill-nonces",
        type=int,
        default=300_000,
        help="nonces in the replay cache at the start (default 300,000: 1,000 reports/s over the 300 s window)",
    )
    ap.add_argument(
        "--prefill-incidents", type=int, default=20_000, help="incidents already stored at the start (default 20,000)"
    )
    ap.add_argument("--synchronous", choices=("NORMAL", "FULL"), default="NORMAL", help="the SQLite store's mode")
    ap.add_argument("--workers", type=int, default=1, help="the platform's worker processes (serve --workers)")
    ap.add_argument(
        "--repo",
        help="run the platform from another checkout of icswatch (a before/after comparison in the same conditions)",
    )
    ap.add_argument("--rate-limit", type=float, default=100_000.0, help="the platform's per-key limit (req/s)")
    ap.add_argument("--profile", metavar="FILE", help="run the platform under cProfile and print where its CPU goes")
    ap.add_argument("--json", help="write the figures as JSON")
    ap.add_argument("--check", action="store_true", help="exit 1 below 1,000 reports/s or at p99 >= 100 ms")
    args = ap.parse_args(argv)
    if args.clients < 1 or not 1 <= args.client_procs <= args.clients:
        ap.error("need --clients >= --client-procs >= 1")
    result = run(args)
    print(summary(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1, ensure_ascii=False), encoding="utf-8")
    if not result["all_acknowledged_stored"]:
        print("province_load: some acknowledged reports are not in the store", file=sys.stderr)
        return 1
    return 1 if args.check and not result["met"] else 0


if __name__ == "__main__":
    sys.exit(main())
