"""The model artifact: round trip (same scores), and refusal of tampered or mismatched files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from detectors.ml import artifact
from detectors.ml.artifact import ArtifactError, MlModel, load, read_header, save
from detectors.ml.dataset import replay_each, training_data
from detectors.ml.features import WindowConfig
from detectors.ml.models import ModelSpec, fit_model

REPO = Path(__file__).resolve().parents[1]
NORMAL = REPO / "pcaps" / "ml_normal.pcap"
ROGUE = REPO / "pcaps" / "ml_rogue_writes.pcap"


@pytest.fixture(scope="module")
def data():
    return training_data([str(NORMAL)], WindowConfig())


@pytest.fixture(scope="module")
def test_windows(data):
    (run,) = replay_each([str(ROGUE)], WindowConfig(), data.state)
    return run.matrix()


def _model(data, kind: str) -> MlModel:
    return MlModel(fit_model(data.X, ModelSpec(kind=kind)), WindowConfig(), data.state, {"captures": [NORMAL.name]})


@pytest.mark.parametrize("kind", ["ensemble", "ecod", "iforest", "hbos"])
def test_round_trip_gives_the_same_scores(tmp_path, data, test_windows, kind):
    model = _model(data, kind)
    path = save(model, tmp_path / "m.joblib")
    back = load(path)
    assert back.threshold == model.threshold
    assert back.kind == kind
    assert back.names == model.names
    assert back.fitted.train_windows == model.fitted.train_windows
    assert np.array_equal(back.fitted.score(test_windows), model.fitted.score(test_windows))
    # the training state comes back too: a sensor started from the file knows the plant's pairs
    assert set(back.new_extractor().pairs) == set(model.new_extractor().pairs)
    header, _ = read_header(path)
    assert header["train_windows"] == model.fitted.train_windows
    assert set(header["versions"]) >= {"numpy", "scipy", "scikit-learn", "pyod", "joblib", "python"}
    assert len(header["sha256"]) == 64


def test_ecod_scores_do_not_depend_on_the_batch(data, test_windows):
    # PyOD's ECOD re-fits its ECDFs on train + batch; ours scores against the training ECDFs only
    fitted = fit_model(data.X, ModelSpec(kind="ecod"))
    whole = fitted.score(test_windows)
    one_by_one = np.array([fitted.score(test_windows[i : i + 1])[0] for i in range(len(test_windows))])
    assert np.allclose(whole, one_by_one)


@pytest.fixture(scope="module")
def saved(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("art") / "model.joblib"
    save(_model(data, "ecod"), path)
    return path


def _rewrite(src: Path, dst: Path, header_edit=None, payload_edit=None, fix_checksum: bool = True) -> Path:
    header, payload = read_header(src)
    if header_edit:
        header_edit(header)
    if payload_edit:
        payload = payload_edit(payload)
    header["payload_bytes"] = len(payload)
    if fix_checksum:
        header["sha256"] = artifact._checksum(header, payload)
    dst.write_bytes(artifact.MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n" + payload)
    return dst


def test_a_flipped_byte_is_refused(tmp_path, saved):
    data = bytearray(saved.read_bytes())
    data[len(data) // 2] ^= 0x01
    bad = tmp_path / "flipped.joblib"
    bad.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="checksum mismatch .* the model was modified after"):
        load(bad)


def test_an_edited_threshold_is_refused(tmp_path, saved):
    text = saved.read_bytes()
    header_end = text.index(b"\n", len(artifact.MAGIC))
    header = json.loads(text[len(artifact.MAGIC) : header_end])
    header["threshold"] = header["threshold"] * 10  # someone "tunes" the file by hand
    bad = tmp_path / "edited.joblib"
    bad.write_bytes(artifact.MAGIC + json.dumps(header).encode() + text[header_end:])
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        load(bad)


def test_a_truncated_file_is_refused(tmp_path, saved):
    bad = tmp_path / "cut.joblib"
    bad.write_bytes(saved.read_bytes()[:-100])
    with pytest.raises(ArtifactError, match="the model is truncated or padded"):
        load(bad)


def test_something_else_is_refused(tmp_path):
    bad = tmp_path / "x.joblib"
    bad.write_bytes(b"\x80\x04\x95 not ours")
    with pytest.raises(ArtifactError, match="not an icswatch model file"):
        load(bad)
    with pytest.raises(ArtifactError, match="cannot read"):
        load(tmp_path / "missing.joblib")


def test_a_mismatched_feature_schema_is_refused(tmp_path, saved):
    def drop_feature(h):
        h["schema"]["names"] = h["schema"]["names"][:-1]

    bad = _rewrite(saved, tmp_path / "schema.joblib", drop_feature)
    with pytest.raises(ArtifactError, match="feature schema mismatch.*rate_change.*retrain"):
        load(bad)

    def old_version(h):
        h["schema"]["version"] = 0

    bad = _rewrite(saved, tmp_path / "schema0.joblib", old_version)
    with pytest.raises(ArtifactError, match="schema v0"):
        load(bad)


def test_a_payload_that_disagrees_with_its_header_is_refused(tmp_path, saved):
    def other_window(h):  # a consistent header for another window length, re-checksummed
        h["schema"]["window"] = h["schema"]["hop"] = 5.0

    bad = _rewrite(saved, tmp_path / "window.joblib", other_window)
    with pytest.raises(ArtifactError, match="header and the payload disagree on the feature schema"):
        load(bad)

    def garbled(h):
        h["schema"]["hop"] = 20.0  # longer than the window

    bad = _rewrite(saved, tmp_path / "garbled.joblib", garbled)
    with pytest.raises(ArtifactError, match="feature schema is unreadable"):
        load(bad)


def test_other_library_versions_are_refused_unless_allowed(tmp_path, saved):
    def old_sklearn(h):
        h["versions"]["scikit-learn"] = "0.24.2"

    bad = _rewrite(saved, tmp_path / "versions.joblib", old_sklearn)
    with pytest.raises(ArtifactError, match=r"scikit-learn 0\.24\.2 wrote it.*--allow-version-mismatch"):
        load(bad)
    model = load(bad, allow_version_mismatch=True)
    assert model.kind == "ecod"


def test_detector_from_file_refuses_the_same_way(tmp_path, saved):
    from detectors.ml.detector import MlDetector

    data = bytearray(saved.read_bytes())
    data[-10] ^= 0xFF
    bad = tmp_path / "bad.joblib"
    bad.write_bytes(bytes(data))
    with pytest.raises(ArtifactError):
        MlDetector.from_file(str(bad))
    assert MlDetector.from_file(str(saved)).stats()["model"] == "ecod"
