#!/usr/bin/env python3
"""What ML scoring adds to replay time (issue 6: at most 20% of the replay time of the bench capture).

Both legs run on the same capture, alternately (A B A B ...), each in a fresh process (so one leg's
heap and garbage collector state never burden the other), and the replay itself is timed inside the
process (imports and model loading excluded, as start-up is not replay time):

- **replay**: what ``icswatch replay FILE`` does: the sensor pipeline plus the alerting runtime with
  the default rules (outputs left out: disk writes would only add noise to both legs);
- **replay + model**: the same with the ML detector (``--model``) added to the runtime.

The model is trained first on a *different* capture of the same generator (another seed), as a real
deployment would be. Times are CPU times (``time.process_time``): on a shared machine waiting for a core
costs wall time, not CPU; wall times are printed too. The machines are small and shared: the report
gives the median of the per-round ratios (each round runs the two legs back to back: the most robust
figure, and the one checked against the target), and also the ratio of the medians and of the minima.

    python bench/ml_overhead.py                       # 300,000 packets, 3 rounds
    python bench/ml_overhead.py --packets 1000000 --rounds 5 --json bench/out/ml-overhead.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))


def capture(packets: int, seed: int, out_dir: Path) -> Path:
    path = out_dir / f"modbus-{packets}-f2000-s{seed}.pcap"
    if not path.exists():
        print(f"generating {path.name} ...", file=sys.stderr)
        subprocess.run(
            [sys.executable, str(HERE / "gen_modbus.py"), "--packets", str(packets), "--flows", "2000",
             "--seed", str(seed), "-o", str(path), "-q"],
            check=True,
        )  # fmt: skip
    return path


def leg(path: Path, model_path: Path | None) -> tuple[float, float, dict]:
    from alerts.runtime import build_alerting
    from detectors.ml.detector import MlDetector
    from icswatch.config import load_config
    from sensor.pipeline import Pipeline

    cfg = load_config(None, [])
    detectors = [MlDetector.from_file(str(model_path))] if model_path else None
    runtime = build_alerting(cfg, detectors=detectors, outputs=[])
    pipeline = Pipeline(cfg.sensor, on_event=runtime.on_event, on_tick=runtime.on_tick)
    c0, w0 = time.process_time(), time.perf_counter()
    result = pipeline.replay_file(path)
    summary = runtime.close()
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    info = {"packets": result.packets, "events": result.events, "alerts": summary.total}
    if detectors:
        info["ml"] = summary.detectors.get("ml")
    return cpu, wall, info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=300_000)
    ap.add_argument("--train-packets", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--model", default="ensemble", help="model kind to train (default: the default)")
    ap.add_argument("--out", type=Path, default=HERE / "out")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--check", action="store_true", help="exit 1 if scoring adds more than 20%%")
    ap.add_argument("--leg", choices=("replay", "model"), help=argparse.SUPPRESS)  # internal: one timed leg
    ap.add_argument("--capture", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--model-file", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.leg:
        cpu, wall, info = leg(args.capture, args.model_file if args.leg == "model" else None)
        print(json.dumps({"cpu": cpu, "wall": wall, "info": info}))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    bench = capture(args.packets, 1, args.out)
    train = capture(args.train_packets, 2, args.out)
    model_path = args.out / f"ml-bench-{args.model}.joblib"
    print(f"training {args.model} on {train.name} ...", file=sys.stderr)
    subprocess.run(
        [sys.executable, "-m", "icswatch", "train", str(train), "-o", str(model_path), "--model", args.model, "-q"],
        check=True,
        cwd=REPO,
    )
    base_cpu, base_wall, ml_cpu, ml_wall = [], [], [], []
    info: dict = {}

    def child(kind: str) -> tuple[float, float, dict]:
        cmd = [sys.executable, __file__, "--leg", kind, "--capture", str(bench), "--model-file", str(model_path)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO).stdout
        r = json.loads(out.strip().splitlines()[-1])
        return r["cpu"], r["wall"], r["info"]

    child("replay")  # warm-up: page cache
    for r in range(args.rounds):
        c, w, _ = child("replay")
        base_cpu.append(c)
        base_wall.append(w)
        c, w, info = child("model")
        ml_cpu.append(c)
        ml_wall.append(w)
        print(f"round {r + 1}: replay {base_cpu[-1]:.2f} s cpu, replay + model {ml_cpu[-1]:.2f} s cpu", file=sys.stderr)
    b, m = statistics.median(base_cpu), statistics.median(ml_cpu)
    bw, mw = statistics.median(base_wall), statistics.median(ml_wall)
    overhead = (m - b) / b
    overhead_min = (min(ml_cpu) - min(base_cpu)) / min(base_cpu)
    # rounds are pairs run back to back: the median of the per-round ratios is the most robust figure
    overhead_paired = statistics.median((mc - bc_) / bc_ for mc, bc_ in zip(ml_cpu, base_cpu))
    report = {
        "capture": bench.name,
        "packets": info.get("packets"),
        "events": info.get("events"),
        "model": args.model,
        "rounds": args.rounds,
        "replay_cpu_s": round(b, 3),
        "replay_model_cpu_s": round(m, 3),
        "overhead_cpu": round(overhead, 4),
        "overhead_cpu_min": round(overhead_min, 4),
        "overhead_cpu_paired": round(overhead_paired, 4),
        "replay_cpu_all": [round(x, 3) for x in base_cpu],
        "replay_model_cpu_all": [round(x, 3) for x in ml_cpu],
        "replay_wall_s": round(bw, 3),
        "replay_model_wall_s": round(mw, 3),
        "overhead_wall": round((mw - bw) / bw, 4),
        "ml": info.get("ml"),
        "target": "<= 0.20",
        "ok": overhead_paired <= 0.20,
    }
    print(
        f"{bench.name}: {report['packets']:,} packets, {report['events']:,} events; replay {b:.2f} s cpu "
        f"({bw:.2f} s wall), with --model {m:.2f} s cpu ({mw:.2f} s wall): scoring adds "
        f"{100 * overhead_paired:.1f}% cpu (median of the per-round ratios; from the medians {100 * overhead:.1f}%, the "
        f"minima {100 * overhead_min:.1f}%; wall {100 * report['overhead_wall']:.1f}%); "
        f"target <= 20%: {'ok' if report['ok'] else 'MISSED'}"
    )
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return 1 if args.check and not report["ok"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
