"""The crafted ML scenarios (pcaps/ml_*.pcap, labels in pcaps/ml_labels.json): every attack caught at the
default model and threshold, at most one false alert per hour of test traffic, and the sensor's online
detector raising exactly the alerts the evaluation counted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alerts.runtime import build_alerting
from detectors.ml.artifact import MlModel, load, save
from detectors.ml.dataset import training_data
from detectors.ml.detector import MlDetector
from detectors.ml.evaluation import prepare, run_models
from detectors.ml.features import WindowConfig
from detectors.ml.labels import labels_for
from detectors.ml.models import ModelSpec, fit_model
from icswatch.config import load_config
from sensor.pipeline import Pipeline

PCAPS = Path(__file__).resolve().parents[1] / "pcaps"
LABELS = PCAPS / "ml_labels.json"
DOC = json.loads(LABELS.read_text())
TRAIN = [str(PCAPS / n) for n in DOC["train"]]
TESTS = [str(PCAPS / n) for n in DOC["test"]]
ATTACKS = {"ml_flood.pcap": 2, "ml_slow_scan.pcap": 1, "ml_rogue_writes.pcap": 1, "ml_rhythm.pcap": 1}


def test_the_crafted_captures_are_small_and_labeled():
    sizes = {p.name: p.stat().st_size for p in PCAPS.glob("ml_*.pcap")}
    assert sizes["ml_normal.pcap"] < 2_000_000
    assert sum(sizes.values()) < 5_000_000
    for name, n in ATTACKS.items():
        assert len(DOC["captures"][name]) == n
    # the normal capture is at least an hour of capture time
    from sensor.capture import CaptureReader

    reader = CaptureReader(PCAPS / "ml_normal.pcap")
    ts = [p[0] for p in reader]
    reader.close()
    assert ts[-1] - ts[0] >= 3590


@pytest.fixture(scope="module")
def evaluation():
    labels = {p: labels_for(p, [str(LABELS)]) for p in TRAIN + TESTS}
    X, dropped, runs, _, _ = prepare(TRAIN, TESTS, labels, WindowConfig())
    groups = {r.name: [r] for r in runs}
    groups["all"] = runs
    _, results, problems = run_models(X, runs, {"default": ModelSpec()}, groups, config=WindowConfig())
    assert not problems and dropped == 0
    return {m.test: m for m in results}


@pytest.mark.parametrize("capture", sorted(ATTACKS))
def test_each_attack_is_caught(evaluation, capture):
    m = evaluation[capture]
    assert m.attacks == ATTACKS[capture]
    assert m.caught == m.attacks, f"{capture}: caught {m.caught}/{m.attacks}"
    assert m.ttd_median is not None and m.ttd_median <= 20.0  # within two windows of the attack's start


def test_at_most_one_false_alert_per_hour(evaluation):
    pooled = evaluation["all"]
    assert pooled.hours >= 1.0  # 40 min holdout + four 10 min attack captures
    assert pooled.false_alerts_per_hour is not None and pooled.false_alerts_per_hour <= 1.0
    assert evaluation["ml_holdout.pcap"].false_alerts <= 1
    assert pooled.roc_auc is not None and pooled.roc_auc > 0.95


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    data = training_data(TRAIN, WindowConfig())
    path = tmp_path_factory.mktemp("ml") / "model.joblib"
    save(MlModel(fit_model(data.X, ModelSpec()), WindowConfig(), data.state), path)
    return path


def _replay(model_path: Path, capture: str) -> tuple[list, MlDetector]:
    cfg = load_config(None, [])
    cfg.rules.enabled = False
    det = MlDetector(load(model_path))
    runtime = build_alerting(cfg, detectors=[det], outputs=[])
    pipeline = Pipeline(cfg.sensor, on_event=runtime.on_event, on_tick=runtime.on_tick)
    pipeline.replay_file(capture)
    summary = runtime.close()
    return [a for a in summary.alerts if a.detector == "ml"], det


@pytest.mark.parametrize(
    "capture,technique",
    [
        ("ml_flood.pcap", "T0814"),
        ("ml_slow_scan.pcap", ("T0846", "T0888")),
        ("ml_rogue_writes.pcap", ("T0836", "T0855")),
        ("ml_rhythm.pcap", "T0830"),
    ],
)
def test_the_online_detector_alerts_with_an_explanation(model_file, capture, technique):
    alerts, det = _replay(model_file, str(PCAPS / capture))
    assert alerts, f"no ML alert on {capture}"
    spans = DOC["captures"][capture]
    in_attack = [a for a in alerts if any(s["start"] - 1 <= a.ts <= s["end"] + 30 for s in spans)]
    assert in_attack
    wanted = (technique,) if isinstance(technique, str) else technique
    assert any(set(a.techniques) & set(wanted) for a in in_attack), [a.techniques for a in in_attack]
    a = in_attack[0]
    assert a.rule_id == "ml-anomaly" and a.severity in ("medium", "high")
    assert a.extra["score"] > a.extra["threshold"]
    assert a.extra["deviations"] and all("usually" in d["text"] for d in a.extra["deviations"])
    assert "Most unusual:" in a.description and a.events
    ecs = a.to_ecs()
    assert ecs["threat"]["technique"]["id"] == list(a.techniques)
    assert det.stats()["windows_scored"] > 0


def test_the_detector_raises_what_the_evaluation_counted(model_file, evaluation):
    for capture in TESTS:
        alerts, _ = _replay(model_file, capture)
        assert len(alerts) == evaluation[Path(capture).name].alerts, capture


def test_alert_ids_are_deterministic(model_file):
    first, _ = _replay(model_file, str(PCAPS / "ml_rogue_writes.pcap"))
    again, _ = _replay(model_file, str(PCAPS / "ml_rogue_writes.pcap"))
    assert [a.id for a in first] == [a.id for a in again]
