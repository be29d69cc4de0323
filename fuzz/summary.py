"""Per-target figures of a fuzz campaign, read from the libFuzzer logs: ``python -m fuzz.summary``.

For each ``var/fuzz/logs/<target>.log``: runs (executed inputs), exec/s, the last ``cov:`` (edges of
the instrumented bytecode reached) and ``ft:`` (features: edges x hit-count buckets, what libFuzzer
keeps inputs for), the corpus size on disk, and the crashes (a Python exception, an invariant
violation, a timeout or out-of-memory, and the reproducer files under ``var/fuzz/crashes/<target>/``).
``--json`` prints the same as JSON. Exit code 1 when any target crashed.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from fuzz.targets import TARGETS

REPO = Path(__file__).resolve().parents[1]
FUZZ_DIR = REPO / "var" / "fuzz"

_STATUS = re.compile(r"^#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)/\S+.*?exec/s: (\d+)", re.MULTILINE)
_DONE = re.compile(r"^Done (\d+) runs in (\d+) second", re.MULTILINE)
_STAT = re.compile(r"^stat::(\w+):\s+(\d+)", re.MULTILINE)
_CRASH = re.compile(
    r"^\s*(=== Uncaught Python exception: ===|==\d+== ERROR: libFuzzer: .*|==\d+==ERROR: libFuzzer: .*|ALARM: .*)$",
    re.MULTILINE,
)
_EXC = re.compile(r"^(\w+(?:\.\w+)*(?:Error|Exception|Violation|error)): (.*)$", re.MULTILINE)


@dataclass
class TargetSummary:
    target: str
    runs: int = 0
    seconds: int = 0
    exec_per_s: int = 0
    cov: int = 0
    ft: int = 0
    corpus: int = 0  # files in var/fuzz/corpus/<target>/
    crashes: int = 0  # reproducer files in var/fuzz/crashes/<target>/
    failure: str = ""  # the first failure the log reports


def summarize(target: str, fuzz_dir: Path = FUZZ_DIR) -> TargetSummary | None:
    log = fuzz_dir / "logs" / f"{target}.log"
    if not log.is_file():
        return None
    text = log.read_text(errors="replace")
    s = TargetSummary(target)
    status = _STATUS.findall(text)
    if status:
        runs, cov, ft, _corp, eps = status[-1]
        s.runs, s.cov, s.ft, s.exec_per_s = int(runs), int(cov), int(ft), int(eps)
    done = _DONE.findall(text)
    if done:
        s.runs, s.seconds = int(done[-1][0]), int(done[-1][1])
    stats = dict(_STAT.findall(text))
    if "number_of_executed_units" in stats:
        s.runs = int(stats["number_of_executed_units"])
    if "average_exec_per_sec" in stats:
        s.exec_per_s = int(stats["average_exec_per_sec"])
    if s.seconds == 0 and s.exec_per_s:
        s.seconds = round(s.runs / s.exec_per_s)
    corpus = fuzz_dir / "corpus" / target
    s.corpus = sum(1 for p in corpus.iterdir() if p.is_file()) if corpus.is_dir() else 0
    crashes = fuzz_dir / "crashes" / target
    s.crashes = sum(1 for p in crashes.iterdir() if p.is_file()) if crashes.is_dir() else 0
    crash = _CRASH.search(text)
    if crash:
        exc = _EXC.search(text, crash.end())
        s.failure = f"{exc.group(1)}: {exc.group(2)[:160]}" if exc else crash.group(1)
        s.crashes = max(s.crashes, 1)
    return s


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fuzz.summary", description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", type=Path, default=FUZZ_DIR, help="campaign directory (default: var/fuzz)")
    ap.add_argument("--json", action="store_true", help="print JSON")
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table (docs/fuzzing.md)")
    args = ap.parse_args(argv)
    rows = [s for s in (summarize(t, args.dir) for t in TARGETS) if s is not None]
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=1))
    elif args.markdown:
        print("| target | seconds | runs | exec/s | cov | ft | corpus | crashes |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            print(
                f"| `{r.target}` | {r.seconds} | {r.runs:,} | {r.exec_per_s:,} | {r.cov:,} | {r.ft:,} | "
                f"{r.corpus:,} | {r.crashes} |"
            )
    else:
        print(
            f"{'target':10s} {'runs':>11s} {'seconds':>8s} {'exec/s':>7s} {'cov':>6s} {'ft':>7s} {'corpus':>7s} crashes"
        )
        for r in rows:
            print(
                f"{r.target:10s} {r.runs:11d} {r.seconds:8d} {r.exec_per_s:7d} {r.cov:6d} {r.ft:7d} {r.corpus:7d} "
                f"{r.crashes}{'  ' + r.failure if r.failure else ''}"
            )
    return 1 if any(r.crashes for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
