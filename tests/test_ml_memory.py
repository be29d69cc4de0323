"""Training on a million events stays in bounded memory (issue 6: under 1 GB RSS).

Run in a child process so the figure is the training's own peak RSS, not the test session's. A memory
bound, not a timing: the timeout only guards against a hang."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import json, resource, sys
sys.path.insert(0, sys.argv[1])
from detectors.ml.dataset import RowBuffer
from detectors.ml.features import FeatureExtractor, WindowConfig
from detectors.ml.models import ModelSpec, fit_model
from sensor.events import IcsEvent

N = 1_000_000
PAIRS = 400  # 400 masters -> PLC pairs, each polling ~1.25 times a second: 1M events ~ 1000 s

def events():
    t = 1_700_000_000.0
    for i in range(N // 2):
        k = i % PAIRS
        t += 0.002
        src, dst = f"10.1.{k // 200}.{k % 200}", f"10.2.{k // 200}.{k % 200}"
        yield IcsEvent(t, "modbus", src, 40000 + k, dst, 502, "tcp", "request", 3, "read_holding_registers",
                       "read", 1, 100 * (k % 7), 10, size=12, flow_id=k + 1)
        yield IcsEvent(t + 0.001, "modbus", dst, 502, src, 40000 + k, "tcp", "response", 3,
                       "read_holding_registers", "read", 1, 100 * (k % 7), 10, latency=0.001, size=29, flow_id=k + 1)

fx = FeatureExtractor(WindowConfig())
buf = RowBuffer(len(fx.names), cap=50_000)
peak_buffer = 0
for e in events():
    closed = fx.observe(e)
    if closed:
        for w in closed:
            buf.add(w.values)
    peak_buffer = max(peak_buffer, len(fx._buf))
for w in fx.finish():
    buf.add(w.values)
fitted = fit_model(buf.matrix(), ModelSpec())
rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"events": fx.stats()["events"], "windows": buf.seen, "rows": buf.n, "rss_mb": rss_kb / 1024,
                  "peak_buffer_bytes": peak_buffer, "pairs": len(fx.pairs), "threshold": fitted.threshold}))
"""


@pytest.mark.timeout(300)
def test_training_on_a_million_events_stays_under_1_gb():
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(REPO)], capture_output=True, text=True, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["events"] == 1_000_000
    assert r["windows"] > 10_000 and r["pairs"] == 400
    assert r["rss_mb"] < 1024, r
    assert r["peak_buffer_bytes"] <= 80 * 262_144  # the per-hop record buffer is bounded (~21 MB)
