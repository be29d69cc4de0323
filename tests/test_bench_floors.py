"""The in-process floors of bench/run_bench.py report what they did (not how fast: no timing here).

The ``events`` floor drops every event the sensor makes, the ``signatures`` floor counts each under its
signature (the key of alerts.runtime's table). On the generator's capture both must see exactly the
packets and Modbus events of the generator's truth, and the signatures must be those of the runtime:
one per distinct ``sensor.events.signature_of`` of the events.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from bench_testutil import BENCH, load_bench_module

from sensor.events import signature_of
from sensor.pipeline import Pipeline

gen = load_bench_module("gen_modbus")


@pytest.fixture(scope="module")
def capture(tmp_path_factory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("floors") / "small.pcap"
    truth = gen.generate(path, 3000, 30, 3)
    return path, truth


def _floor(path: Path, what: str) -> dict:
    out = subprocess.run(
        [sys.executable, str(BENCH / "run_bench.py"), "--worker", "floor", str(path), what],
        capture_output=True, text=True, check=True, timeout=120,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_events_floor_sees_every_packet_and_event(capture):
    path, truth = capture
    result = _floor(path, "events")["result"]
    assert result["packets"] == truth["packets"]
    events: list = []
    Pipeline(None, on_event=events.append).replay_file(path)
    assert result["events"] == len(events) > 0
    assert result["signatures"] == 0


def test_signatures_floor_counts_the_runtime_signatures(capture):
    path, _ = capture
    result = _floor(path, "signatures")["result"]
    events: list = []
    Pipeline(None, on_event=events.append).replay_file(path)
    assert result["events"] == len(events)
    assert result["signatures"] == len({signature_of(e) for e in events if e.flow_id})
    assert 0 < result["signatures"] < result["events"]


def test_pairs_report_each_pairs_cpu_seconds_and_their_ratio(capture, tmp_path, monkeypatch) -> None:
    """Issue 3's ratio comes from inspect and replay run back to back: each pair's CPU seconds are kept
    with it, and every ratio is inspect's seconds over replay's (same packets: the throughput ratio)."""
    import argparse

    bench = load_bench_module("run_bench")
    monkeypatch.setattr(bench, "OUT", tmp_path)  # the replays' scratch folder (var/ of each run)
    got = bench.paired_replay_ratio(capture[0], argparse.Namespace(pairs=2, replay_args=""))
    assert "error" not in got, got
    assert len(got["ratios"]) == len(got["cpu_seconds"]) == 2
    for ratio, (inspect_s, replay_s) in zip(got["ratios"], got["cpu_seconds"]):
        assert inspect_s > 0 and replay_s > 0
        assert abs(ratio - inspect_s / replay_s) < 0.01  # all three rounded to the thousandth (runs of 0.3 s)
    assert got["min"] <= got["median"] <= got["max"]
    assert (tmp_path / "replay-pairs" / "var" / "icswatch.db").is_file()  # replay ran its whole pipeline
