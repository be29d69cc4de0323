"""Soak test: one sensor process replaying a capture mix in a loop, with every detector and output on.

    python bench/soak.py --duration 3600                 # the one-hour run (make soak SOAK_SECONDS=3600)
    python bench/soak.py --duration 25 --interval 2      # a quick look (tests/test_soak_smoke.py does this)
    python bench/soak.py --duration 900 --tracemalloc --census   # + where Python memory grew after the warm-up
    python bench/soak.py --table                         # the RSS-over-time table of docs/soak.md

What lives for the whole run, in this process: one ``sensor.pipeline.Pipeline`` fed the mix again and
again; the alerting runtime that ``icswatch replay`` builds (``alerts.runtime.build_alerting``) with the
default rules, a learned baseline (``icswatch learn`` on plant_normal_1/2), an ML model (``icswatch
train`` on ml_normal), incident grouping; the SQLite alert store and the asset inventory (saved every
sample), EVE and ECS JSON Lines files, the Elasticsearch sink (alerts, incidents, one ICS event in 100;
not the alert context, see write_config) to a real noida-db server on 127.0.0.1, and the linkage outbox
with its forwarder thread
reporting incidents to a real ``icswatch province serve`` on 127.0.0.1 (a registry with keys made the
way tests/province_testutil.py makes them).

Each pass replays every capture of the mix once, file by file (a fresh flow table per file, as
``icswatch replay`` does), with timestamps shifted forward by the span of one pass times the pass
number: to the detectors it is one continuing stream of traffic, never a clock that jumps back.

Every ``--interval`` seconds (between two files) a sample goes to ``OUT/samples.jsonl`` and
``OUT/samples.csv``: RSS (VmRSS), open fds, threads, CPU time, packets, events, alerts, incidents,
packets/s, Elasticsearch and outbox state, the pipeline counters, and the RSS of the two servers. Each
completed pass goes to ``OUT/passes.jsonl``. At the end ``OUT/summary.json`` holds RSS at start (the
first sample after the warm-up) and end, the slope (least-squares fit, MB per hour), the maximum,
the RSS after ``malloc_trim`` at the end (freed heap handed back: what is left is in use), fds and
threads at start and end, throughput, and the consistency checks:

- every complete pass read the same packets and produced the same events and counters;
- alerts in SQLite == alerts produced == lines in the EVE and ECS files == alert documents in ES plus
  those still in the sink's spool;
- incidents in SQLite == incidents opened == incidents the outbox saw == the summary's count; those in ES
  (with the spool's, as for alerts);
- reports the province holds == reports the outbox delivered; updates likewise; outbox empty at the
  end, nothing failed; the ES spool empty, nothing rejected; no output error.

Exit status: 0 when every check passes; 1 when one fails (memory grew beyond ``--max-growth-mb`` or,
over at least 10 minutes after the warm-up, the slope beyond ``--max-slope``; fds grew by more than
``--fd-slack``; threads grew; a consistency check failed); 2 when the set-up failed.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import gc
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PCAPS = REPO / "pcaps"
sys.path.insert(0, str(REPO))
sys.path.insert(1, str(REPO / "tests"))  # the tests' server helpers: the same servers, set up the same way

# The mix: normal and attack traffic of every crafted protocol, the ML scenarios the model flags, every
# rule's trigger capture (many small files: the reader is opened and closed ~80 times per pass), and a
# slice of bench/gen_modbus.py's plant for volume.
MIX_FILES = (
    "plant_normal_1.pcap",
    "plant_attack.pcap",
    "modbus_normal.pcap",
    "dnp3_normal.pcap",
    "dnp3_attack.pcap",
    "s7comm_normal.pcap",
    "s7comm_attack.pcap",
    "iec104_normal.pcap",
    "iec104_attack.pcap",
    "enip_normal.pcap",
    "enip_attack.pcap",
    "bacnet_normal.pcap",
    "bacnet_attack.pcap",
    "opcua_normal.pcap",
    "opcua_attack.pcap",
    "ml_flood.pcap",
    "ml_rogue_writes.pcap",
)
GAP = 1.0  # seconds of capture time between two files of the mix
MB = 1024 * 1024


# -- process figures ---------------------------------------------------------------------------------


def status_field(pid: int | str, name: str) -> int:
    """A number from /proc/PID/status (VmRSS in kB, Threads); 0 when the process is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(name + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def num(value: Any) -> str:
    """A count with thousands separators, or the reason it could not be counted."""
    return f"{value:,}" if isinstance(value, int) else str(value)


def linear_slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs (0 with fewer than two points)."""
    n = len(xs)
    if n < 2:
        return 0.0
    mx = sum(xs) / n
    my = sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx


# -- the capture mix -----------------------------------------------------------------------------------


@dataclass
class MixFile:
    path: Path
    packets: int
    first_ts: float
    last_ts: float  # the latest timestamp in the file
    shift0: float = 0.0  # shift of this file in pass 0


def scan(path: Path) -> MixFile:
    from sensor.capture import CaptureReader

    reader = CaptureReader(path)
    n = 0
    first = last = None
    try:
        for ts, _lt, _data, _orig in reader:
            n += 1
            if first is None:
                first = last = ts
            elif ts > last:  # type: ignore[operator]
                last = ts
    finally:
        reader.close()
    if first is None:
        raise ValueError(f"{path}: no packets")
    return MixFile(path, n, float(first), float(last))  # type: ignore[arg-type]


def lay_out(files: list[MixFile]) -> float:
    """Place the files one after the other in capture time (GAP apart); return one pass's span."""
    start = files[0].first_ts
    cursor = start - GAP
    for f in files:
        f.shift0 = (cursor + GAP) - f.first_ts
        cursor = f.last_ts + f.shift0
    return cursor - start + GAP


def shifted(reader: Any, shift: float) -> Iterator[tuple[float, int, bytes, int]]:
    for ts, linktype, data, orig_len in reader:
        yield ts + shift, linktype, data, orig_len


# -- the servers -----------------------------------------------------------------------------------------


class Servers:
    """noida-db (or an external cluster) and a province platform with one enterprise, both on 127.0.0.1."""

    def __init__(self, work: Path, es_url: str | None) -> None:
        from es_testutil import EsServer, start_noida
        from province_testutil import ProvinceServer, make_platform

        self.es: Any
        self.noida_pid: int | None = None
        if es_url:
            self.es = EsServer(es_url.rstrip("/"))
            self.es.wait_up()
        else:
            self.es = start_noida(work / "noida")
            try:
                self.noida_pid = int(json.loads((work / "noida" / "noida.control.json").read_text())["pid"])
            except (OSError, ValueError, KeyError):
                self.noida_pid = None
        self.platform = make_platform(work / "province.db")
        self.province = ProvinceServer(work / "province.db", self.platform.master_key)
        try:
            self.province.start()
        except Exception:
            self.province.stop()
            if not self.es.external:
                self.es.stop()
            raise
        self.key_id, self.secret = self.platform.keys["acme"]

    def child_rss_mb(self) -> dict[str, float]:
        out = {}
        if self.noida_pid:
            out["noida_rss_mb"] = round(status_field(self.noida_pid, "VmRSS") / 1024, 1)
        if self.province.proc is not None:
            out["province_rss_mb"] = round(status_field(self.province.proc.pid, "VmRSS") / 1024, 1)
        return out

    def stop(self) -> None:
        self.province.stop()
        if not self.es.external:
            self.es.stop()


# -- set-up of the sensor ------------------------------------------------------------------------------------


def run_cli(*args: str) -> None:
    """An ``icswatch`` command, the way an operator runs it (learn, train)."""
    cmd = [sys.executable, "-m", "icswatch", *args]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:2])} failed ({r.returncode}): {r.stderr[-1500:]}")


def write_config(work: Path, servers: Servers, prefix: str) -> Path:
    """The sensor's configuration: everything on. Written as a file so the run can be repeated by hand."""
    import yaml

    cfg = {
        "sensor": {"name": "soak-sensor", "enterprise_id": "acme", "site": "Plant 1"},
        "outputs": {
            "sqlite": str(work / "alerts.db"),
            "eve": str(work / "eve.jsonl"),
            "alerts_out": str(work / "alerts-ecs.jsonl"),
        },
        "elasticsearch": {
            "urls": [servers.es.url],
            "index_prefix": prefix,
            "spool": str(work / "es-spool.db"),
            # Alert context documents (up to six per alert) are left out: with them the soak mix sends ~200
            # documents/s and noida-db (the test server, one process on the same two shared cores) fell
            # behind, timed out and the sink spooled (as designed); the soak is about the sensor.
            "context": False,
            "events": "sampled",
            "events_sample": 100,
            "replicas": 0,
        },
        "linkage": {
            "enabled": True,
            "url": servers.province.url,
            "key_id": servers.key_id,
            "outbox": str(work / "outbox.db"),
            "poll_seconds": 0.5,
            "retry_base": 0.2,
            "retry_max": 5.0,
        },
    }
    path = work / "soak-config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


@dataclass
class Sensor:
    """The long-lived objects of one sensor process."""

    config: Any
    pipeline: Any
    runtime: Any
    inventory: Any
    forwarder: Any
    forwarder_outbox: Any
    es_sink: Any

    def save_assets(self) -> None:
        from alerts.asset_store import AssetStore

        store = AssetStore(self.config.outputs.sqlite)
        try:
            store.save(self.inventory)
        finally:
            store.close()


def build_sensor(config_path: Path, baseline: Path, model: Path, secret: str) -> Sensor:
    from alerts.es_sink import event_tap
    from alerts.forwarder import Forwarder
    from alerts.outbox import Outbox
    from alerts.runtime import build_alerting
    from detectors.baseline import BaselineDetector
    from detectors.ml.detector import MlDetector
    from icswatch.cli import tune_gc_for_packets
    from icswatch.config import load_config
    from sensor.assets import AssetInventory
    from sensor.pipeline import Pipeline

    cfg = load_config(config_path)
    os.environ[cfg.linkage.secret_env] = secret  # where the forwarder reads it (never from the YAML file)
    detectors = [BaselineDetector.from_file(str(baseline)), MlDetector.from_file(str(model))]
    runtime = build_alerting(cfg, detectors)
    inventory = AssetInventory()
    runtime.attach_inventory(inventory)  # wired as `icswatch replay` wires them
    tap = event_tap(runtime)
    if tap is not None:
        runtime.tap(tap)
    pipeline = Pipeline(cfg.sensor, on_event=runtime.on_event, on_tick=runtime.on_tick)
    tune_gc_for_packets()  # as the CLI does for every packet command
    # The delivery worker has its own connection to the outbox file, as `icswatch linkage send` or the
    # enterprise API would; it polls every linkage.poll_seconds.
    box = Outbox(cfg.linkage.outbox)
    forwarder = Forwarder.from_config(cfg, box)
    forwarder.start()
    es_sink = next((o for o in runtime.outputs if o.name == "elasticsearch"), None)
    return Sensor(cfg, pipeline, runtime, inventory, forwarder, box, es_sink)


# -- the run ---------------------------------------------------------------------------------------------------


@dataclass
class PassTotals:
    packets: int = 0
    events: int = 0
    counters: Counter = field(default_factory=Counter)


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out = Path(args.out)
        self.work = self.out / "work"
        self.stop_requested = False
        self.samples_fh: Any = None
        self.csv_writer: Any = None
        self.csv_fh: Any = None
        self.passes_fh: Any = None
        self.rss_t: list[float] = []  # (seconds, MB) of every sample: the fit
        self.rss_mb: list[float] = []
        self.samples = 0
        self.last_sample: dict[str, Any] = {}
        self.start_sample: dict[str, Any] | None = None
        self.first_pass: PassTotals | None = None
        self.pass_mismatches: list[dict[str, Any]] = []
        self.passes_done = 0
        self.alerts_by_pass: list[int] = []
        self.snapshot0: Any = None
        self.census0: Counter | None = None

    # -- samples -------------------------------------------------------------------------------------------------
    def sample(self, sensor: Sensor, servers: Servers, t0: float, cpu0: float, prev: dict[str, Any]) -> dict[str, Any]:
        now = time.monotonic()
        rt = sensor.runtime
        pipe = sensor.pipeline
        live_packets = pipe.packets + (pipe._file.packets if pipe._file is not None else 0)
        es = sensor.es_sink.stats() if sensor.es_sink is not None else {}
        fwd = sensor.forwarder.stats
        elapsed = now - t0
        cpu = cpu_seconds() - cpu0
        dt = elapsed - prev.get("t", 0.0)
        s: dict[str, Any] = {
            "t": round(elapsed, 2),
            "wall": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "rss_mb": round(status_field("self", "VmRSS") / 1024, 2),
            "fds": open_fds(),
            "threads": status_field("self", "Threads"),
            "cpu_s": round(cpu, 2),
            "passes": self.passes_done,
            "packets": live_packets,
            "events": pipe.events,
            "alerts": rt.summary.total,
            "incidents": rt.grouper.opened,
            "open_incidents": len(rt.grouper.open),
            "pps_wall": round((live_packets - prev.get("packets", 0)) / dt) if dt > 0 else 0,
            "pps_cpu": round((live_packets - prev.get("packets", 0)) / max(cpu - prev.get("cpu_s", 0.0), 1e-6)),
            "load1": round(os.getloadavg()[0], 2),
            "es_sent": es.get("sent", 0),
            "es_queued": es.get("queued", 0),
            "es_spool": es.get("spool_pending", 0),
            "outbox_pending": sensor.forwarder_outbox.pending_count(),
            "forwarded": fwd.sent,
            "output_errors": sum(rt.summary.output_errors.values()),
            **servers.child_rss_mb(),
            "counters": {k: v for k, v in sorted(pipe.counters.items()) if v},
        }
        self.samples_fh.write(json.dumps(s) + "\n")
        self.samples_fh.flush()
        flat = {k: v for k, v in s.items() if k != "counters"}
        if self.csv_writer is None:
            self.csv_writer = csv.DictWriter(self.csv_fh, fieldnames=list(flat), extrasaction="ignore")
            self.csv_writer.writeheader()
        self.csv_writer.writerow(flat)
        self.csv_fh.flush()
        self.rss_t.append(elapsed)
        self.rss_mb.append(s["rss_mb"])
        self.samples += 1
        print(
            f"[soak] t={elapsed:7.0f}s pass={self.passes_done:4d} rss={s['rss_mb']:6.1f}MB fds={s['fds']} "
            f"threads={s['threads']} packets={live_packets:,} alerts={s['alerts']:,} incidents={s['incidents']:,} "
            f"pps={s['pps_wall']:,} load={s['load1']}",
            flush=True,
        )
        return s

    # -- passes ---------------------------------------------------------------------------------------------------
    def finish_pass(self, n: int, totals: PassTotals, alerts: int, seconds: float) -> None:
        rec = {"pass": n, "packets": totals.packets, "events": totals.events, "alerts": alerts,
               "seconds": round(seconds, 3), "counters": dict(sorted(totals.counters.items()))}
        self.passes_fh.write(json.dumps(rec) + "\n")
        self.passes_fh.flush()
        self.passes_done += 1
        self.alerts_by_pass.append(alerts)
        if self.first_pass is None:
            self.first_pass = totals
            return
        ref = self.first_pass
        if (totals.packets, totals.events, totals.counters) != (ref.packets, ref.events, ref.counters):
            diff = {k: (ref.counters.get(k, 0), totals.counters.get(k, 0))
                    for k in set(ref.counters) | set(totals.counters)
                    if ref.counters.get(k, 0) != totals.counters.get(k, 0)}
            if len(self.pass_mismatches) < 20:
                self.pass_mismatches.append({"pass": n, "packets": totals.packets, "events": totals.events,
                                             "counters_differing": diff})

    def run(self) -> int:
        args = self.args
        if self.work.exists():
            shutil.rmtree(self.work)
        self.work.mkdir(parents=True)
        for name in ("samples.jsonl", "samples.csv", "passes.jsonl", "summary.json"):
            (self.out / name).unlink(missing_ok=True)

        print("[soak] set-up: learning a baseline, training a model, starting noida-db and the province", flush=True)
        baseline = self.work / "baseline.yaml"
        model = self.work / "model.joblib"
        run_cli("learn", str(PCAPS / "plant_normal_1.pcap"), str(PCAPS / "plant_normal_2.pcap"), "-o", str(baseline), "-q")
        run_cli("train", str(PCAPS / "ml_normal.pcap"), "-o", str(model), "-q")
        files = [PCAPS / name for name in MIX_FILES]
        files += sorted(PCAPS.glob("rule_*.pcap"))
        if args.modbus_packets:
            gen = self.work / f"modbus-{args.modbus_packets}.pcap"
            subprocess.run([sys.executable, str(HERE / "gen_modbus.py"), "--packets", str(args.modbus_packets),
                            "--flows", "200", "--seed", "7", "-o", str(gen), "-q"], check=True, cwd=REPO)
            files.append(gen)
        mix = [scan(p) for p in files]
        span = lay_out(mix)
        mix_packets = sum(f.packets for f in mix)
        print(f"[soak] mix: {len(mix)} files, {mix_packets:,} packets, {span:,.0f} s of capture time per pass", flush=True)

        servers = Servers(self.work, args.es_url)
        prefix = f"icswatch-soak-{uuid.uuid4().hex[:8]}"
        sensor = None
        try:
            config_path = write_config(self.work, servers, prefix)
            sensor = build_sensor(config_path, baseline, model, servers.secret)
            return self._loop(sensor, servers, mix, span, mix_packets, prefix, config_path)
        finally:
            if sensor is not None:
                sensor.forwarder.close()
                sensor.forwarder_outbox.close()
            if args.es_url:  # an external cluster: leave nothing behind (noida-db's data dir is ours)
                servers.es.cleanup(prefix)
            servers.stop()

    def _loop(self, sensor: Sensor, servers: Servers, mix: list[MixFile], span: float, mix_packets: int,
              prefix: str, config_path: Path) -> int:
        with contextlib.ExitStack() as files:
            self.samples_fh = files.enter_context(open(self.out / "samples.jsonl", "w", encoding="utf-8"))
            self.csv_fh = files.enter_context(open(self.out / "samples.csv", "w", encoding="utf-8", newline=""))
            self.passes_fh = files.enter_context(open(self.out / "passes.jsonl", "w", encoding="utf-8"))
            return self._replay(sensor, servers, mix, span, mix_packets, prefix, config_path)

    def _replay(self, sensor: Sensor, servers: Servers, mix: list[MixFile], span: float, mix_packets: int,
                prefix: str, config_path: Path) -> int:
        from sensor.capture import CaptureReader

        args = self.args
        pipe = sensor.pipeline
        rt = sensor.runtime
        warmup = args.warmup if args.warmup is not None else min(600.0, 0.2 * args.duration)
        t0 = time.monotonic()
        cpu0 = cpu_seconds()
        load_start = os.getloadavg()
        prev = self.sample(sensor, servers, t0, cpu0, {})
        next_sample = t0 + args.interval
        n = 0
        sent = 0
        stopped_mid_pass = False
        while not self.stop_requested:
            totals = PassTotals()
            alerts_before = rt.summary.total
            pass_t0 = time.monotonic()
            for f in mix:
                if self.stop_requested:
                    stopped_mid_pass = True
                    break
                reader = CaptureReader(f.path)
                result = pipe.start(str(f.path))
                try:
                    pipe.run(shifted(reader, f.shift0 + n * span))
                finally:
                    reader.close()
                result.error = reader.error
                for name, count in reader.anomalies.items():
                    result.counters[name] += count
                pipe.end()
                totals.packets += result.packets
                totals.events += result.events
                totals.counters.update(result.counters)
                sent += result.packets
                if args.rate:  # a plant's pace, not the replay's top speed: wait until the packets are due
                    ahead = t0 + sent / args.rate - time.monotonic()
                    if ahead > 0:
                        time.sleep(ahead)
                now = time.monotonic()
                if now >= next_sample:
                    sensor.save_assets()
                    prev = self.sample(sensor, servers, t0, cpu0, prev)
                    next_sample = now + args.interval
                    if self.start_sample is None and prev["t"] >= warmup and self.passes_done >= 1 and (
                            kept_full(rt) or prev["t"] >= args.duration / 2):
                        self.start_sample = prev
                        if args.census:
                            self.census0 = object_census()
                        if args.tracemalloc:
                            # traced from here on only: what is allocated after the warm-up and still
                            # alive at the end is the growth (tracing from the start slows the run 20x)
                            import tracemalloc

                            tracemalloc.start(args.tracemalloc)
                            gc.collect()  # flows hold reference cycles: garbage waiting for the collector is not growth
                            self.snapshot0 = tracemalloc.take_snapshot()
            if stopped_mid_pass:
                break
            self.finish_pass(n, totals, rt.summary.total - alerts_before, time.monotonic() - pass_t0)
            n += 1
            if time.monotonic() - t0 >= args.duration:
                break
        sensor.save_assets()
        end_sample = self.sample(sensor, servers, t0, cpu0, prev)
        if self.start_sample is None:
            self.start_sample = end_sample
        load_end = os.getloadavg()
        rss_trimmed = rss_after_trim()
        top_growth = self._tracemalloc_diff() if args.tracemalloc else None
        census_growth = None
        if args.census and self.census0 is not None:
            census_growth = dict((object_census() - self.census0).most_common(25))
        run_seconds = end_sample["t"]
        run_cpu = end_sample["cpu_s"]

        # -- the end of the run: close like a sensor that is stopped, then count everywhere ------------------------
        rt.flush()
        es_drained = sensor.es_sink.wait_drained(args.drain_timeout) if sensor.es_sink is not None else True
        summary_alerts = rt.close()
        delivered = sensor.forwarder.drain(timeout=args.drain_timeout)
        sensor.forwarder.stop()
        counts = self._counts(sensor, servers, prefix)
        es_stats = sensor.es_sink.stats() if sensor.es_sink is not None else {}

        start, end = self.start_sample, end_sample
        fit_t = [t for t in self.rss_t if t >= start["t"]]
        fit_y = self.rss_mb[-len(fit_t):] if fit_t else []
        slope = linear_slope(fit_t, fit_y) * 3600.0
        window = end["t"] - start["t"]
        growth = end["rss_mb"] - start["rss_mb"]
        total_alerts = summary_alerts.total
        opened = rt.grouper.opened
        checks: dict[str, dict[str, Any]] = {}

        def check(name: str, ok: bool, detail: Any) -> None:
            checks[name] = {"ok": bool(ok), "detail": detail}

        check("memory growth", growth <= args.max_growth_mb,
              f"{growth:+.1f} MB from the first sample after warm-up to the end (limit {args.max_growth_mb} MB)")
        check("memory slope", window < 600 or slope <= args.max_slope,
              f"{slope:+.2f} MB/hour over {window:.0f} s" + (" (not judged under 10 minutes)" if window < 600 else "")
              + f" (limit {args.max_slope} MB/hour)")
        check("open files", end["fds"] <= start["fds"] + args.fd_slack,
              f"{start['fds']} -> {end['fds']} (slack {args.fd_slack})")
        check("threads", end["threads"] <= start["threads"], f"{start['threads']} -> {end['threads']}")
        check("complete passes", self.passes_done >= 2, f"{self.passes_done} passes")
        check("every pass the same", not self.pass_mismatches and self.first_pass is not None
              and self.first_pass.packets == mix_packets,
              {"packets": self.first_pass.packets if self.first_pass else 0,
               "events": self.first_pass.events if self.first_pass else 0,
               "mismatches": self.pass_mismatches})
        complete = self.passes_done * mix_packets
        check("pipeline totals", pipe.packets == complete if not stopped_mid_pass else pipe.packets >= complete,
              f"{pipe.packets:,} packets read, {self.passes_done} complete passes x {mix_packets:,} in the mix")
        check("alerts stored", counts["sqlite_alerts"] == total_alerts,
              f"SQLite {counts['sqlite_alerts']:,}, produced {total_alerts:,}")
        check("alerts in EVE and ECS files", counts["eve_lines"] == total_alerts == counts["ecs_lines"],
              f"EVE {counts['eve_lines']:,}, ECS {counts['ecs_lines']:,}, produced {total_alerts:,}")
        es_alerts = counts["es_alerts"] if isinstance(counts["es_alerts"], int) else -1
        check("alerts in Elasticsearch or its spool", es_alerts + counts["es_spooled_alerts"] == counts["sqlite_alerts"],
              f"ES {num(counts['es_alerts'])}, still spooled {counts['es_spooled_alerts']:,}, SQLite {counts['sqlite_alerts']:,}")
        # An incident is upserted each time it grows: a spooled upsert may be for one ES already has, so with
        # a spool left ES holds between (opened - distinct incidents in the spool) and opened.
        es_incidents = counts["es_incidents"] if isinstance(counts["es_incidents"], int) else -1
        check("incidents stored", counts["sqlite_incidents"] == opened == counts["outbox_incidents_seen"]
              and opened - counts["es_spooled_incident_ids"] <= es_incidents <= opened,
              f"SQLite {counts['sqlite_incidents']:,}, opened {opened:,}, ES {num(counts['es_incidents'])} "
              f"(+{counts['es_spooled_incident_ids']:,} incidents with upserts still spooled), "
              f"outbox saw {counts['outbox_incidents_seen']:,}")
        check("summary counts", summary_alerts.incidents_total == opened and summary_alerts.total == total_alerts,
              f"summary: {summary_alerts.incidents_total:,} incidents ({len(summary_alerts.incidents):,} kept), "
              f"{summary_alerts.total:,} alerts ({len(summary_alerts.alerts):,} kept)")
        check("province reports", counts["province_incidents"] == counts["outbox_reports_sent"] == counts["outbox_incidents_reported"],
              f"province {counts['province_incidents']:,}, outbox delivered {counts['outbox_reports_sent']:,}, "
              f"outbox reported {counts['outbox_incidents_reported']:,}")
        check("province updates", counts["province_updates"] == counts["outbox_updates_sent"],
              f"province {counts['province_updates']:,}, outbox delivered {counts['outbox_updates_sent']:,}")
        check("outbox empty", delivered and counts["outbox_pending"] == 0 and counts["outbox_failed"] == 0,
              f"pending {counts['outbox_pending']}, failed {counts['outbox_failed']}")
        check("ES delivered", es_drained and es_stats.get("spool_pending", 0) == 0 and es_stats.get("rejected", 0) == 0
              and es_stats.get("queued", 0) == 0,
              {k: es_stats.get(k) for k in ("sent", "rejected", "spooled", "spool_pending", "retried", "queue_spills")})
        check("no output errors", not summary_alerts.output_errors, dict(summary_alerts.output_errors))

        summary = {
            "duration_requested_s": args.duration,
            "interrupted": self.stop_requested,
            "run_seconds": run_seconds,
            "warmup_s": warmup,
            "config": str(config_path),
            "mix": {"files": len(mix), "packets_per_pass": mix_packets, "capture_seconds_per_pass": round(span, 1)},
            "passes": self.passes_done,
            "packets": pipe.packets,
            "events": pipe.events,
            "alerts": total_alerts,
            "incidents": opened,
            "alerts_per_pass": {"first": self.alerts_by_pass[:3], "last": self.alerts_by_pass[-3:],
                                "min": min(self.alerts_by_pass, default=0), "max": max(self.alerts_by_pass, default=0)},
            "throughput": {
                "packets_per_s_wall": round(pipe.packets / max(run_seconds, 1e-9)),
                "packets_per_s_cpu": round(pipe.packets / max(run_cpu, 1e-9)),
                "cpu_s": run_cpu,
                "load_average_start": [round(x, 2) for x in load_start],
                "load_average_end": [round(x, 2) for x in load_end],
                "cores": os.cpu_count(),
            },
            "rss_mb": {
                "start": start["rss_mb"], "start_t": start["t"], "end": end["rss_mb"], "end_t": end["t"],
                "max": max(self.rss_mb), "first": self.rss_mb[0], "growth": round(growth, 2),
                "slope_mb_per_hour": round(slope, 3),
                # after the end figure: the collector run and glibc asked to give free heap back (what is
                # left is memory in use; the difference was free memory the allocator kept)
                "end_after_malloc_trim": rss_trimmed,
            },
            "fds": {"start": start["fds"], "end": end["fds"]},
            "threads": {"start": start["threads"], "end": end["threads"]},
            "servers_rss_mb": {"start": {k: v for k, v in start.items() if k.endswith("_rss_mb") and k != "rss_mb"},
                               "end": {k: v for k, v in end.items() if k.endswith("_rss_mb") and k != "rss_mb"}},
            "counts": counts,
            "elasticsearch": es_stats,
            "forwarder": {"sent": sensor.forwarder.stats.sent, "duplicates": sensor.forwarder.stats.duplicates,
                          "retried": sensor.forwarder.stats.retried, "failed": sensor.forwarder.stats.failed},
            "detectors": summary_alerts.detectors,
            "checks": checks,
            "ok": all(c["ok"] for c in checks.values()),
        }
        if top_growth is not None:
            summary["tracemalloc_top_growth"] = top_growth
        if census_growth is not None:
            summary["objects_gained_by_type"] = census_growth
            print(f"[soak] objects gained after the warm-up, by type: {census_growth}", flush=True)
        path = Path(args.json_summary) if args.json_summary else self.out / "summary.json"
        path.write_text(json.dumps(summary, indent=1, default=str), encoding="utf-8")
        for line in (top_growth or [])[:30]:
            print(f"[soak] grew: {line}", flush=True)
        for name, c in checks.items():
            print(f"[soak] {'ok  ' if c['ok'] else 'FAIL'} {name}: {c['detail']}", flush=True)
        print(
            f"[soak] {self.passes_done} passes, {pipe.packets:,} packets in {run_seconds:.0f} s "
            f"({summary['throughput']['packets_per_s_wall']:,} packets/s wall, "
            f"{summary['throughput']['packets_per_s_cpu']:,} per CPU second); RSS {start['rss_mb']} -> {end['rss_mb']} MB "
            f"(max {max(self.rss_mb)}, slope {slope:+.2f} MB/h; {rss_trimmed} MB after malloc_trim); summary in {path}",
            flush=True,
        )
        return 0 if summary["ok"] else 1

    def _tracemalloc_diff(self) -> list[str]:
        import tracemalloc

        if self.snapshot0 is None:
            return []
        gc.collect()
        snap = tracemalloc.take_snapshot()
        stats = snap.compare_to(self.snapshot0, "traceback" if self.args.tracemalloc > 1 else "lineno")
        out = []
        for st in stats[:25]:
            out.append(str(st))
            if self.args.tracemalloc > 1:
                out.extend("    " + line for line in st.traceback.format()[-2 * self.args.tracemalloc:])
        total = sum(st.size_diff for st in stats)
        return [f"total traced growth {total / MB:+.2f} MB in {sum(st.count_diff for st in stats):+,} blocks"] + out

    def _counts(self, sensor: Sensor, servers: Servers, prefix: str) -> dict[str, Any]:
        """Count what every store holds, each from the store itself."""
        from alerts.es_templates import names

        cfg = sensor.config
        counts: dict[str, Any] = {}
        with sqlite3.connect(f"file:{cfg.outputs.sqlite}?mode=ro", uri=True) as c:
            counts["sqlite_alerts"] = c.execute("SELECT COUNT(*) FROM alerts").fetchone()[0]
            counts["sqlite_incidents"] = c.execute("SELECT COUNT(*) FROM incidents").fetchone()[0]
            counts["sqlite_assets"] = c.execute("SELECT COUNT(*) FROM assets").fetchone()[0]
        c.close()
        counts["eve_lines"] = count_lines(Path(cfg.outputs.eve))
        counts["ecs_lines"] = count_lines(Path(cfg.outputs.alerts_out))
        es = servers.es.client().options(request_timeout=300)
        aliases = names(prefix)["aliases"]
        for kind in ("alerts", "incidents", "events"):
            try:
                es.indices.refresh(index=aliases[kind], ignore_unavailable=True)
                counts[f"es_{kind}"] = int(es.count(index=aliases[kind])["count"])
            except Exception as exc:  # noqa: BLE001 - reported as a failed check, never a crash
                counts[f"es_{kind}"] = f"count failed: {type(exc).__name__}: {exc}"[:200]
        spooled = spooled_docs(cfg.elasticsearch.spool, prefix)
        for kind in ("alerts", "incidents", "events", "incident_ids"):
            counts[f"es_spooled_{kind}"] = spooled[kind]
        status = sensor.forwarder_outbox.status()
        counts["outbox_pending"] = status["entries"].get("pending", 0)
        counts["outbox_failed"] = status["entries"].get("failed", 0)
        counts["outbox_reports_sent"] = status["by_kind"].get("report:sent", 0)
        counts["outbox_updates_sent"] = status["by_kind"].get("update:sent", 0)
        counts["outbox_incidents_seen"] = status["incidents_seen"]
        counts["outbox_incidents_reported"] = status["incidents_reported"]
        counts["outbox_duplicates"] = status["duplicates_acknowledged"]
        with sqlite3.connect(f"file:{servers.platform.db}?mode=ro", uri=True) as c:
            counts["province_incidents"] = c.execute(
                "SELECT COUNT(*) FROM incidents WHERE enterprise_id = 'acme'").fetchone()[0]
            counts["province_updates"] = c.execute("SELECT COUNT(*) FROM incident_updates").fetchone()[0]
        c.close()
        return counts


def spooled_docs(spool_path: str, prefix: str) -> Counter:
    """Documents still in the Elasticsearch sink's spool, by kind (alerts, incidents, events), and the
    distinct incidents they update (``incident_ids``): what the cluster has not taken yet, kept on disk
    by the sink (nothing lost, only late)."""
    from alerts.es_sink import parse_action

    kinds: Counter = Counter()
    incident_ids: set[str] = set()
    if not Path(spool_path).is_file():
        return kinds
    with contextlib.closing(sqlite3.connect(f"file:{spool_path}?mode=ro", uri=True)) as c:
        for (body,) in c.execute("SELECT body FROM docs"):
            _op, index, doc_id = parse_action(bytes(body))
            kind = index[len(prefix) + 1 :].split("-", 1)[0] if index.startswith(prefix + "-") else "other"
            kinds[kind] += 1
            if kind == "incidents":
                incident_ids.add(doc_id)
    kinds["incident_ids"] = len(incident_ids)
    return kinds


def kept_full(runtime: Any) -> bool:
    """The end summary's kept lists (the first 10,000 alerts, the first 1,000 incidents: bounded by
    design, ~60 MB in this mix) are full, so memory growth from here on is growth. At a paced rate
    they fill after the default warm-up; a run that has not filled them by half its duration is judged
    from there."""
    from alerts.runtime import MAX_KEPT_ALERTS, MAX_KEPT_INCIDENTS

    s = runtime.summary
    return len(s.alerts) >= MAX_KEPT_ALERTS and len(s.incidents) >= MAX_KEPT_INCIDENTS


def rss_after_trim() -> float | None:
    """RSS (MB) after a full collection and glibc's ``malloc_trim(0)``: what the process really uses, as
    opposed to freed heap the allocator keeps for later (None where there is no glibc)."""
    import ctypes

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        return None
    return round(status_field("self", "VmRSS") / 1024, 2)


def object_census() -> Counter:
    """Live objects the garbage collector tracks, by type name: what a leak of Python objects is made of."""
    gc.collect()
    return Counter(type(o).__name__ for o in gc.get_objects())


def count_lines(path: Path) -> int:
    n = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            n += chunk.count(b"\n")
    return n


def rss_table(out: Path, step: float = 300.0) -> str:
    """The RSS-over-time table of docs/soak.md, from a run's samples (one row per ``step`` seconds)."""
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text(encoding="utf-8").splitlines()]
    rows = ["| t (min) | RSS MB | fds | threads | passes | packets | alerts | incidents | packets/s | load |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    due = 0.0
    for i, s in enumerate(samples):
        if s["t"] >= due or i == len(samples) - 1:
            rows.append(f"| {s['t'] / 60:.0f} | {s['rss_mb']:.1f} | {s['fds']} | {s['threads']} | {s['passes']:,} | "
                        f"{s['packets']:,} | {s['alerts']:,} | {s['incidents']:,} | {s['pps_wall']:,} | {s['load1']} |")
            due = (s["t"] // step + 1) * step
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=3600.0, help="seconds to replay (default 3600); the pass under way is finished")
    ap.add_argument("--interval", type=float, default=10.0, help="seconds between two samples (default 10)")
    ap.add_argument("--warmup", type=float, help="seconds before the start figures are taken (default 20%% of --duration, at most 600; "
                    "always after the first pass, and once the end summary's kept alerts (10,000) and incidents (1,000) "
                    "are full or half the run has passed)")
    ap.add_argument("--out", default=str(REPO / "var" / "soak"), help="output folder (default var/soak)")
    ap.add_argument("--json-summary", help="where to write the summary (default OUT/summary.json)")
    ap.add_argument("--modbus-packets", type=int, default=20_000, help="packets of bench/gen_modbus.py plant traffic in the mix (0: none)")
    ap.add_argument("--max-growth-mb", type=float, default=25.0, help="RSS growth after the warm-up that fails the run (default 25)")
    ap.add_argument("--max-slope", type=float, default=10.0, help="RSS slope in MB/hour that fails a run of 10+ minutes (default 10)")
    ap.add_argument("--fd-slack", type=int, default=2, help="open fds allowed above the start figure (default 2: pooled HTTP connections come and go)")
    ap.add_argument("--drain-timeout", type=float, default=300.0,
                    help="seconds the end waits for Elasticsearch and for the outbox to take everything (default 300)")
    ap.add_argument("--es-url", help="an Elasticsearch cluster instead of a local noida-db")
    ap.add_argument("--rate", type=float, default=0.0,
                    help="packets per second to replay at, on average (default 0: as fast as the sensor goes); "
                         "paced between files, so a plant's steady rate rather than a stress test")
    ap.add_argument("--tracemalloc", type=int, nargs="?", const=1, default=0, metavar="FRAMES",
                    help="trace Python allocations after the warm-up (slower) and report where memory grew")
    ap.add_argument("--census", action="store_true",
                    help="count live objects by type after the warm-up and at the end; report the types that grew")
    ap.add_argument("--table", action="store_true", help="only print the RSS-over-time table of the run in --out (markdown)")
    ap.add_argument("--table-step", type=float, default=300.0, help="seconds between two rows of --table (default 300)")
    args = ap.parse_args(argv)
    if args.table:
        print(rss_table(Path(args.out), args.table_step))
        return 0
    soak = Soak(args)
    Path(args.out).mkdir(parents=True, exist_ok=True)

    def stop(signum: int, _frame: Any) -> None:  # finish the file under way, then report
        soak.stop_requested = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        return soak.run()
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        print(f"[soak] set-up or run failed: {exc}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
