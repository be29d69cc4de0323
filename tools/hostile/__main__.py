"""``python -m tools.hostile SCENARIO [--size N] -o FILE.pcap``: write one hostile capture."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from tools.hostile.scenarios import FULL_SIZE, SCENARIOS


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.hostile", description=__doc__)
    p.add_argument("scenario", choices=sorted(SCENARIOS))
    p.add_argument("--size", type=int, help="scale of the hostile part (default: the full size of bench/hostile.py)")
    p.add_argument("-o", "--out", required=True, help="capture to write (classic pcap)")
    p.add_argument("--victims-out", help="also write the victim traffic alone (for a baseline run)")
    args = p.parse_args(argv)
    size = args.size if args.size is not None else FULL_SIZE[args.scenario]
    t0 = time.perf_counter()
    written = SCENARIOS[args.scenario](Path(args.out), size, Path(args.victims_out) if args.victims_out else None)
    info = {
        "scenario": written.scenario,
        "path": str(written.path),
        "packets": written.packets,
        "hostile_packets": written.hostile_packets,
        "victim_packets": written.victim_packets,
        "victim_alerts": written.victim_alerts,
        "params": written.params,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    print(json.dumps(info, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
