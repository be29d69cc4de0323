#!/usr/bin/env python3
"""Throughput benchmark: icswatch against tshark and scapy, in one run, on the same synthetic capture.

Machines are noisy (two shared cores here), so absolute packets/s are only indicative: the figures
that count are ratios to peers timed in the same run on the same file. Every leg runs as its own
process; its peak RSS and CPU time come from ``os.wait4``'s rusage of that process alone. Rates and
ratios use each process's CPU time (user + system) by default: on a shared machine a process that
waits for a core loses wall time but not CPU time, and every leg here is single-threaded, so CPU time
is the one-core cost. ``--clock wall`` uses wall time instead; the table shows both.

Legs (see bench/README.md for how to read them):

- ``icswatch inspect``   ``python -m icswatch inspect FILE --json`` (what a user runs; includes start-up).
  Its JSON is compared with the generator's truth (packets, Modbus PDUs, function histogram).
- ``icswatch in-process`` ``sensor.pipeline.Pipeline().replay_file(FILE)`` timed inside a worker process,
  imports excluded: the sensor core alone. ``--profile`` runs this leg under a profiler.
- ``floor: read only``   the capture reader alone (every record read, nothing done with it), in-process.
- ``floor: shared path``  the sensor with every protocol analyzer replaced by one that ignores its data
  (decode, flow table, reassembly, dispatch), in-process. No work on the protocol modules can make
  ``inspect`` faster than this: a target above the floor is out of reach of parser optimisation.
- ``icswatch replay``    ``icswatch replay FILE`` (detectors, default rules and default outputs), with
  ``--replay`` (default: when the command exists). Issue 3: >= 70% of ``inspect``'s throughput.
- ``replay --no-assets`` the same without the passive asset inventory: the rules and the alert store alone.
- ``replay pairs``       ``inspect`` and ``replay`` run back to back ``--pairs`` times (default 3): issue 3's
  ratio is judged on the median of the pairs' ratios, which a machine whose speed drifts between legs
  does not bias.
- ``replay breakdown``   with ``--breakdown N``: ``inspect``, ``replay``, ``replay --no-rules``,
  ``replay --no-db`` and two in-process floors (the sensor dropping its events; counting each under its
  signature) in alternation, N rounds; the differences of their median CPU times say what the rules
  (with their alerts), the SQLite store, the rest of the alerting runtime and per-signature counting
  alone cost.
- ``tshark fields``      ``tshark -n -r FILE -T fields -e mbtcp.trans_id -e modbus.func_code -E occurrence=a``,
  the way the ground truth is produced; its output goes to a file in bench/out/ and is counted after
  the timing, so the run also shows whether icswatch and tshark agree on this file.
- ``tshark -q -Y``       ``tshark -n -r FILE -q -Y 'modbus.func_code == 0'``: full dissection, no output
  (a filter that never matches), a second reference.
- ``tshark -q``          ``tshark -n -r FILE -q``: tshark skips dissection when nothing asks for it, so
  this is its file-reading floor, shown for information, not a peer.
- ``scapy``              ``PcapReader`` with full dissection and ``scapy.contrib.modbus`` loaded, on the
  first ``--scapy-packets`` packets (default 100,000); its rate is extrapolated to the whole file
  (scapy's cost per packet does not depend on the position in the file).

A peak-RSS check replays a capture twice the size (``--no-rss-check`` to skip) to show that memory does
not grow with the file.

    python bench/run_bench.py                       # 1M packets, every leg
    python bench/run_bench.py --packets 200000 --no-rss-check --json bench/out/quick.json
    python bench/run_bench.py --profile             # + the top functions of the in-process run
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
OUT = BENCH / "out"
sys.path.insert(0, str(BENCH))

import gen_modbus  # bench/ is not a package: imported from its folder

# Targets of issue 2 (inspect) and issue 3 (replay). Reported, not enforced unless --check.
TARGETS = {
    "vs_tshark_fields": 10.0,  # icswatch inspect pkt/s / tshark fields pkt/s
    "vs_scapy": 100.0,  # icswatch inspect pkt/s / scapy pkt/s
    "pkts_per_s": 300_000.0,  # icswatch inspect, absolute, one core
    "rss_mb": 150.0,  # peak RSS of icswatch inspect, whatever the capture size
    "rss_growth": 1.25,  # peak RSS on the 2x file / peak RSS on the 1x file (flat memory: ~1.0)
    "replay_vs_inspect": 0.70,  # icswatch replay pkt/s / icswatch inspect pkt/s
}


@dataclass
class Capture:
    """A synthetic capture kind: its generator and how each peer extracts the same PDUs."""

    name: str
    generate: Any  # (path, packets, flows, seed) -> truth dict
    default_path: Any  # (packets, flows, seed) -> Path
    tshark_fields: list[str]  # first field: one occurrence per PDU; second: the function code
    scapy_contrib: str
    scapy_layers: tuple[str, str]  # (module, comma-separated class names) counted as PDUs


# One entry per protocol; issue 4's per-protocol captures join here.
CAPTURES = {
    "modbus": Capture(
        name="modbus",
        generate=lambda path, n, f, s: gen_modbus.generate(path, n, f, s),
        default_path=lambda n, f, s: gen_modbus.default_path(n, f, s, False, False),
        tshark_fields=["mbtcp.trans_id", "modbus.func_code"],
        scapy_contrib="modbus",
        scapy_layers=("scapy.contrib.modbus", "ModbusADURequest,ModbusADUResponse"),
    ),
}


@dataclass
class Leg:
    name: str
    cmd: list[str] = field(default_factory=list)
    packets: int = 0  # packets the rate applies to (the whole file, or scapy's prefix)
    seconds: float = 0.0  # wall time (median over --repeat)
    cpu: float = 0.0  # user + system CPU time of the process
    rss_mb: float = 0.0  # peak resident set size
    pkts_per_s: float = 0.0  # by the clock the ratios use (--clock, default cpu)
    pps_wall: float = 0.0
    pps_cpu: float = 0.0
    extrapolated: bool = False  # rate measured on a prefix
    runs: list[float] = field(default_factory=list)
    exit: int = 0
    agrees: str = ""  # comparison with the generator's truth
    note: str = ""
    skipped: str = ""


# Our packages, compiled to bytecode before any leg runs (see compile_sources).
PACKAGES = ("alerts", "api", "detectors", "icswatch", "rules", "sensor")


def compile_sources() -> str:
    """Compile the checkout's modules to bytecode (``__pycache__``) before timing anything.

    An installed sensor runs from bytecode: ``pip install`` compiles a wheel's modules, and Python
    writes the cache of an editable checkout on first import. A machine with PYTHONDONTWRITEBYTECODE
    set (this one) would instead compile every module from source in every leg, a start-up cost that
    no user pays and that ``replay`` pays more of than ``inspect`` (it imports the detectors and the
    stores too). Returns what was done, for the report."""
    cmd = [sys.executable, "-m", "compileall", "-q", *(str(REPO / p) for p in PACKAGES)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    return "compiled to bytecode before the legs" if proc.returncode == 0 else f"compileall failed: {proc.stderr[-200:]}"


# ------------------------------------------------------------------------------------------- processes
def run_measured(cmd: list[str], stdout: Path | None = None, cwd: Path | None = None) -> tuple[float, float, float, int, str]:
    """Run ``cmd``; return (wall s, cpu s, peak RSS MB, exit code, stderr tail). Rusage of that child only."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    err_path = OUT / ".stderr.txt"
    with open(stdout or os.devnull, "wb") as out, open(err_path, "wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=cwd, env=env)
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    tail = "\n".join(
        line for line in err_path.read_text(errors="replace").splitlines() if "Running as user" not in line
    )[-600:]
    rss_kb = ru.ru_maxrss  # kilobytes on Linux
    return wall, ru.ru_utime + ru.ru_stime, rss_kb / 1024.0, proc.returncode, tail


def measure(leg: Leg, repeat: int, stdout: Path | None = None, cwd: Path | None = None) -> Leg:
    cpus, rsss = [], []
    for _ in range(repeat):
        wall, cpu, rss, code, tail = run_measured(leg.cmd, stdout, cwd)
        leg.runs.append(round(wall, 3))
        cpus.append(cpu)
        rsss.append(rss)
        leg.exit = code
        if code != 0:
            leg.note = f"exit {code}: {tail.strip().splitlines()[-1] if tail.strip() else ''}"
            break
    leg.seconds = statistics.median(leg.runs)
    leg.cpu = statistics.median(cpus)
    leg.rss_mb = max(rsss)
    return leg


CLOCK = "cpu"  # set from --clock


def rate(leg: Leg, packets: int) -> Leg:
    """Set the leg's packet count and rates (wall and CPU); ``pkts_per_s`` follows ``CLOCK``."""
    leg.packets = packets
    leg.pps_wall = packets / leg.seconds if leg.seconds > 0 else 0.0
    leg.pps_cpu = packets / leg.cpu if leg.cpu > 0 else 0.0
    leg.pkts_per_s = leg.pps_cpu if CLOCK == "cpu" else leg.pps_wall
    return leg


def python_cmd(*args: str) -> list[str]:
    return [sys.executable, *args]


def icswatch_cmd(*args: str) -> list[str]:
    return python_cmd("-m", "icswatch", *args)


def _help(name: str) -> str | None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    r = subprocess.run(icswatch_cmd(name, "--help"), capture_output=True, text=True, env=env, cwd=REPO, check=False)
    return r.stdout if r.returncode == 0 else None


def has_subcommand(name: str) -> bool:
    return _help(name) is not None


def help_mentions(name: str, flag: str) -> bool:
    return flag in (_help(name) or "")


# ---------------------------------------------------------------------------------------------- workers
def worker_floor(path: str, what: str) -> int:
    """The floors under ``inspect``, timed like the in-process leg (imports excluded); one JSON line.

    ``read``: the capture reader alone, every record read and nothing else. ``shared``: the whole
    sensor path with every protocol analyzer replaced by one that ignores its data (decode, flow table,
    reassembly, dispatch: bench/protocol_bench.py's floor). No protocol parsing makes either faster,
    so a target above a floor cannot be met by work on the protocol modules.

    Under ``replay`` (``--breakdown``): ``events``: the whole sensor, its events handed to a function
    that drops them. ``signatures``: the same, each event counted under its signature (the key of
    ``alerts.runtime``'s table, built inline as the runtime does) with its last time, nothing else: the
    least a runtime that keeps per-signature counts for the asset inventory does per event.
    """
    sys.path.insert(0, str(REPO))
    from sensor.capture import CaptureReader
    from sensor.pipeline import Pipeline

    t0 = time.perf_counter()
    c0 = time.process_time()
    if what == "read":
        n = 0
        with CaptureReader(path) as reader:
            for _record in reader:
                n += 1
        result: dict[str, Any] = {"packets": n}
    elif what in ("events", "signatures"):
        table: dict[tuple[Any, ...], list[Any]] = {}
        get = table.get

        def drop(event: Any) -> None:
            pass

        def count(e: Any) -> None:
            if not e.flow_id:  # the runtime hands events without a flow to the inventory whole
                return
            key = (e.flow_id, e.src, e.sport, e.protocol, e.direction, e.category, e.function, e.function_name,
                   e.unit, e.result)  # sensor.events.signature_of, inlined like alerts.runtime does
            entry = get(key)
            if entry is None:
                table[key] = [1, e.ts]
            else:
                entry[0] += 1
                entry[1] = e.ts

        done = Pipeline(None, on_event=drop if what == "events" else count).replay_file(path)
        result = {"packets": done.packets, "events": done.events, "signatures": len(table)}
    else:
        from protocol_bench import _floor_registry

        result = Pipeline(None, registry=_floor_registry()).replay_file(path).ground_truth()
    print(json.dumps({"seconds": time.perf_counter() - t0, "cpu": time.process_time() - c0, "result": result}))
    return 0


def worker_inprocess(path: str, profile: str | None) -> int:
    """Time ``Pipeline().replay_file`` (imports excluded); print one JSON line."""
    sys.path.insert(0, str(REPO))
    from sensor.pipeline import Pipeline  # the lead's sensor core

    pipeline = Pipeline(None)
    t0 = time.perf_counter()
    c0 = time.process_time()
    if profile and profile.endswith(".html"):
        from pyinstrument import Profiler

        prof = Profiler(interval=0.0005)
        prof.start()
        result = pipeline.replay_file(path)
        prof.stop()
        Path(profile).write_text(prof.output_html())
        Path(profile).with_suffix(".txt").write_text(prof.output_text(unicode=False, color=False, show_all=False))
    elif profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        result = prof.runcall(pipeline.replay_file, path)
        prof.dump_stats(profile)
        with open(Path(profile).with_suffix(".txt"), "w") as fh:
            st = pstats.Stats(prof, stream=fh).strip_dirs()
            st.sort_stats("tottime").print_stats(40)
            st.sort_stats("cumulative").print_stats(40)
    else:
        result = pipeline.replay_file(path)
    seconds = time.perf_counter() - t0
    cpu = time.process_time() - c0
    print(json.dumps({"seconds": seconds, "cpu": cpu, "result": result.ground_truth()}))
    return 0


def worker_scapy(path: str, limit: int, module: str, classes: str, contrib: str) -> int:
    """Iterate ``PcapReader`` (every packet fully dissected) over the first ``limit`` packets."""
    import importlib

    from scapy.layers.inet import TCP
    from scapy.main import load_contrib
    from scapy.utils import PcapReader

    load_contrib(contrib)
    mod = importlib.import_module(module)
    layers = tuple(getattr(mod, c) for c in classes.split(","))
    n = pdus = 0
    t0 = time.perf_counter()
    c0 = time.process_time()
    with PcapReader(path) as reader:
        for pkt in reader:
            n += 1
            tcp = pkt.getlayer(TCP)
            if tcp is not None:
                layer = tcp.payload
                while isinstance(layer, layers):  # ADU -> PDU -> the next ADU, if scapy found one
                    pdus += 1
                    layer = getattr(layer.payload, "payload", None)
            if n >= limit:
                break
    seconds = time.perf_counter() - t0
    cpu = time.process_time() - c0
    print(json.dumps({"packets": n, "seconds": seconds, "cpu": cpu, "pdus": pdus}))
    return 0


def run_worker(leg: Leg, repeat: int) -> dict[str, Any] | None:
    """Run a worker leg; its own JSON line gives wall and CPU time (imports excluded); RSS is the process's."""
    out = OUT / f".{leg.name.replace(' ', '_')}.json"
    inner = []
    rsss, cpus = [], []
    for _ in range(repeat):
        _wall, cpu, rss, code, tail = run_measured(leg.cmd, out)
        leg.exit = code
        if code != 0:
            leg.note = f"exit {code}: {tail.strip().splitlines()[-1] if tail.strip() else ''}"
            return None
        data = json.loads(out.read_text().strip().splitlines()[-1])
        inner.append(data)
        leg.runs.append(round(data["seconds"], 3))
        rsss.append(rss)
        cpus.append(data.get("cpu", cpu))
    leg.seconds = statistics.median(leg.runs)
    leg.cpu = statistics.median(cpus)
    leg.rss_mb = max(rsss)
    return inner[-1]


# ----------------------------------------------------------------------------------------- comparisons
def compare(entry: dict[str, Any], truth: dict[str, Any], proto: str) -> str:
    """'exact' or what differs, between an inspect/GROUND_TRUTH-shaped entry and the truth."""
    diffs = []
    if entry.get("packets") != truth["packets"]:
        diffs.append(f"packets {entry.get('packets')} vs {truth['packets']}")
    got = entry.get("protocols", {}).get(proto, {})
    want = truth["protocols"][proto]
    if got.get("pdus") != want["pdus"]:
        diffs.append(f"pdus {got.get('pdus')} vs {want['pdus']}")
    gh = {str(k): v for k, v in got.get("func_hist", {}).items() if v}
    if gh != want["func_hist"]:
        keys = sorted(set(gh) | set(want["func_hist"]), key=lambda k: (len(k), k))
        bad = [f"{k}:{gh.get(k, 0)}/{want['func_hist'].get(k, 0)}" for k in keys if gh.get(k, 0) != want["func_hist"].get(k, 0)]
        diffs.append("func " + " ".join(bad[:6]))
    if entry.get("error"):
        diffs.append(f"error: {entry['error']}")
    return "exact" if not diffs else "; ".join(diffs)


def count_tshark_fields(path: Path) -> dict[str, Any]:
    """Packets, PDUs and function histogram from ``-T fields -E occurrence=a`` output (',' aggregator)."""
    packets = pdus = 0
    hist: dict[str, int] = {}
    with open(path, errors="replace") as fh:
        for line in fh:
            packets += 1
            cols = line.rstrip("\n").split("\t")
            if cols[0]:
                pdus += len(cols[0].split(","))
            if len(cols) > 1 and cols[1]:
                for v in cols[1].split(","):
                    hist[v] = hist.get(v, 0) + 1
    return {"packets": packets, "protocols": {"_": {"pdus": pdus, "func_hist": hist}}}


# ---------------------------------------------------------------------------------------------- helpers
def ensure_capture(cap: Capture, packets: int, flows: int, seed: int, path: Path | None) -> tuple[Path, dict]:
    """Generate the capture unless an up-to-date one (same parameters and generator version) exists."""
    path = path or cap.default_path(packets, flows, seed)
    truth_path = path.with_name(path.name + ".truth.json")
    if path.exists() and truth_path.exists():
        truth = json.loads(truth_path.read_text())
        g = truth.get("generator", {})
        if (g.get("version"), g.get("packets"), g.get("flows"), g.get("seed")) == (
            gen_modbus.GENERATOR_VERSION, packets, flows, seed):
            return path, truth
    print(f"generating {path.name} ({packets:,} packets, {flows:,} connections, seed {seed}) ...", file=sys.stderr)
    truth = cap.generate(path, packets, flows, seed)
    print(f"  {truth['generator']['bytes'] / 1e6:.0f} MB in {truth['generator']['seconds']:.1f} s", file=sys.stderr)
    return path, truth


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass

    def first_line(cmd: list[str]) -> str:
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
            return (r.stdout or r.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return ""

    try:
        import scapy

        scapy_version = scapy.__version__
    except ImportError:
        scapy_version = ""
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "tshark": first_line(["tshark", "--version"]),
        "scapy": scapy_version,
        "commit": first_line(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }


def run_in_scratch(cmd: list[str], scratch: Path) -> tuple[float, float, float, int, str]:
    """``run_measured`` in an emptied ``scratch`` folder: a replay writes its store (var/) there, and
    each run starts from none, as a first run does."""
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    return run_measured(cmd, cwd=scratch)


def paired_replay_ratio(path: Path, a: argparse.Namespace) -> dict[str, Any]:
    """Issue 3's ratio from ``inspect`` and ``replay`` run in alternation, ``a.pairs`` times.

    The legs above run each command ``--repeat`` times in a row, inspect's runs minutes before
    replay's: on a shared machine whose speed drifts (here by 15% within minutes) that biases their
    ratio either way. Each pair here runs the two back to back, so both see the same machine; the
    median of the pairs' ratios is what the target is judged on (the range is shown with it)."""
    scratch = OUT / "replay-pairs"
    ratios: list[float] = []
    seconds: list[list[float]] = []  # [inspect, replay] CPU s of each pair: the ratios' raw figures
    for _ in range(a.pairs):
        _, ins_cpu, _, code1, _ = run_measured(icswatch_cmd("inspect", str(path), "--json"))
        cmd = icswatch_cmd("replay", str(path.resolve()), *a.replay_args.split(), "-q")
        _, rep_cpu, _, code2, _ = run_in_scratch(cmd, scratch)
        if code1 not in (0, 3) or code2 not in (0, 3) or not rep_cpu:
            return {"error": f"exit {code1}/{code2}"}
        # CPU time, same packets: throughput ratio = time ratio
        ratios.append(round(ins_cpu / rep_cpu, 3))
        seconds.append([round(ins_cpu, 3), round(rep_cpu, 3)])
    return {"ratios": ratios, "median": round(statistics.median(ratios), 3),
            "min": min(ratios), "max": max(ratios), "cpu_seconds": seconds}


# Where replay's time over inspect goes: each variant leaves one part out (--breakdown).
BREAKDOWN: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("inspect", ("inspect", "--json")),
    ("replay", ("replay", "-q")),
    ("replay --no-rules", ("replay", "-q", "--no-rules")),
    ("replay --no-db", ("replay", "-q", "--no-db")),
    ("pipeline, events dropped", ("--worker", "floor", "{path}", "events")),
    ("pipeline, events counted by signature", ("--worker", "floor", "{path}", "signatures")),
)


def replay_breakdown(path: Path, rounds: int) -> dict[str, Any]:
    """What each part of ``replay`` costs over ``inspect``: the ``BREAKDOWN`` variants run in
    alternation ``rounds`` times (so a drift of the machine's speed spreads over all of them), and the
    medians of their CPU times are subtracted. ``--no-rules`` leaves out the rule engine and so every
    alert; ``--no-db`` the SQLite store (alerts, incidents, context events, the asset inventory's save).
    What ``--no-rules`` still costs over ``inspect`` is the runtime's own per-event work (the signature
    table, the inventory's counts) and the start-up of the alerting path."""
    scratch = OUT / "replay-breakdown"
    cpu: dict[str, list[float]] = {name: [] for name, _ in BREAKDOWN}
    for _ in range(rounds):
        for name, (command, *extra) in BREAKDOWN:
            if command == "--worker":  # this script's in-process floor (its CPU time includes imports, like its peer)
                cmd = [sys.executable, str(Path(__file__).resolve()), command, *(x.format(path=path.resolve()) for x in extra)]
            else:
                cmd = icswatch_cmd(command, str(path.resolve()), *extra)
            _, seconds, _, code, tail = run_in_scratch(cmd, scratch)
            if code not in (0, 3):
                return {"error": f"{name}: exit {code}: {tail[-200:]}"}
            cpu[name].append(round(seconds, 2))
    med = {name: statistics.median(v) for name, v in cpu.items()}
    base = med["inspect"]
    return {
        "rounds": rounds,
        "cpu": cpu,
        "median_cpu": med,
        "of_inspect": {name: round(base / v, 3) for name, v in med.items() if name != "inspect" and not name.startswith("pipeline")},
        "seconds": {
            "runtime without rules (signature table, inventory counts, start-up)": round(med["replay --no-rules"] - base, 2),
            "rules and their alerts": round(med["replay"] - med["replay --no-rules"], 2),
            "SQLite store": round(med["replay"] - med["replay --no-db"], 2),
            "allowed by the 70% target": round(base / TARGETS["replay_vs_inspect"] - base, 2),
            "(floor) counting each event by signature, nothing else": round(
                med["pipeline, events counted by signature"] - med["pipeline, events dropped"], 2),
        },
    }


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 2) if a and b else None


# ------------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--capture", choices=sorted(CAPTURES), default="modbus", help="synthetic capture kind")
    ap.add_argument("--packets", type=int, default=1_000_000, help="packets in the bench capture (default 1M)")
    ap.add_argument("--flows", type=int, default=2000, help="TCP connections in it (default 2,000)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--file", type=Path, help="use this capture instead (no truth comparison unless FILE.truth.json)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per leg; the median is reported (default 1)")
    ap.add_argument("--scapy-packets", type=int, default=100_000, help="prefix timed for scapy (default 100k)")
    ap.add_argument("--no-scapy", action="store_true")
    ap.add_argument("--no-tshark", action="store_true")
    ap.add_argument("--no-inprocess", action="store_true")
    ap.add_argument("--replay", choices=("auto", "yes", "no"), default="auto",
                    help="time `icswatch replay FILE` too (auto: when the command exists)")
    ap.add_argument("--replay-args", default="", help="extra arguments for icswatch replay (one string)")
    ap.add_argument("--pairs", type=int, default=3,
                    help="inspect/replay runs in alternation for issue 3's ratio (default 3; 0: skip)")
    ap.add_argument("--breakdown", type=int, default=0, metavar="N",
                    help="also run replay with parts left out (--no-rules, --no-db) and two in-process floors N "
                         "times in alternation with inspect and replay, and say what each part costs (default 0: skip)")
    ap.add_argument("--no-rss-check", action="store_true", help="skip the peak-RSS run on a 2x capture")
    ap.add_argument("--profile", nargs="?", const="cprofile", choices=("cprofile", "pyinstrument"),
                    help="profile the in-process run (bench/out/profile.*)")
    ap.add_argument("--json", type=Path, metavar="OUT", help="write the results as JSON")
    ap.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                    help="rates and ratios from each process's CPU time (default: robust on a shared machine) "
                         "or from wall time")
    ap.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)

    if a.worker:
        kind, *rest = a.worker
        if kind == "inprocess":
            return worker_inprocess(rest[0], rest[1] if len(rest) > 1 else None)
        if kind == "scapy":
            return worker_scapy(rest[0], int(rest[1]), rest[2], rest[3], rest[4])
        if kind == "floor":
            return worker_floor(rest[0], rest[1])
        ap.error(f"unknown worker {kind}")

    global CLOCK
    CLOCK = a.clock
    OUT.mkdir(parents=True, exist_ok=True)
    cap = CAPTURES[a.capture]
    info = machine()
    info["bytecode"] = compile_sources()
    started = dt.datetime.now(dt.UTC)
    if a.file:
        path = a.file
        tp = path.with_name(path.name + ".truth.json")
        truth = json.loads(tp.read_text()) if tp.exists() else None
    else:
        path, truth = ensure_capture(cap, a.packets, a.flows, a.seed, None)
    n_packets = truth["packets"] if truth else 0
    legs: dict[str, Leg] = {}
    me = [sys.executable, str(Path(__file__).resolve())]

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    # icswatch inspect (subprocess, what a user runs)
    say("icswatch inspect ...")
    inspect_out = OUT / "inspect.json"
    leg = measure(Leg("icswatch inspect", icswatch_cmd("inspect", str(path), "--json")), a.repeat, inspect_out)
    if leg.exit in (0, 3):
        try:
            result = json.loads(inspect_out.read_text())
            entry = next(iter(result.values()))
            n_packets = n_packets or entry.get("packets", 0)
            rate(leg, entry.get("packets", 0))
            if truth:
                leg.agrees = compare(entry, truth, cap.name)
        except (ValueError, StopIteration) as exc:
            leg.note = f"unreadable output: {exc}"
    legs["inspect"] = leg

    # icswatch in-process (sensor core only, imports excluded)
    if not a.no_inprocess:
        say("icswatch in-process ...")
        prof_arg: list[str] = []
        leg = Leg("icswatch in-process", me + ["--worker", "inprocess", str(path)])
        data = run_worker(leg, a.repeat)
        if data:
            rate(leg, data["result"]["packets"])
            if truth:
                leg.agrees = compare(data["result"], truth, cap.name)
        legs["inprocess"] = leg
        if a.profile:
            say(f"profiling the in-process run ({a.profile}) ...")
            target = OUT / ("profile.html" if a.profile == "pyinstrument" else "profile.prof")
            prof_arg = ["--worker", "inprocess", str(path), str(target)]
            pleg = Leg("profile", me + prof_arg)
            if run_worker(pleg, 1) is not None:
                say(f"  profile: {target} and {target.with_suffix('.txt')} "
                    f"({pleg.seconds:.1f} s under the profiler)")
            else:
                say(f"  profile failed: {pleg.note}")

    # The floors under inspect: what reading alone costs, and the shared path without protocol parsing.
    if not a.no_inprocess:
        for key, what, label in (("floor_read", "read", "floor: read only"),
                                 ("floor_shared", "shared", "floor: shared path")):
            say(f"{label} ...")
            leg = Leg(label, me + ["--worker", "floor", str(path), what])
            data = run_worker(leg, a.repeat)
            if data:
                rate(leg, data["result"]["packets"])
                leg.note = ("capture reader only" if what == "read" else
                            "decode, flows, reassembly, dispatch; analyzers ignore their data")
            legs[key] = leg

    # icswatch replay (detectors, default rules, default outputs), in a scratch folder; and again without
    # the passive asset inventory, to show the rules + alert store apart from it (issue 3's measure)
    want_replay = a.replay == "yes" or (a.replay == "auto" and has_subcommand("replay"))
    if want_replay:
        for key, label, extra in (("replay", "icswatch replay", []),
                                  ("replay_no_assets", "replay --no-assets", ["--no-assets"])):
            say(f"{label} ...")
            scratch = OUT / "replay-run"
            shutil.rmtree(scratch, ignore_errors=True)
            scratch.mkdir(parents=True)
            cmd = icswatch_cmd("replay", str(path.resolve()), *a.replay_args.split(), *extra)
            summary = scratch / "summary.json"
            if help_mentions("replay", "--json-summary"):
                cmd += ["-q", "--json-summary", str(summary)]  # no progress bar; counts to check
            leg = rate(measure(Leg(label, cmd), a.repeat, scratch / "stdout.txt", cwd=scratch), n_packets)
            if summary.exists():
                try:
                    s = json.loads(summary.read_text())
                    proto = s.get("protocols", {}).get(cap.name, {})
                    if truth:
                        want = truth["protocols"][cap.name]["pdus"]
                        leg.agrees = "pdus exact" if proto.get("pdus") == want else f"pdus {proto.get('pdus')} vs {want}"
                    alerts = s.get("alerts", {})
                    leg.note = f"{s.get('events', 0):,} events, {alerts.get('total', 0):,} alerts"
                except (ValueError, AttributeError) as exc:
                    leg.note = f"unreadable summary: {exc}"
            legs[key] = leg
    elif a.replay == "auto":
        legs["replay"] = Leg("icswatch replay", skipped="`icswatch replay` not available yet")
    paired = paired_replay_ratio(path, a) if want_replay and a.pairs > 0 else {}
    breakdown: dict[str, Any] = {}
    if want_replay and a.breakdown > 0:
        say(f"replay breakdown, {a.breakdown} rounds ...")
        breakdown = replay_breakdown(path, a.breakdown)

    # tshark
    if not a.no_tshark and shutil.which("tshark"):
        say("tshark fields ...")
        fields_out = OUT / "tshark-fields.tsv"
        cmd = ["tshark", "-n", "-r", str(path), "-T", "fields"]
        for f in cap.tshark_fields:
            cmd += ["-e", f]
        cmd += ["-E", "occurrence=a"]
        leg = measure(Leg("tshark fields", cmd), a.repeat, fields_out)
        counted = count_tshark_fields(fields_out)
        rate(leg, counted["packets"])
        counted["protocols"] = {cap.name: counted["protocols"]["_"]}
        if truth:
            leg.agrees = compare(counted, truth, cap.name)
        legs["tshark_fields"] = leg
        # tshark -q alone does not dissect (it skips dissection when nothing needs it): a display
        # filter that never matches forces full dissection, with no output.
        say("tshark dissect, no output ...")
        never = f"{cap.tshark_fields[1]} == 0"
        leg = measure(Leg("tshark -q -Y (dissect)", ["tshark", "-n", "-r", str(path), "-q", "-Y", never]), a.repeat)
        legs["tshark_dissect"] = rate(leg, n_packets)
        leg.note = f"-Y '{never}' never matches: full dissection, no output"
        say("tshark -q ...")
        leg = measure(Leg("tshark -q (read only)", ["tshark", "-n", "-r", str(path), "-q"]), a.repeat)
        legs["tshark_q"] = rate(leg, n_packets)
        leg.note = "no dissection: tshark's file-reading floor"
    elif not a.no_tshark:
        legs["tshark_fields"] = Leg("tshark fields", skipped="tshark not installed")

    # scapy, on a prefix
    if not a.no_scapy:
        say(f"scapy on the first {a.scapy_packets:,} packets ...")
        module, classes = cap.scapy_layers
        leg = Leg("scapy PcapReader", me + ["--worker", "scapy", str(path), str(a.scapy_packets), module, classes,
                                             cap.scapy_contrib])
        data = run_worker(leg, a.repeat)
        if data:
            rate(leg, data["packets"])
            leg.extrapolated = data["packets"] < n_packets
            if leg.extrapolated and leg.pkts_per_s:
                leg.note = (f"timed on {data['packets']:,} packets ({data['pdus']:,} Modbus ADU layers), "
                            f"extrapolated: {n_packets / leg.pkts_per_s:,.0f} s ({CLOCK}) for the file")
        legs["scapy"] = leg

    # peak RSS on a capture twice the size
    rss = {}
    if not a.no_rss_check and not a.file and "inspect" in legs and legs["inspect"].exit in (0, 3):
        say("peak-RSS check on a 2x capture ...")
        path2, truth2 = ensure_capture(cap, 2 * a.packets, a.flows, a.seed, None)
        leg2 = measure(Leg("icswatch inspect 2x", icswatch_cmd("inspect", str(path2), "--json")), 1,
                       OUT / "inspect-2x.json")
        rate(leg2, truth2["packets"])
        try:
            leg2.agrees = compare(next(iter(json.loads((OUT / "inspect-2x.json").read_text()).values())), truth2,
                                  cap.name)
        except (ValueError, StopIteration):
            leg2.agrees = "unreadable output"
        legs["inspect_2x"] = leg2
        rss = {"rss_1x_mb": round(legs["inspect"].rss_mb, 1), "rss_2x_mb": round(leg2.rss_mb, 1),
               "growth": ratio(leg2.rss_mb, legs["inspect"].rss_mb)}

    # ratios and targets
    ins = legs["inspect"].pkts_per_s if legs["inspect"].exit in (0, 3) else 0.0
    def pps(key: str) -> float:
        leg = legs.get(key)
        return leg.pkts_per_s if leg and not leg.skipped and leg.exit == 0 else 0.0

    ratios = {
        "inspect_vs_tshark_fields": ratio(ins, pps("tshark_fields")),
        "inspect_vs_tshark_dissect": ratio(ins, pps("tshark_dissect")),
        "inspect_vs_scapy": ratio(ins, pps("scapy")),
        "inprocess_vs_tshark_fields": ratio(pps("inprocess"), pps("tshark_fields")),
        "inprocess_vs_scapy": ratio(pps("inprocess"), pps("scapy")),
        "replay_vs_inspect": ratio(pps("replay"), ins),
        "replay_no_assets_vs_inspect": ratio(pps("replay_no_assets"), ins),
        "floor_shared_vs_tshark_fields": ratio(pps("floor_shared"), pps("tshark_fields")),
        "floor_shared_vs_scapy": ratio(pps("floor_shared"), pps("scapy")),
        "floor_read_vs_scapy": ratio(pps("floor_read"), pps("scapy")),
    }
    targets = {}

    def target(name: str, value: float | None, goal: float, higher: bool = True) -> None:
        if value is None:
            return
        targets[name] = {"value": round(value, 2), "target": goal,
                         "ok": value >= goal if higher else value <= goal}

    target("inspect >= 10x tshark fields", ratios["inspect_vs_tshark_fields"], TARGETS["vs_tshark_fields"])
    target("inspect >= 100x scapy", ratios["inspect_vs_scapy"], TARGETS["vs_scapy"])
    target("inspect >= 300,000 packets/s", ins or None, TARGETS["pkts_per_s"])
    if legs["inspect"].rss_mb:
        peak = max(legs["inspect"].rss_mb, legs["inspect_2x"].rss_mb if "inspect_2x" in legs else 0)
        target("inspect peak RSS <= 150 MB", peak, TARGETS["rss_mb"], higher=False)
    if rss.get("growth"):
        target("peak RSS 2x file / 1x file <= 1.25", rss["growth"], TARGETS["rss_growth"], higher=False)
    if paired.get("median"):
        ratios["replay_vs_inspect_paired"] = paired["median"]
        target(f"replay >= 70% of inspect (paired, {paired['min']:.2f}-{paired['max']:.2f})", paired["median"],
               TARGETS["replay_vs_inspect"])
    target("replay >= 70% of inspect" + (" (legs above)" if paired.get("median") else ""),
           ratios["replay_vs_inspect"], TARGETS["replay_vs_inspect"])
    target("  (rules + store, --no-assets) >= 70%", ratios["replay_no_assets_vs_inspect"], TARGETS["replay_vs_inspect"])
    # Can the targets be met at all? The floors do no protocol work: below a target, no parser can reach it.
    target("  (floor) shared path alone >= 10x tshark", ratios["floor_shared_vs_tshark_fields"], TARGETS["vs_tshark_fields"])
    target("  (floor) shared path alone >= 100x scapy", ratios["floor_shared_vs_scapy"], TARGETS["vs_scapy"])
    target("  (floor) reading alone >= 100x scapy", ratios["floor_read_vs_scapy"], TARGETS["vs_scapy"])

    report = {
        "date": started.isoformat(timespec="seconds"),
        "seconds": round((dt.datetime.now(dt.UTC) - started).total_seconds(), 1),
        "machine": {**info, "loadavg_end": [round(x, 2) for x in os.getloadavg()]},
        "clock": CLOCK,
        "capture": {"path": str(path), "packets": n_packets, "truth": truth},
        "legs": {k: asdict(v) for k, v in legs.items()},
        "ratios": ratios,
        "rss_check": rss,
        "replay_pairs": paired,
        "replay_breakdown": breakdown,
        "targets": targets,
    }
    print_report(report, legs, ins)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(report, indent=1) + "\n")
        print(f"JSON: {a.json}", file=sys.stderr)
    if a.check and not all(t["ok"] for t in targets.values()):
        return 1
    return 0


def print_report(report: dict[str, Any], legs: dict[str, Leg], ins: float) -> None:
    m = report["machine"]
    cap = report["capture"]
    tshark = (re.findall(r"\d+\.\d+\.\d+", m["tshark"]) or ["?"])[0]
    head = (f"{cap['packets']:,} packets, {Path(cap['path']).name}; {m['cpu']} x{m['cores']}, "
            f"load {m['loadavg_start']} -> {m['loadavg_end']}; python {m['python']}, "
            f"tshark {tshark}, scapy {m['scapy']}, commit {m['commit']}")
    rows = []
    for leg in legs.values():
        if leg.skipped:
            rows.append([leg.name, "", "", "", "", "", "", "", "skipped: " + leg.skipped])
            continue
        if leg.exit not in (0, 3):
            rows.append([leg.name, "", "", "", "", "", "", "", leg.note])
            continue
        speedup = f"{ins / leg.pkts_per_s:,.1f}x" if leg.pkts_per_s and ins else ""
        rows.append([
            leg.name,
            f"{leg.packets:,}" + ("*" if leg.extrapolated else ""),
            f"{leg.seconds:,.2f}",
            f"{leg.cpu:,.2f}",
            f"{leg.pps_cpu:,.0f}",
            f"{leg.pps_wall:,.0f}",
            f"{leg.rss_mb:,.0f}",
            speedup,
            (leg.agrees or "") + (("; " if leg.agrees else "") + leg.note if leg.note else ""),
        ])
    clock = report["clock"]
    cols = ["leg", "packets", "wall s", "cpu s", "pkt/s (cpu)", "pkt/s (wall)", "peak RSS MB",
            f"inspect is ({clock})", "vs truth / note"]
    try:
        from rich.console import Console
        from rich.table import Table

        console = Console(width=max(140, shutil.get_terminal_size((140, 24)).columns))
        t = Table(title="icswatch benchmark", caption=head)
        for i, c in enumerate(cols):
            t.add_column(c, justify="right" if 0 < i < 8 else "left", overflow="fold")
        for r in rows:
            t.add_row(*r)
        console.print(t)
        tt = Table(title="targets")
        for c in ("target", "value", "ok"):
            tt.add_column(c)
        for name, v in report["targets"].items():
            tt.add_row(name, f"{v['value']:,}", "[green]yes[/]" if v["ok"] else "[red]NO[/]")
        console.print(tt)
    except ImportError:  # rich is a dependency, but the bench should still print without it
        print(head)
        print(" | ".join(cols))
        for r in rows:
            print(" | ".join(r))
        for name, v in report["targets"].items():
            print(f"{name}: {v['value']} {'ok' if v['ok'] else 'MISSED'}")
    breakdown = report.get("replay_breakdown") or {}
    if breakdown.get("seconds"):
        print(f"replay breakdown (CPU s over inspect, medians of {breakdown['rounds']} rounds; "
              f"inspect {breakdown['median_cpu']['inspect']:.2f} s):")
        for what, seconds in breakdown["seconds"].items():
            print(f"  {seconds:6.2f}  {what}")
        print("  of inspect: " + ", ".join(f"{k} {v:.2f}" for k, v in breakdown["of_inspect"].items()))
    elif breakdown.get("error"):
        print(f"replay breakdown failed: {breakdown['error']}")
    if any(leg.extrapolated for leg in legs.values()):
        print("* rate measured on a prefix of the file and extrapolated (see note)")


if __name__ == "__main__":
    sys.exit(main())
