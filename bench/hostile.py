#!/usr/bin/env python3
"""The hostile-traffic suite at full size (issue #11; docs/hostile-traffic.md).

For each scenario of ``tools/hostile/scenarios.py`` (a million distinct SYN flows, ten thousand
connections each holding a reassembly gap, half a million overlapping retransmissions, DNP3 and OPC
UA floods that never complete, lying length fields, an IP fragment flood, absurd timestamps), the
capture is generated once into ``bench/out/hostile/`` (git ignores it) and replayed by
``icswatch replay`` in its own process, as a user runs it: default configuration (so the default
caps), default rules, SQLite store. Printed per scenario: packets, CPU seconds and packets/s (CPU
time, the start-up of an empty replay subtracted: the machine is shared, see bench/README.md), peak
RSS (``os.wait4`` of the replay alone), the bound the caps give (``bound``: the victims-only replay's
RSS plus what the caps allow), the cap counters hit, and whether the victim plant's rules still fired.

A peer is timed in the same run: ``icswatch replay`` on a benign Modbus capture of 300,000 packets
(``bench/gen_modbus.py``), so the hostile rates read as a ratio to normal traffic.

    python bench/hostile.py                          # every scenario, full size (~15 min, ~2 GB disk)
    python bench/hostile.py --scenarios syn_flood --scale 0.1
    python bench/hostile.py --json bench/out/hostile.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
OUT = BENCH / "out" / "hostile"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH))

from sensor.config_types import SensorLimits
from tools.hostile.measure import memory_bound, replay_measured
from tools.hostile.scenarios import FULL_SIZE, SCENARIOS, Written

# The counters each scenario aims at (printed when non-zero, in this order).
CAP_COUNTERS = [
    "flow_cap_evictions",
    "flows_idle_timeout",
    "buffered_bytes_cap",
    "buffered_bytes_shed",
    "tcp_buffer_cap",
    "tcp_gap",
    "tcp_out_of_order",
    "tcp_overlap",
    "tcp_overlap_conflict",
    "tcp_retransmission",
    "dnp3_reassembly_table_cap",
    "dnp3_reassembly_overflow",
    "dnp3_partial_fragment_lost",
    "opcua_reassembly_cap",
    "cotp_reassembly_cap",
    "cotp_bad_length_indicator",
    "enip_bad_cpf",
    "ip_fragment_cap",
    "ip_fragment_memory_cap",
    "ip_fragment_set_cap",
    "ip_fragment_oversize",
    "ip_fragment_timeout",
    "capture_clock_jump_forward",
    "capture_clock_backwards",
    "tcp_flows_without_handshake",
]


@dataclass
class Leg:
    packets: int
    cpu: float
    wall: float
    rss: int
    returncode: int
    summary: dict[str, Any] = field(default_factory=dict)

    startup: float = 0.0  # CPU seconds of the same command on an empty capture (imports, rule compilation)

    @property
    def rate(self) -> float:
        """Packets per CPU second, the start-up excluded (it would dominate a small capture)."""
        cpu = self.cpu - self.startup
        return self.packets / cpu if cpu > 0 else 0.0


def replay(capture: Path, sets: list[str] | None = None) -> Leg:
    """``icswatch replay`` in a scratch folder; rusage of that process alone."""
    with tempfile.TemporaryDirectory(prefix="hostile-") as tmp:
        summary_path = Path(tmp) / "summary.json"
        options = ["--db", str(Path(tmp) / "alerts.db"), "--json-summary", str(summary_path)]
        for s in sets or []:
            options += ["--set", s]
        run = replay_measured(capture, Path(tmp), options)
        if run.returncode != 0:
            sys.stderr.write(run.stderr[-2000:])
        summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    return Leg(summary.get("packets", 0), run.cpu, run.wall, run.rss, run.returncode, summary)


def generate(name: str, size: int) -> tuple[Written, Path, Path]:
    OUT.mkdir(parents=True, exist_ok=True)
    capture, victims = OUT / f"{name}-{size}.pcap", OUT / f"{name}-{size}.victims.pcap"
    meta = OUT / f"{name}-{size}.json"
    if capture.exists() and victims.exists() and meta.exists():
        info = json.loads(meta.read_text())
        written = Written(
            name,
            capture,
            info["packets"],
            info["hostile_packets"],
            info["victim_packets"],
            set(info["victim_hosts"]),
            info["victim_alerts"],
            info["poll_events"],
            info["params"],
        )
        return written, capture, victims
    t0 = time.perf_counter()
    written = SCENARIOS[name](capture, size, victims)
    info = asdict(written)
    info["path"] = str(capture)
    info["victim_hosts"] = sorted(written.victim_hosts)
    info["seconds"] = round(time.perf_counter() - t0, 1)
    meta.write_text(json.dumps(info, indent=1))
    print(
        f"  generated {capture.name}: {written.packets:,} packets, {capture.stat().st_size / 1e6:.0f} MB "
        f"in {info['seconds']} s",
        flush=True,
    )
    return written, capture, victims


def bound(base_rss: int, flows: int, limits: SensorLimits) -> int:
    return memory_bound(base_rss, flows, limits.max_flows, limits.max_buffered_bytes + limits.max_fragment_bytes)


def flows_of(written: Written) -> int:
    p = written.params
    for key in ("syns", "flows"):
        if key in p:
            return int(p[key])  # type: ignore[arg-type]
    return 64


def startup_cpu() -> float:
    """CPU seconds ``icswatch replay`` spends on an empty capture: subtracted from every leg."""
    OUT.mkdir(parents=True, exist_ok=True)
    empty = OUT / "empty.pcap"
    from tools.hostile.wire import PcapFile

    with PcapFile(empty):
        pass
    return min(replay(empty).cpu for _ in range(3))


def benign_peer(packets: int) -> Leg:
    import gen_modbus  # bench/gen_modbus.py

    path = BENCH / "out" / f"modbus-{packets}-f2000-s1.pcap"
    if not path.exists():
        gen_modbus.generate(path, packets=packets, flows=2000, seed=1)
    return replay(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenarios", help="comma-separated subset (default: all)")
    p.add_argument("--scale", type=float, default=1.0, help="multiply every full size by this")
    p.add_argument("--peer-packets", type=int, default=300_000, help="size of the benign Modbus peer capture")
    p.add_argument("--json", help="also write every figure here")
    args = p.parse_args(argv)
    names = args.scenarios.split(",") if args.scenarios else list(SCENARIOS)
    limits = SensorLimits()
    load = os.getloadavg()
    print(
        f"# hostile traffic, {dt.date.today()}, default caps: max_flows {limits.max_flows:,}, "
        f"max_buffered_bytes {limits.max_buffered_bytes >> 20} MiB, max_fragment_bytes "
        f"{limits.max_fragment_bytes >> 20} MiB, max_fragment_sets {limits.max_fragment_sets:,}; "
        f"load average {load[0]:.1f}",
        flush=True,
    )
    startup = startup_cpu()
    print(f"  start-up of icswatch replay (empty capture): {startup:.2f} s CPU, subtracted below", flush=True)
    peer = benign_peer(args.peer_packets)
    peer.startup = startup
    print(
        f"  peer: benign Modbus replay, {peer.packets:,} packets, {peer.rate:,.0f} packets/s (CPU), "
        f"peak RSS {peer.rss >> 20} MB",
        flush=True,
    )
    rows: list[dict[str, Any]] = []
    for name in names:
        size = max(1, int(FULL_SIZE[name] * args.scale))
        print(f"== {name} (size {size:,})", flush=True)
        written, capture, victims = generate(name, size)
        alone = replay(victims)
        leg = replay(capture)
        leg.startup = startup
        counters = leg.summary.get("counters", {})
        alerts = leg.summary.get("alerts", {}).get("by_rule", {})
        victims_fired = {rule: alerts.get(rule, 0) for rule in written.victim_alerts}
        ok = all(alerts.get(rule, 0) >= n for rule, n in written.victim_alerts.items())
        limit = bound(alone.rss, flows_of(written), limits)
        row = {
            "scenario": name,
            "size": size,
            "packets": leg.packets,
            "capture_mb": round(capture.stat().st_size / 1e6, 1),
            "returncode": leg.returncode,
            "cpu_s": round(leg.cpu, 2),
            "startup_cpu_s": round(startup, 2),
            "wall_s": round(leg.wall, 2),
            "packets_per_s_cpu": round(leg.rate),
            "vs_benign": round(leg.rate / peer.rate, 2) if peer.rate else None,
            "peak_rss_mb": round(leg.rss / 2**20, 1),
            "victims_alone_rss_mb": round(alone.rss / 2**20, 1),
            "bound_mb": round(limit / 2**20, 1),
            "under_bound": leg.rss <= limit,
            "gauges": leg.summary.get("gauges", {}),
            "counters": {k: counters[k] for k in CAP_COUNTERS if counters.get(k)},
            "analyzer_errors": {k: v for k, v in counters.items() if k.startswith("analyzer_error_")},
            "events": leg.summary.get("events"),
            "alerts": sum(alerts.values()),
            "victim_alerts": victims_fired,
            "victim_alerts_ok": ok,
        }
        rows.append(row)
        print(
            f"  {row['packets']:,} packets, {row['cpu_s']} s CPU ({row['wall_s']} s wall), "
            f"{row['packets_per_s_cpu']:,} packets/s ({row['vs_benign']}x benign), peak RSS {row['peak_rss_mb']} MB "
            f"(bound {row['bound_mb']} MB: {'ok' if row['under_bound'] else 'OVER'}), exit {leg.returncode}",
            flush=True,
        )
        print(f"  gauges {row['gauges']}", flush=True)
        print(f"  counters {row['counters']}", flush=True)
        errors = row["analyzer_errors"] or "none"
        print(f"  victim alerts {victims_fired} {'ok' if ok else 'MISSING'}; analyzer errors {errors}", flush=True)
    print()
    print("| scenario | packets | CPU s | packets/s (CPU) | vs benign | peak RSS MB | bound MB | victim alerts |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(
            f"| {r['scenario']} | {r['packets']:,} | {r['cpu_s']} | {r['packets_per_s_cpu']:,} | {r['vs_benign']}x | "
            f"{r['peak_rss_mb']} | {r['bound_mb']} | {'all fired' if r['victim_alerts_ok'] else 'MISSING'} |"
        )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(
            json.dumps(
                {
                    "date": str(dt.date.today()),
                    "load": load,
                    "startup_cpu_s": round(startup, 2),
                    "peer": {
                        "packets": peer.packets,
                        "packets_per_s_cpu": round(peer.rate),
                        "peak_rss_mb": round(peer.rss / 2**20, 1),
                    },
                    "limits": asdict(limits),
                    "rows": rows,
                },
                indent=1,
            )
        )
    failed = [
        r["scenario"]
        for r in rows
        if r["returncode"] != 0 or not r["under_bound"] or not r["victim_alerts_ok"] or r["analyzer_errors"]
    ]
    if failed:
        print(f"FAILED: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
