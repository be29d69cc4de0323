#!/usr/bin/env python3
"""How fast can ``icswatch sniff`` capture without dropping? tcpreplay into a veth pair, sniff on the
other end, raise the rate until something is dropped.

    python bench/sniff_rate.py                         # search, then one --topspeed trial
    python bench/sniff_rate.py --rates 20000 40000     # just these rates
    python bench/sniff_rate.py --seconds 10 --method socket --json bench/out/sniff_rate-socket.json

Each trial is a fresh sniff process (default rules and outputs, as a sensor runs) in a network
namespace of the bench's own, holding one veth pair and nothing else: the synthetic capture's private
addresses never leave the machine. tcpreplay sends ``rate x seconds`` packets of the Modbus bench
capture (bench/gen_modbus.py; generated into bench/out/ when missing) with ``--pps``; sniff is stopped
with SIGTERM once its queue is empty and nothing moved for two seconds, and its JSON summary gives:

- ``kernel_received``: packets that reached the socket (PACKET_STATISTICS, drops included);
- ``kernel_dropped``: dropped by the kernel, the ring being full (the capture thread too slow);
- ``queue_dropped``: dropped by sniff's bounded queue, full (the pipeline too slow);
- ``processed``: what went through the pipeline and the detectors.

A rate is "clean" when both drop counters are 0 and every packet sent was processed. The search
doubles the rate from ``--start`` until a trial drops, then bisects to within ``--precision``. The
trial length matters: the ring (64 MiB) and the queue (200,000 packets) absorb bursts, so a short
trial above the sustained rate can still be clean; ``--seconds`` (default 20) is long enough to fill
them at the rates this machine reaches. tcpreplay itself needs a CPU: on a 2-core machine it competes
with sniff, and it reports the rate it really achieved, which the table shows next to the asked one.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "out"
CAPTURE = OUT / "modbus-1000000-f2000-s1.pcap"


def sh(*cmd: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    r = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    if check and r.returncode:
        raise SystemExit(f"{' '.join(cmd)}: {r.stderr.strip()}")
    return r


class Namespace:
    def __init__(self) -> None:
        self.name = f"icsw-bench-{os.getpid()}-{secrets.token_hex(3)}"

    def __enter__(self) -> Namespace:
        sh("ip", "netns", "add", self.name)
        try:
            self.run("sh", "-c", "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6; echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6")
            self.run("ip", "link", "add", "name", "va", "type", "veth", "peer", "name", "vb")
            self.run("ip", "link", "set", "va", "up")
            self.run("ip", "link", "set", "vb", "up")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        sh("ip", "netns", "del", self.name, check=False)

    def run(self, *cmd: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        return sh("ip", "netns", "exec", self.name, *cmd, check=check, timeout=timeout)

    def popen(self, *cmd: str, **kw: Any) -> subprocess.Popen:
        return subprocess.Popen(["ip", "netns", "exec", self.name, *cmd], **kw)


def trial(ns: Namespace, capture: Path, rate: int | None, packets: int, args: argparse.Namespace) -> dict[str, Any]:
    """One sniff run at ``rate`` packets/s (None: tcpreplay --topspeed)."""
    with tempfile.TemporaryDirectory(prefix="sniff-rate-") as tmp:
        work = Path(tmp)
        cmd = [sys.executable, "-m", "icswatch.commands.sniff", "-i", "vb", "--capture-method", args.method,
               "--stats-interval", "0.5", "--stats-json", str(work / "stats.json"), "--json-summary",
               str(work / "summary.json"), "-q", "--db", str(work / "alerts.db"), *args.sniff_args]
        err = open(work / "err.txt", "w")
        proc = ns.popen(*cmd, cwd=work, env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=subprocess.DEVNULL, stderr=err)
        try:
            end = time.monotonic() + 120
            while "listening on" not in (work / "err.txt").read_text():
                if proc.poll() is not None or time.monotonic() > end:
                    raise SystemExit("sniff did not start:\n" + (work / "err.txt").read_text())
                time.sleep(0.1)
            speed = ["--topspeed"] if rate is None else [f"--pps={rate}"]
            t0 = time.monotonic()
            r = ns.run("tcpreplay", "-K", "-i", "va", *speed, f"--limit={packets}", str(capture), timeout=3600)
            sent_seconds = time.monotonic() - t0
            actual = re.search(r"Rated: [\d.]+ Bps, [\d.]+ Mbps, ([\d.]+) pps", r.stdout)
            sent_m = re.search(r"Actual: (\d+) packets", r.stdout)
            sent = int(sent_m.group(1)) if sent_m else packets
            # wait for the backlog: queue empty and nothing moving for 2 s
            last, still = None, time.monotonic()
            while time.monotonic() - still < 2.0 and time.monotonic() - t0 < sent_seconds + 300:
                try:
                    s = json.loads((work / "stats.json").read_text())
                    key = (s["pipeline"]["processed"], s["capture"]["totals"]["queued"])
                except (OSError, ValueError, KeyError):
                    key = None
                if key != last or (key and key[1]):
                    last, still = key, time.monotonic()
                time.sleep(0.2)
            drained = time.monotonic() - t0
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            err.close()
        summary = json.loads((work / "summary.json").read_text())
    t = summary["capture"]["totals"]
    return {
        "rate_asked": rate or "topspeed",
        "rate_sent": round(float(actual.group(1))) if actual else None,
        "sent": sent,
        "kernel_received": t["kernel_received"],
        "kernel_dropped": t["kernel_dropped"],
        "queue_dropped": t["queue_dropped"],
        "queue_peak": t["queue_peak"],
        "processed": t["processed"],
        "events": summary["events"],
        "alerts": (summary.get("alerts") or {}).get("total", 0),
        "send_seconds": round(sent_seconds, 2),
        "done_seconds": round(drained, 2),
        "clean": t["kernel_dropped"] == 0 and t["queue_dropped"] == 0 and t["processed"] == sent,
    }


def show(row: dict[str, Any]) -> None:
    print(
        f"{row['rate_asked']!s:>9} {row['rate_sent']!s:>9} {row['sent']:>9,} {row['kernel_received']:>9,} "
        f"{row['kernel_dropped']:>9,} {row['queue_dropped']:>9,} {row['queue_peak']:>9,} {row['processed']:>9,} "
        f"{row['done_seconds']:>7} {'clean' if row['clean'] else 'DROPS'}",
        flush=True,
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--capture", type=Path, default=CAPTURE, help="capture to send (default: the 1M-packet Modbus bench capture)")
    ap.add_argument("--seconds", type=float, default=20.0, help="length of each trial at its rate (default 20)")
    ap.add_argument("--start", type=int, default=10_000, help="first rate of the search, packets/s (default 10000)")
    ap.add_argument("--precision", type=float, default=0.1, help="stop bisecting within this fraction (default 0.1)")
    ap.add_argument("--rates", type=int, nargs="*", help="only these rates (no search)")
    ap.add_argument("--no-topspeed", action="store_true", help="skip the tcpreplay --topspeed trial")
    ap.add_argument("--method", choices=("ring", "socket"), default="ring")
    ap.add_argument("--sniff-args", nargs=argparse.REMAINDER, default=[], help="more sniff options (last)")
    ap.add_argument("--json", type=Path, help="write every trial as JSON")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("sniff_rate: needs root (network namespace, tcpreplay)", file=sys.stderr)
        return 2
    if not args.capture.exists():
        print(f"generating {args.capture} ...", file=sys.stderr)
        OUT.mkdir(parents=True, exist_ok=True)
        sh(sys.executable, str(REPO / "bench" / "gen_modbus.py"), "--packets", "1000000", "-o", str(args.capture), "-q")
    rows: list[dict[str, Any]] = []
    print(f"{'asked':>9} {'sent/s':>9} {'sent':>9} {'received':>9} {'kdropped':>9} {'qdropped':>9} {'qpeak':>9} "
          f"{'processed':>9} {'done s':>7}")

    def run(rate: int | None) -> dict[str, Any]:
        packets = 1_000_000 if rate is None else max(1000, int(rate * args.seconds))
        row = trial(ns, args.capture, rate, packets, args)
        rows.append(row)
        show(row)
        return row

    with Namespace() as ns:
        if args.rates:
            for r in args.rates:
                run(r)
        else:
            good, bad = 0, None
            rate = args.start
            while bad is None:
                if run(rate)["clean"]:
                    good, rate = rate, rate * 2
                else:
                    bad = rate
            while bad - good > args.precision * bad:
                rate = (good + bad) // 2
                if run(rate)["clean"]:
                    good = rate
                else:
                    bad = rate
            print(f"highest clean rate: {good:,} packets/s over {args.seconds:g} s (first drops at {bad:,})")
        if not args.no_topspeed:
            run(None)
    load = os.getloadavg()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "trials": rows, "seconds": args.seconds, "method": args.method, "capture": str(args.capture),
            "machine": f"{platform.processor() or platform.machine()} x{os.cpu_count()}, load {load[0]:.1f}",
            "python": platform.python_version(),
        }, indent=1))
    print(f"machine: {os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
