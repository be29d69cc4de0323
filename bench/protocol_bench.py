#!/usr/bin/env python3
"""Per-protocol throughput: icswatch against tshark, in one run, on one synthetic capture per protocol.

Issue 4 asks each protocol's throughput to be at least 10x tshark's on the same file in the same run.
For every protocol asked for (default: dnp3, s7comm, iec104, enip, bacnet, opcua) this script

1. generates the capture with ``bench/gen_protocols.py`` (cached in ``bench/out/``: regenerated only
   when the parameters or the generator version change);
2. times ``python -m icswatch inspect FILE --json`` as its own process (what a user runs, start-up
   included) and ``sensor.pipeline.Pipeline().replay_file`` inside a worker process (imports
   excluded, the sensor core alone), and tshark with that protocol's ground-truth fields (those of
   ``shared/tools/gen_ground_truth.sh``, ``-E occurrence=a``);
3. counts tshark's output the way the ground-truth script does and checks that packets, PDUs and
   function histograms agree three ways: icswatch, tshark and the generator's truth. A fast but
   wrong parser would be worthless, so disagreement is printed next to the speed (and fails the
   run with ``--check``).

Rates use each process's CPU time (user + system, from ``os.wait4``'s rusage of that process; the
in-process leg measures its own ``time.process_time``): the machine is shared and every leg is
single-threaded, so CPU time is the one-core cost; wall-clock rates are shown too. The ratio that
counts is ``inspect`` against ``tshark`` measured in the same run.

    python bench/protocol_bench.py                         # every protocol, 300k packets each
    python bench/protocol_bench.py dnp3 opcua --packets 100000 --repeat 3
    python bench/protocol_bench.py --json bench/out/protocols.json --check
    python bench/protocol_bench.py s7comm --profile        # + cProfile of the in-process run
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
OUT = BENCH / "out"
WORK = OUT / "protocols"  # this bench's scratch files (run_bench.py uses OUT's top level)
sys.path.insert(0, str(BENCH))

import gen_protocols  # bench/ is not a package: imported from its folder

TARGET_VS_TSHARK = 10.0
PROTOCOLS = ("dnp3", "s7comm", "iec104", "enip", "bacnet", "opcua")

# protocol -> [(reported protocol, PDU field, [(function field, key prefix)])], as gen_ground_truth.sh
TSHARK_FIELDS: dict[str, list[tuple[str, str, list[tuple[str, str]]]]] = {
    "dnp3": [("dnp3", "dnp3.start", [("dnp3.al.func", "")])],
    "s7comm": [("s7comm", "s7comm.header.rosctr", [("s7comm.param.func", "")]),
               ("cotp", "cotp.type", [("cotp.type", "")])],
    "iec104": [("iec104", "iec60870_104.type", [("iec60870_104.type", "apci:"), ("iec60870_asdu.typeid", "asdu:")])],
    "enip": [("enip", "enip.command", [("enip.command", "")]), ("cip", "cip.sc", [("cip.sc", "")])],
    "bacnet": [("bacnet", "bacapp.type", [("bacapp.confirmed_service", "confirmed:"),
                                          ("bacapp.unconfirmed_service", "unconfirmed:")])],
    "opcua": [("opcua", "opcua.transport.type", [("opcua.servicenodeid.numeric", "")])],
}


# ------------------------------------------------------------------------------------------- counting
def tshark_fields(proto: str) -> list[str]:
    """The distinct tshark fields of a protocol, in order."""
    out: list[str] = []
    for _name, pdu, funcs in TSHARK_FIELDS[proto]:
        for f in [pdu] + [ff for ff, _ in funcs]:
            if f not in out:
                out.append(f)
    return out


def count_tshark(tsv: Path, proto: str) -> dict[str, Any]:
    """Packets, PDUs and function histograms from ``-T fields -E occurrence=a -E aggregator='|'`` output."""
    fields = tshark_fields(proto)
    col = {f: i for i, f in enumerate(fields)}
    packets = 0
    pdus: Counter[str] = Counter()
    hist: dict[str, Counter[str]] = {name: Counter() for name, _, _ in TSHARK_FIELDS[proto]}
    with open(tsv, errors="replace") as fh:
        for line in fh:
            packets += 1
            cols = line.rstrip("\n").split("\t")
            cols += [""] * (len(fields) - len(cols))
            for name, pdu, funcs in TSHARK_FIELDS[proto]:
                v = cols[col[pdu]]
                if v:
                    pdus[name] += len(v.split("|"))
                for ff, prefix in funcs:
                    v = cols[col[ff]]
                    if v:
                        for key in v.split("|"):
                            hist[name][prefix + key] += 1
    return {"packets": packets, "protocols": {name: {"pdus": pdus[name], "func_hist": dict(hist[name])}
                                              for name, _, _ in TSHARK_FIELDS[proto]}}


def norm_key(key: str) -> str:
    """``0x4c`` == ``76``, ``apci:0x00000000`` == ``apci:0`` (as shared/tools/gt_compare.py normalises)."""
    prefix, _, value = key.rpartition(":")
    try:
        number = int(value.strip(), 0)
    except ValueError:
        return key
    return f"{prefix}:{number}" if prefix else str(number)


def differences(a: dict[str, Any], b: dict[str, Any], protos: list[str]) -> list[str]:
    """What differs between two GROUND_TRUTH-shaped entries on ``protos`` (empty: they agree)."""
    diffs = []
    if a.get("packets") != b.get("packets"):
        diffs.append(f"packets {a.get('packets')} vs {b.get('packets')}")
    for p in protos:
        pa = a.get("protocols", {}).get(p, {})
        pb = b.get("protocols", {}).get(p, {})
        if pa.get("pdus", 0) != pb.get("pdus", 0):
            diffs.append(f"{p} pdus {pa.get('pdus', 0)} vs {pb.get('pdus', 0)}")
        ha: Counter[str] = Counter()
        hb: Counter[str] = Counter()
        for k, v in pa.get("func_hist", {}).items():
            ha[norm_key(str(k))] += v
        for k, v in pb.get("func_hist", {}).items():
            hb[norm_key(str(k))] += v
        bad = [f"{k}:{ha[k]}/{hb[k]}" for k in sorted(set(ha) | set(hb)) if ha[k] != hb[k]]
        if bad:
            diffs.append(f"{p} func " + " ".join(bad[:8]) + (" ..." if len(bad) > 8 else ""))
    if a.get("error"):
        diffs.append(f"error: {a['error']}")
    return diffs


def reported(proto: str) -> list[str]:
    return [name for name, _, _ in TSHARK_FIELDS[proto]]


# ------------------------------------------------------------------------------------------- captures
def ensure_capture(proto: str, packets: int, flows: int | None, seed: int) -> tuple[Path, dict[str, Any]]:
    """The cached capture of ``proto`` (regenerated when parameters or generator version differ)."""
    flows = flows or gen_protocols.GENERATORS[proto][1]
    path = gen_protocols.default_path(proto, packets, flows, seed)
    truth_path = path.with_name(path.name + ".truth.json")
    if path.exists() and truth_path.exists():
        truth = json.loads(truth_path.read_text())
        g = truth.get("generator", {})
        if (g.get("version"), g.get("packets"), g.get("flows"), g.get("seed")) == (
                gen_protocols.GENERATOR_VERSION, packets, flows, seed):
            return path, truth
    say(f"generating {path.name} ...")
    truth = gen_protocols.generate(proto, path, packets, flows, seed)
    say(f"  {truth['generator']['bytes'] / 1e6:.0f} MB in {truth['generator']['seconds']:.1f} s")
    return path, truth


# ------------------------------------------------------------------------------------------ processes
@dataclass
class Leg:
    name: str
    cmd: list[str] = field(default_factory=list)
    packets: int = 0
    wall: float = 0.0  # median over --repeat
    cpu: float = 0.0  # user + system of the process (or process_time inside the worker)
    rss_mb: float = 0.0
    pps_cpu: float = 0.0
    pps_wall: float = 0.0
    runs_cpu: list[float] = field(default_factory=list)
    exit: int = 0
    note: str = ""


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_measured(cmd: list[str], stdout: Path, repo: Path = REPO) -> tuple[float, float, float, int, str]:
    """Run ``cmd`` with stdout to a file; (wall s, CPU s, peak RSS MB, exit code, stderr tail) of that child.

    ``repo`` is the checkout whose code runs (first on PYTHONPATH, and the working directory).
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = str(repo) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    err_path = stdout.with_suffix(stdout.suffix + ".stderr")
    with open(stdout, "wb") as out, open(err_path, "wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env, cwd=repo)
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    tail = "\n".join(x for x in err_path.read_text(errors="replace").splitlines() if "Running as user" not in x)
    return wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024.0, code, tail[-400:]


def measure(leg: Leg, repeat: int, stdout: Path, packets: int, inner: bool = False,
            repo: Path = REPO) -> dict[str, Any] | None:
    """Run a leg ``repeat`` times; medians. ``inner``: the process prints its own timing as a JSON line."""
    walls, cpus, data = [], [], None
    for _ in range(repeat):
        wall, cpu, rss, code, tail = run_measured(leg.cmd, stdout, repo)
        leg.exit = code
        leg.rss_mb = max(leg.rss_mb, rss)
        if code not in (0, 3):
            leg.note = f"exit {code}: {tail.strip().splitlines()[-1] if tail.strip() else ''}"
            return None
        if inner:
            data = json.loads(stdout.read_text().strip().splitlines()[-1])
            wall, cpu = data["seconds"], data["cpu"]
        walls.append(wall)
        cpus.append(cpu)
    leg.wall, leg.cpu = statistics.median(walls), statistics.median(cpus)
    leg.runs_cpu = [round(c, 3) for c in cpus]
    leg.packets = packets
    leg.pps_cpu = packets / leg.cpu if leg.cpu else 0.0
    leg.pps_wall = packets / leg.wall if leg.wall else 0.0
    return data


def _floor_registry() -> Any:
    """The default registry with every analyzer replaced by one that ignores its data.

    Replaying a capture with it costs what the shared path costs (capture reader, decode, flow
    table, reassembly, the per-packet loop) and nothing of the protocol modules: the floor under
    any protocol's own optimisation.
    """
    from dataclasses import replace

    from sensor.protocols import Registry, discover
    from sensor.protocols.base import Analyzer

    class IgnoringAnalyzer(Analyzer):
        def feed(self, from_client: bool, data: bytes, ts: float) -> None:
            return None

    return Registry([replace(spec, analyzer=IgnoringAnalyzer) for spec in discover()])


def worker_inprocess(mode: str, path: str, profile: str | None) -> int:
    """Time ``Pipeline().replay_file`` inside this process (imports excluded); print one JSON line.

    ``mode`` is ``run`` (the real analyzers) or ``floor`` (analyzers that ignore their data). The
    sensor imported is the one first on PYTHONPATH (``run_measured`` puts the checkout under test there).
    """
    from sensor.pipeline import Pipeline

    pipeline = Pipeline(None, registry=_floor_registry() if mode == "floor" else None)
    t0, c0 = time.perf_counter(), time.process_time()
    if profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        result = prof.runcall(pipeline.replay_file, path)
        with open(profile, "w") as fh:
            st = pstats.Stats(prof, stream=fh).strip_dirs()
            st.sort_stats("tottime").print_stats(35)
            st.sort_stats("cumulative").print_stats(35)
    else:
        result = pipeline.replay_file(path)
    print(json.dumps({"seconds": time.perf_counter() - t0, "cpu": time.process_time() - c0,
                      "result": result.ground_truth(),
                      "anomalies": {k: v for k, v in sorted(result.counters.items()) if v and not k.startswith(
                          ("flows_", "tcp_"))}}))
    return 0


# ----------------------------------------------------------------------------------------------- main
def bench_protocol(proto: str, a: argparse.Namespace) -> dict[str, Any]:
    path, truth = ensure_capture(proto, a.packets, a.flows, a.seed)
    n = truth["packets"]
    names = reported(proto)
    me = [sys.executable, str(Path(__file__).resolve())]
    legs: dict[str, Leg] = {}
    agree: dict[str, str] = {}

    say(f"[{proto}] icswatch inspect ...")
    leg = legs["inspect"] = Leg("icswatch inspect", [sys.executable, "-m", "icswatch", "inspect", str(path), "--json"])
    out = WORK / f"{proto}-inspect.json"
    ours: dict[str, Any] | None = None
    measure(leg, a.repeat, out, n)
    if leg.exit in (0, 3):
        ours = next(iter(json.loads(out.read_text()).values()))
        agree["inspect vs truth"] = "; ".join(differences(ours, truth, names)) or "exact"

    anomalies: dict[str, int] = {}
    if not a.no_inprocess:
        say(f"[{proto}] icswatch in-process ...")
        leg = legs["inprocess"] = Leg("icswatch in-process", me + ["--worker", "run", str(path)])
        data = measure(leg, a.repeat, WORK / f"{proto}-inprocess.json", n, inner=True)
        if data:
            anomalies = data["anomalies"]
        if a.floor:
            say(f"[{proto}] shared-path floor (analyzers ignore their data) ...")
            leg = legs["floor"] = Leg("shared path only", me + ["--worker", "floor", str(path)])
            measure(leg, a.repeat, WORK / f"{proto}-floor.json", n, inner=True)
        if a.profile:
            say(f"[{proto}] profiling ...")
            prof = WORK / f"{proto}-profile.txt"
            measure(Leg("profile", me + ["--worker", "run", str(path), str(prof)]), 1, WORK / f"{proto}-profile.json",
                    n, inner=True)
            say(f"  {prof}")

    if a.baseline:
        # The same two legs with another checkout's code (e.g. the commit before an optimisation), in
        # this run, on this file: a before/after figure immune to the machine's load changing between runs.
        say(f"[{proto}] baseline ({a.baseline}) inspect and in-process ...")
        leg = legs["base_inspect"] = Leg("baseline inspect", [sys.executable, "-m", "icswatch", "inspect", str(path),
                                                               "--json"])
        out = WORK / f"{proto}-base-inspect.json"
        measure(leg, a.repeat, out, n, repo=a.baseline)
        if leg.exit in (0, 3):
            agree["baseline vs truth"] = "; ".join(
                differences(next(iter(json.loads(out.read_text()).values())), truth, names)) or "exact"
        if not a.no_inprocess:
            leg = legs["base_inprocess"] = Leg("baseline in-process", me + ["--worker", "run", str(path)])
            measure(leg, a.repeat, WORK / f"{proto}-base-inprocess.json", n, inner=True, repo=a.baseline)

    if not a.no_tshark and shutil.which("tshark"):
        say(f"[{proto}] tshark fields ...")
        cmd = ["tshark", "-n", "-r", str(path), "-T", "fields", "-E", "occurrence=a", "-E", "aggregator=|"]
        for f in tshark_fields(proto):
            cmd += ["-e", f]
        leg = legs["tshark"] = Leg("tshark fields", cmd)
        tsv = WORK / f"{proto}-tshark.tsv"
        measure(leg, a.repeat, tsv, n)
        if leg.exit == 0:
            theirs = count_tshark(tsv, proto)
            agree["tshark vs truth"] = "; ".join(differences(theirs, truth, names)) or "exact"
            if ours is not None:
                agree["inspect vs tshark"] = "; ".join(differences(ours, theirs, names)) or "exact"
            tsv.unlink()  # hundreds of MB of text: counted, not kept

    def ratio(x: str, y: str) -> float | None:
        lx, ly = legs.get(x), legs.get(y)
        return round(lx.pps_cpu / ly.pps_cpu, 2) if lx and ly and lx.pps_cpu and ly.pps_cpu else None

    return {
        "protocol": proto,
        "capture": {"path": str(path), "packets": n, "bytes": truth["generator"]["bytes"],
                    "pdus": {p: truth["protocols"][p]["pdus"] for p in names}},
        "legs": {k: asdict(v) for k, v in legs.items()},
        "ratios": {"inspect_vs_tshark": ratio("inspect", "tshark"), "inprocess_vs_tshark": ratio("inprocess", "tshark"),
                   "floor_vs_tshark": ratio("floor", "tshark"),
                   "baseline_inspect_vs_tshark": ratio("base_inspect", "tshark"),
                   "inspect_vs_baseline": ratio("inspect", "base_inspect"),
                   "inprocess_vs_baseline": ratio("inprocess", "base_inprocess")},
        "agreement": agree,
        "anomalies": anomalies,
    }


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((x.split(":", 1)[1].strip() for x in fh if x.startswith("model name")), "")
    except OSError:
        pass
    tshark = ""
    if shutil.which("tshark"):
        tshark = subprocess.run(["tshark", "--version"], capture_output=True, text=True, check=False).stdout.split("\n")[0]
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=False).stdout.strip()
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "tshark": tshark,
            "commit": commit, "loadavg_start": [round(x, 2) for x in os.getloadavg()]}


def print_table(results: list[dict[str, Any]]) -> None:
    """Markdown tables (they go into bench/README.md as printed): speed and agreement, then the
    before/after and shared-path columns when ``--baseline`` / ``--floor`` were asked for."""

    def x(v: float | None) -> str:
        return f"{v:.2f}x" if v is not None else "-"

    print("| protocol | packets | PDUs | inspect CPU s | inspect pkt/s | in-process pkt/s | tshark CPU s "
          "| tshark pkt/s | inspect / tshark | PDU agreement |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in results:
        legs = r["legs"]
        ins, inp, ts = legs.get("inspect", {}), legs.get("inprocess", {}), legs.get("tshark", {})
        pdus = ", ".join(f"{p} {v:,}" for p, v in r["capture"]["pdus"].items())
        agreement = "; ".join(f"{k}: {v}" for k, v in r["agreement"].items())
        print(f"| {r['protocol']} | {r['capture']['packets']:,} | {pdus} | {ins.get('cpu', 0):.2f} | "
              f"{ins.get('pps_cpu', 0):,.0f} | {inp.get('pps_cpu', 0):,.0f} | {ts.get('cpu', 0):.2f} | "
              f"{ts.get('pps_cpu', 0):,.0f} | **{x(r['ratios']['inspect_vs_tshark'])}** | {agreement} |")
        if r["anomalies"]:
            print(f"|  | anomalies: {', '.join(f'{k} {v}' for k, v in r['anomalies'].items())} | | | | | | | | |")
    if any("base_inspect" in r["legs"] or "floor" in r["legs"] for r in results):
        print()
        print("| protocol | baseline inspect pkt/s | baseline / tshark | inspect / tshark | inspect speed-up "
              "| in-process speed-up | shared path only pkt/s | shared path / tshark (ceiling) |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for r in results:
            legs, ra = r["legs"], r["ratios"]
            print(f"| {r['protocol']} | {legs.get('base_inspect', {}).get('pps_cpu', 0):,.0f} | "
                  f"{x(ra['baseline_inspect_vs_tshark'])} | {x(ra['inspect_vs_tshark'])} | "
                  f"{x(ra['inspect_vs_baseline'])} | {x(ra['inprocess_vs_baseline'])} | "
                  f"{legs.get('floor', {}).get('pps_cpu', 0):,.0f} | {x(ra['floor_vs_tshark'])} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("protocols", nargs="*", metavar="PROTOCOL",
                    help=f"protocols to bench (default: all of {', '.join(PROTOCOLS)})")
    ap.add_argument("--packets", type=int, default=gen_protocols.DEFAULT_PACKETS)
    ap.add_argument("--flows", type=int, help="connections per capture (default: the generator's)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=1, help="runs per leg, the median is reported")
    ap.add_argument("--no-tshark", action="store_true")
    ap.add_argument("--no-inprocess", action="store_true")
    ap.add_argument("--baseline", type=Path, metavar="CHECKOUT",
                    help="also time inspect and in-process with this checkout's code (e.g. `git worktree add "
                         "/tmp/base HEAD~1`): before/after in one run")
    ap.add_argument("--floor", action="store_true",
                    help="also time the shared path alone (every analyzer ignores its data): the ceiling of a protocol's ratio")
    ap.add_argument("--profile", action="store_true", help="cProfile the in-process run: bench/out/protocols/P-profile.txt")
    ap.add_argument("--json", type=Path, metavar="OUT", help="write the results as JSON")
    ap.add_argument("--check", action="store_true",
                    help="exit 1 unless every protocol agrees everywhere and is >= 10x tshark")
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        return worker_inprocess(a.worker[0], a.worker[1], a.worker[2] if len(a.worker) > 2 else None)
    unknown = [p for p in a.protocols if p not in PROTOCOLS]
    if unknown:
        ap.error(f"unknown protocol {', '.join(unknown)} (choose from {', '.join(PROTOCOLS)})")
    if a.baseline and not (a.baseline / "sensor" / "pipeline.py").exists():
        ap.error(f"--baseline {a.baseline}: not a checkout of this project")
    if a.baseline:
        a.baseline = a.baseline.resolve()
    WORK.mkdir(parents=True, exist_ok=True)
    info = machine()
    from run_bench import compile_sources  # bench/ is on sys.path (see gen_protocols above)

    info["bytecode"] = compile_sources()
    started = dt.datetime.now(dt.UTC)
    results = [bench_protocol(p, a) for p in (a.protocols or PROTOCOLS)]
    info["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    print(f"{started:%Y-%m-%d}, commit {info['commit']}, {info['cpu']} x{info['cores']}, python {info['python']}, "
          f"{info['tshark']}; load {info['loadavg_start']} -> {info['loadavg_end']}; rates from CPU time")
    print_table(results)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"date": started.isoformat(timespec="seconds"), "machine": info,
                                      "results": results}, indent=1) + "\n")
        say(f"JSON: {a.json}")
    if a.check:
        ok = all(all(v == "exact" for v in r["agreement"].values()) and (r["ratios"]["inspect_vs_tshark"] or 0)
                 >= TARGET_VS_TSHARK for r in results)
        return 0 if ok else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
