"""``icswatch train`` and ``icswatch eval`` end to end on the crafted captures (small, fast)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from icswatch.cli import main

PCAPS = Path(__file__).resolve().parents[1] / "pcaps"
NORMAL = str(PCAPS / "ml_normal.pcap")
LABELS = str(PCAPS / "ml_labels.json")


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "model.joblib"
    assert main(["train", NORMAL, "-o", str(path), "-q"]) == 0
    return path


def test_train_writes_a_model_and_a_summary(tmp_path, capsys):
    out = tmp_path / "ecod.joblib"
    assert main(["train", NORMAL, "-o", str(out), "--model", "ecod", "--quantile", "0.999", "--json", "-"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["kind"] == "ecod" and summary["quantile"] == 0.999
    assert summary["train_windows"] + summary["calibration_windows"] == summary["training"]["windows_kept"]
    assert summary["threshold"] > summary["score_median"]
    assert out.exists() and summary["bytes"] == out.stat().st_size


def test_train_usage_and_input_errors(tmp_path, capsys):
    assert main(["train", NORMAL, "-o", str(tmp_path / "m"), "--window", "10", "--hop", "3"]) == 2
    assert "multiple of hop" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "nothing.pcap"), "-o", str(tmp_path / "m")]) == 1
    with pytest.raises(SystemExit):
        main(["train", NORMAL, "-o", str(tmp_path / "m"), "--model", "svm"])


def test_eval_side_by_side_as_json(capsys):
    rc = main(["eval", "--train", NORMAL, "--test", str(PCAPS / "ml_holdout.pcap"), str(PCAPS / "ml_rogue_writes.pcap"),
               "--labels", LABELS, "--models", "ensemble,ecod,ensemble:lof+knn,baseline", "--json", "-"])  # fmt: skip
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["method"]["split"].startswith("time-ordered")
    rows = {(r["model"], r["test"]): r for r in report["results"]}
    models = {m for m, _ in rows}
    assert {"ensemble", "ecod", "ensemble:lof+knn"} <= models
    # the baseline is a row when detectors/baseline imports, else the report says why it is missing
    assert "baseline" in models or any(p.startswith("baseline:") for p in report["problems"])
    rogue = rows[("ensemble", "ml_rogue_writes.pcap")]
    assert rogue["attacks"] == 1 and rogue["caught"] == 1
    for key in (
        "roc_auc",
        "pr_auc",
        "precision",
        "recall",
        "f1",
        "ttd_median_s",
        "false_alerts_per_hour",
        "caught_by_chance",
    ):
        assert key in rogue
    assert rows[("ensemble", "all test captures")]["windows"] == (
        rows[("ensemble", "ml_holdout.pcap")]["windows"] + rogue["windows"]
    )


def test_eval_prints_tables(capsys):
    assert main(["eval", "--train", NORMAL, "--test", str(PCAPS / "ml_rhythm.pcap"), "--labels", LABELS,
                 "--models", "ensemble,iforest"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "ml_rhythm.pcap" in out and "ROC-AUC" in out and "iforest" in out


def test_eval_a_saved_model_and_a_time_split(model, capsys):
    rc = main(["eval", "--train", NORMAL, "--test", str(PCAPS / "ml_flood.pcap"), "--labels", LABELS,
               "--models", "ecod", "--model-file", str(model), "--json", "-"])  # fmt: skip
    assert rc == 0
    rows = json.loads(capsys.readouterr().out)["results"]
    saved = [r for r in rows if r["model"].startswith("model.joblib")]
    assert saved and saved[0]["caught"] == 2
    assert main(["eval", "--train", NORMAL, "--split", "0.7", "--models", "ecod", "--json", "-"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert "first 0.7" in report["method"]["split"] and report["results"][0]["windows"] > 0


def test_eval_usage_errors(capsys):
    assert main(["eval", "--train", NORMAL]) == 2
    assert "--split" in capsys.readouterr().err
    assert main(["eval", "--train", NORMAL, "--split", "0.99"]) == 2
    assert main(["eval", "--train", NORMAL, "--test", NORMAL, "--models", "nonsense"]) == 2
