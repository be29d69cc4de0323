"""bench/soak.py cannot rot: a short run of the same script, every detector and output on, real servers.

The run is a few seconds of replay (a handful of passes), so its memory figures say nothing about leaks:
memory is judged by the hour-long run (docs/soak.md). What this test holds the script to is the rest:
it sets up the baseline, the model, noida-db and the province, replays passes that all yield the same
packets, events and counters, and every store ends with exactly what the sensor produced.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_soak_short_run_passes_its_checks(tmp_path: Path) -> None:
    out = tmp_path / "soak"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "soak.py"),
            "--duration", "8",
            "--interval", "1",
            "--modbus-packets", "4000",
            "--out", str(out),
            # a few seconds of run: early growth (caches, the summary's kept alerts) is not a leak here
            "--max-growth-mb", "200",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,  # the summary's failed checks make a better message than the exit status
    )
    assert (out / "summary.json").is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    failed = {name: c["detail"] for name, c in summary["checks"].items() if not c["ok"]}
    assert not failed, failed
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    # The run did real work on every path the checks compare.
    assert summary["passes"] >= 2
    assert summary["packets"] == summary["passes"] * summary["mix"]["packets_per_pass"]
    counts = summary["counts"]
    assert summary["alerts"] > 0 and counts["es_alerts"] == summary["alerts"]
    assert counts["province_incidents"] > 0 and counts["outbox_pending"] == 0
    assert counts["es_events"] > 0  # the sampled ICS events reached Elasticsearch too
    assert counts["sqlite_assets"] > 0
    assert {"rules", "baseline", "ml"} <= set(summary["detectors"])  # all three detectors ran

    # The time series: one sample per interval, each with the process figures.
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) >= 3
    for s in samples:
        assert s["rss_mb"] > 10 and s["fds"] > 3 and s["threads"] >= 1
    assert samples[-1]["packets"] == summary["packets"]
    passes = [json.loads(line) for line in (out / "passes.jsonl").read_text().splitlines()]
    assert len(passes) == summary["passes"]
    assert len({(p["packets"], p["events"]) for p in passes}) == 1
    assert (out / "samples.csv").read_text().startswith("t,")
