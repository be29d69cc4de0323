"""Replaying a hostile capture as a user does, and measuring that process alone (peak RSS, CPU time).

Shared by tests/test_hostile.py (CI-size captures, small caps) and bench/hostile.py (full size, the
default caps): ``replay_measured`` runs ``icswatch replay`` in its own process; ``memory_bound`` is the
peak RSS the caps allow such a replay.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# What one flow-table entry costs (flow, session, two TCP streams, an analyzer, both dict keys): about
# 4 KiB measured with tracemalloc on a SYN flood (docs/hostile-traffic.md); counted twice for margin.
FLOW_COST = 8 << 10
# Held bytes live in bytes objects, bytearrays that grow by doubling, and concatenation temporaries.
HELD_FACTOR = 2
# Everything else a replay holds that no cap is about: rule state, event batches, SQLite's page cache.
SLACK = 24 << 20


def memory_bound(base_rss: int, flows: int, max_flows: int, max_held_bytes: int) -> int:
    """Bytes of peak RSS a hostile replay may reach: the victims-only replay (``base_rss``) plus what
    the caps allow: ``flows`` flow-table entries at most ``max_flows``, and ``max_held_bytes``
    (buffered plus fragment bytes) held."""
    return base_rss + min(flows, max_flows) * FLOW_COST + HELD_FACTOR * max_held_bytes + SLACK


# A child's peak RSS (ru_maxrss) starts at its parent's high-water mark: Linux carries it over the
# vfork+exec that subprocess uses. Measured from pytest, late in a run, every replay would "peak" at
# pytest's own size. A tiny Python process in between starts the replay and reports its rusage alone.
RUSAGE_WRAPPER = (
    "import os, subprocess, sys\n"
    "p = subprocess.Popen(sys.argv[1:])\n"
    "_, status, ru = os.wait4(p.pid, 0)\n"
    "sys.stderr.write(f'\\nRUSAGE {ru.ru_maxrss} {ru.ru_utime + ru.ru_stime}\\n')\n"
    "sys.exit(os.waitstatus_to_exitcode(status))\n"
)


@dataclass
class Measured:
    returncode: int
    rss: int  # peak resident set size of the replay process, bytes
    cpu: float  # user + system CPU seconds of the replay process
    wall: float  # seconds, the wrapper's start-up included
    stderr: str  # the replay's own, without the wrapper's report


def replay_measured(capture: Path, cwd: Path, options: Sequence[str]) -> Measured:
    """``icswatch replay CAPTURE -q OPTIONS...`` in its own process (working directory ``cwd``, output
    discarded), measured alone through ``RUSAGE_WRAPPER``."""
    cmd = [sys.executable, "-c", RUSAGE_WRAPPER, sys.executable, "-m", "icswatch", "replay", str(capture), "-q"]
    cmd += options
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False)
    wall = time.perf_counter() - t0
    stderr, _, usage = proc.stderr.rpartition("\nRUSAGE ")
    maxrss_kb, cpu = usage.split()
    return Measured(proc.returncode, int(maxrss_kb) * 1024, float(cpu), wall, stderr)
