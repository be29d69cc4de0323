"""Run fuzz targets one after the other for a given time each: ``python -m fuzz.campaign``.

``make fuzz FUZZ_SECONDS=600 [FUZZ_TARGET=modbus]`` calls this. For each target: the seed corpus is
built first when ``var/fuzz/corpus/<target>/`` is empty (``fuzz.corpus``), then libFuzzer runs for
``--seconds`` with the corpus directory (new inputs are added to it), writing its log to
``var/fuzz/logs/<target>.log`` and reproducers of crashes to ``var/fuzz/crashes/<target>/``. A target
that crashes stops there (libFuzzer's default); the next target still runs. The summary
(``fuzz.summary``) is printed at the end; the exit code is 1 when any target crashed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from fuzz import summary
from fuzz.targets import TARGETS

REPO = Path(__file__).resolve().parents[1]
FUZZ_DIR = REPO / "var" / "fuzz"
TIMEOUT = 10  # seconds one input may take before libFuzzer calls it a hang
MAX_LEN = 8192  # largest input libFuzzer builds (seeds are at most 4 KiB; captures up to 16 KiB)
RSS_LIMIT_MB = 2048


def libfuzzer_args(target: str, seconds: int, fuzz_dir: Path) -> list[str]:
    crashes = fuzz_dir / "crashes" / target
    crashes.mkdir(parents=True, exist_ok=True)
    return [
        f"-max_total_time={seconds}",
        f"-timeout={TIMEOUT}",
        f"-max_len={MAX_LEN if target != 'capture' else 2 * MAX_LEN}",
        f"-rss_limit_mb={RSS_LIMIT_MB}",
        f"-artifact_prefix={crashes}/",
        "-print_final_stats=1",
        str(fuzz_dir / "corpus" / target),
    ]


def run_target(target: str, seconds: int, fuzz_dir: Path = FUZZ_DIR, python: str = sys.executable) -> int:
    corpus = fuzz_dir / "corpus" / target
    if not corpus.is_dir() or not any(corpus.iterdir()):
        from fuzz import corpus as corpus_builder

        corpus_builder.main(["--out", str(fuzz_dir / "corpus"), "--target", target])
    logs = fuzz_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    cmd = [python, "-m", "fuzz", target, *libfuzzer_args(target, seconds, fuzz_dir)]
    with open(logs / f"{target}.log", "w") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        return subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, check=False).returncode


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fuzz.campaign", description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=60, help="seconds per target (default: 60)")
    ap.add_argument("--target", action="append", choices=TARGETS, help="only these targets (repeatable)")
    args = ap.parse_args(argv)
    for target in args.target or TARGETS:
        print(f"fuzzing {target} for {args.seconds} s (log: var/fuzz/logs/{target}.log)", flush=True)
        run_target(target, args.seconds)
    return summary.main([])


if __name__ == "__main__":
    sys.exit(main())
