"""IPAL IEC 104 (../shared/datasets/ipal_iec104): labels from backtrack files, and a fast evaluation on a
subset. The full table is tools/eval_ml_ipal.py's job (docs/ml.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import SHARED

from detectors.ml.evaluation import prepare, run_models
from detectors.ml.features import WindowConfig
from detectors.ml.labels import labels_for, read_backtrack
from detectors.ml.models import ModelSpec
from sensor.capture import CaptureReader

IPAL = SHARED / "datasets" / "ipal_iec104"
SUBSET = ["C-0.1-1.pcap", "R-0.1-1.pcap", "S-0.1-1.pcap", "S-0.01-1.pcap", "test.pcap"]


@pytest.fixture(scope="module")
def ipal() -> Path:
    if not (IPAL / "train.pcap").exists():
        pytest.fail(f"the IPAL dataset is missing: looked in {IPAL} (the shared folder sits next to the repository)")
    return IPAL


def _packets(path: Path) -> list[bytes]:
    reader = CaptureReader(path)
    try:
        return [bytes(p[2]) for p in reader]
    finally:
        reader.close()


@pytest.mark.parametrize("name", ["C-0.01-1", "R-0.01-2", "S-0.01-3", "S-0.1-4"])
def test_backtrack_replay_rebuilds_the_manipulated_capture(ipal, name):
    """The backtrack indices refer to the trace after the previous change (IPAL's TraceManipulator):
    replaying the operations on the original order gives the manipulated file byte for byte."""
    original = _packets(ipal / "test.pcap")
    target = _packets(ipal / f"{name}.pcap")
    labels = read_backtrack(ipal / f"{name}.pcap.backtrack.txt", len(original))
    ops = [line for line in (ipal / f"{name}.pcap.backtrack.txt").read_text().splitlines() if line[:1] in "CRS"]
    assert len(labels.attacks) == len(ops)
    kind = {"C": "clone", "R": "remove", "S": "swap"}[name[0]]
    assert {a.kind for a in labels.attacks.values()} == {kind}
    # the same replay on the packets themselves
    from detectors.ml.labels import _BACKTRACK  # the parser's own pattern

    trace = list(original)
    for line in ops:
        m = _BACKTRACK.match(line)
        a, b = int(m.group(2)), m.group(3)
        if line.startswith("Cloned"):
            trace.insert(int(b) - 1, trace[a - 1])
        elif line.startswith("Removed"):
            trace.pop(a - 1)
        else:
            pa = trace.pop(a - 1)
            pb = trace.pop(int(b) - 1)
            trace.insert(a - 1, pb)
            trace.insert(int(b) - 1, pa)
    assert trace == target
    # two packets per swap, one per clone, the follower of each removal (a packet can carry several)
    per_op = {"swap": 2, "clone": 1, "remove": 1}[kind]
    assert 0 < len(labels.packet_tags) <= per_op * len(ops)
    assert max(labels.packet_tags) <= len(target)


def test_labels_found_next_to_the_capture(ipal):
    lab = labels_for(ipal / "S-0.1-1.pcap")
    assert lab is not None and len(lab.attacks) > 50
    assert labels_for(ipal / "train.pcap") is None


@pytest.fixture(scope="module")
def subset(ipal):
    tests = [str(ipal / n) for n in SUBSET]
    labels = {t: labels_for(t) for t in tests}
    X, _, runs, _, _ = prepare([str(ipal / "train.pcap")], tests, labels, WindowConfig())
    groups = {r.name: [r] for r in runs}
    _, results, _ = run_models(X, runs, {"ensemble": ModelSpec(), "ecod": ModelSpec(kind="ecod")}, groups,
                               config=WindowConfig())  # fmt: skip
    return X, {(m.model, m.test): m for m in results}


def test_ipal_subset_runs_and_reports(subset):
    X, res = subset
    assert 60 <= len(X) <= 100  # 16 repetitions of ~48 s, in 10 s windows on the monotonic clock
    for name in SUBSET[:-1]:
        m = res[("ensemble", name)]
        assert m.attacks > 0 and m.positives > 0
        assert m.roc_auc is not None and 0.0 <= m.roc_auc <= 1.0
        assert m.caught <= m.attacks
    # the unmanipulated capture: no attack, and at most one false alert in its ~13 minutes
    normal = res[("ensemble", "test.pcap")]
    assert normal.attacks == 0 and normal.false_alerts <= 1
    # heavy reordering breaks the TCP streams: the model does see it (better than chance)
    assert res[("ensemble", "S-0.1-1.pcap")].caught >= res[("ensemble", "S-0.1-1.pcap")].chance_caught * 0.9
