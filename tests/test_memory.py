"""sensor/memory.py: the heap trimmer a long-running sensor calls from its sweeps."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from sensor.memory import HeapTrimmer
from sensor.pipeline import Pipeline

REPO_PCAPS = Path(__file__).resolve().parents[1] / "pcaps"


def rss_kb() -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not sys.platform.startswith("linux") or not HeapTrimmer(1).available, reason="glibc only")
def test_trim_hands_freed_heap_back() -> None:
    # Many small blocks freed in an order that leaves the top of the heap in use: glibc keeps the pages
    # until malloc_trim releases the free ones in the middle.
    blocks = [bytearray(1000) for _ in range(100_000)]  # ~100 MB of small heap blocks
    keep = blocks[-1]
    del blocks
    before = rss_kb()
    trimmer = HeapTrimmer(every=0.000001)
    assert trimmer.maybe_trim()
    after = rss_kb()
    assert trimmer.trims == 1
    assert before - after > 50_000, (before, after)  # most of the ~100 MB freed went back to the OS
    assert len(keep) == 1000


def test_trimmer_waits_between_trims_and_can_be_off() -> None:
    t = HeapTrimmer(every=3600)
    assert not t.maybe_trim()  # not due yet
    off = HeapTrimmer(every=0)
    assert not off.available and not off.maybe_trim() and off.trims == 0


def test_the_pipeline_trims_from_its_sweeps(monkeypatch: pytest.MonkeyPatch) -> None:
    from sensor.config_types import SensorLimits

    p = Pipeline(SensorLimits(heap_trim_seconds=0.000001))
    calls = []
    monkeypatch.setattr(p._heap, "maybe_trim", lambda: calls.append(1) or True)
    p.replay_file(REPO_PCAPS / "plant_normal_1.pcap")  # minutes of capture time: several sweeps
    assert calls
