"""Regression tests for what the soak run (bench/soak.py, docs/soak.md) found in long-lived sensors."""

from __future__ import annotations

from pathlib import Path

import pytest

from sensor.pipeline import Pipeline

PCAPS = Path(__file__).resolve().parents[1] / "pcaps"


def test_a_later_file_keeps_its_flows_once_the_clock_is_past_the_idle_timeout() -> None:
    # A new file gets a new flow table. It used to start its clock at 0 while the pipeline's clock was
    # already past the idle timeouts, so a flow opened before the file's first tick looked idle since
    # forever and the first sweep ended it in the middle of its traffic (the soak's later passes counted
    # more flows than the first; TCP flows were cut in two, the second half "without handshake").
    pipe = Pipeline()
    pipe.replay_file(PCAPS / "modbus_normal.pcap")  # 662 s of capture time
    assert pipe.now > 600.0  # the precondition of the bug
    later = pipe.replay_file(PCAPS / "bacnet_attack.pcap")  # its first UDP flow opens at once
    fresh = Pipeline().replay_file(PCAPS / "bacnet_attack.pcap")
    assert later.counters["flows_idle_timeout"] == fresh.counters["flows_idle_timeout"] == 0
    assert later.counters == fresh.counters
    assert later.events == fresh.events


def test_the_summary_keeps_the_first_incidents_and_counts_them_all(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every incident ever opened used to stay in the end summary: unbounded in a sensor that runs for days.
    from alerts import runtime
    from icswatch.config import load_config

    monkeypatch.setattr(runtime, "MAX_KEPT_INCIDENTS", 2)
    cfg = load_config(None, [])
    rt = runtime.build_alerting(cfg, outputs=[])
    pipe = Pipeline(cfg.sensor, on_event=rt.on_event, on_tick=rt.on_tick)
    for name in ("plant_attack.pcap", "dnp3_attack.pcap", "s7comm_attack.pcap", "iec104_attack.pcap"):
        pipe.replay_file(PCAPS / name)
    summary = rt.close()
    assert rt.grouper.opened > 2
    assert summary.incidents_total == rt.grouper.opened
    assert len(summary.incidents) == 2
    assert summary.as_dict()["incidents_total"] == rt.grouper.opened
    # the kept ones are the first two opened, and they still grow with their later alerts
    kept = list(summary.incidents.values())
    assert sum(i.alert_count for i in kept) >= 2
