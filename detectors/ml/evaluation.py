"""The evaluation harness behind ``icswatch eval`` and tools/eval_ml_ipal.py.

Method (docs/ml.md says it in full):

- **Time-ordered split.** Models are fitted on training captures (or on the first share of the
  windows, ``split``) and scored on captures that come later. Nothing is shuffled.
- **Unseen attacks.** Training is unsupervised and meant to be clean: windows in the training part
  that hold labeled attack events are dropped (and counted in the report), never learned.
- **Same windows for every model.** Features are computed once per capture, with the sensor's real
  pipeline and a fresh extractor per test capture that starts from the training history (what a
  sensor deployed with the model knows). Each model is then fitted and scored on the same matrices.
- **Window-level metrics:** ROC-AUC and PR-AUC of the scores (threshold-free), precision, recall, F1
  and false-positive rate at the model's own threshold. A window is positive when it holds at least
  one event of a labeled attack.
- **Event-level detection:** an attack is caught when any window holding one of its events is
  anomalous. Time to detect: from the attack's first event to the end of the first anomalous window
  holding its events (monotonic capture time). Attacks that produced no event at all (a removed
  packet at the very end, a duplicate that never reached an analyzer...) are counted as missed and
  reported as ``unobserved``.
- **False alerts per hour:** anomalous windows go through the detector's alert gate (one alert per
  pair per episode, ``cooldown``); an alert on a window without attack events is false. Hours are the
  test captures' duration on the monotonic clock (attack time included: an upper bound on the normal
  time, so a lower bound on the rate).

Comparators: anything with ``fit(train_runs)`` and ``flags(run) -> one bool per window`` can be a row
(``COMPARATORS``); the baseline detector registers there when ``detectors.baseline`` exists.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol

import numpy as np

from detectors.ml.dataset import CaptureRun, replay, replay_each, windows_matrix
from detectors.ml.detector import DEFAULT_COOLDOWN, AlertGate, Explainer, episode_key
from detectors.ml.features import FeatureExtractor, WindowConfig
from detectors.ml.labels import Labels
from detectors.ml.models import FittedModel, ModelSpec, fit_model


@dataclass
class Metrics:
    model: str
    test: str
    windows: int = 0
    positives: int = 0
    roc_auc: float | None = None
    pr_auc: float | None = None
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    fpr: float | None = None
    attacks: int = 0
    caught: int = 0
    unobserved: int = 0
    chance_caught: float = 0.0  # expected catches of a detector flagging as many windows at random
    ttd: list[float] = field(default_factory=list)
    alerts: int = 0
    false_alerts: int = 0
    related_alerts: int = 0  # on a window without attack events, but on an attack's host during it
    hours: float = 0.0
    threshold: float | None = None
    note: str = ""

    @property
    def detection_rate(self) -> float | None:
        return self.caught / self.attacks if self.attacks else None

    @property
    def false_alerts_per_hour(self) -> float | None:
        return self.false_alerts / self.hours if self.hours > 0 else None

    @property
    def ttd_median(self) -> float | None:
        return float(np.median(self.ttd)) if self.ttd else None

    def as_dict(self) -> dict[str, Any]:
        def r(x: float | None, n: int = 4) -> float | None:
            return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), n)

        return {
            "model": self.model,
            "test": self.test,
            "windows": self.windows,
            "positive_windows": self.positives,
            "roc_auc": r(self.roc_auc),
            "pr_auc": r(self.pr_auc),
            "precision": r(self.precision),
            "recall": r(self.recall),
            "f1": r(self.f1),
            "false_positive_rate": r(self.fpr),
            "attacks": self.attacks,
            "caught": self.caught,
            "unobserved": self.unobserved,
            "detection_rate": r(self.detection_rate),
            "caught_by_chance": r(self.chance_caught, 2),
            "ttd_median_s": r(self.ttd_median, 2),
            "ttd_max_s": r(max(self.ttd), 2) if self.ttd else None,
            "alerts": self.alerts,
            "false_alerts": self.false_alerts,
            "related_alerts": self.related_alerts,
            "hours": r(self.hours, 4),
            "false_alerts_per_hour": r(self.false_alerts_per_hour, 3),
            "threshold": r(self.threshold, 6),
            "note": self.note,
        }


def _window_metrics(m: Metrics, y: np.ndarray, scores: np.ndarray | None, flags: np.ndarray) -> None:
    from sklearn.metrics import average_precision_score, roc_auc_score

    m.windows = len(y)
    m.positives = int(y.sum())
    if scores is not None and 0 < m.positives < m.windows:
        m.roc_auc = float(roc_auc_score(y, scores))
        m.pr_auc = float(average_precision_score(y, scores))
    tp = int((flags & y).sum())
    fp = int((flags & ~y).sum())
    fn = int((~flags & y).sum())
    tn = int((~flags & ~y).sum())
    m.precision = tp / (tp + fp) if tp + fp else (None if not m.positives else 0.0)
    m.recall = tp / (tp + fn) if tp + fn else None
    if m.precision is not None and m.recall is not None:
        m.f1 = 2 * m.precision * m.recall / (m.precision + m.recall) if m.precision + m.recall else 0.0
    m.fpr = fp / (fp + tn) if fp + tn else None


def score_report(
    model: str,
    test: str,
    runs: list[CaptureRun],
    flags: list[np.ndarray],
    scores: list[np.ndarray] | None,
    threshold: float | None,
    cooldown: float = DEFAULT_COOLDOWN,
    episode_keys: list[list[Any]] | None = None,
) -> Metrics:
    """Metrics of one model over one or several test runs (pooled). ``episode_keys``: per run, per
    window, the alert-gate key (the detector's ``episode_key``); default the window's pair."""
    m = Metrics(model, test, threshold=threshold)
    ys = [np.array([bool(w.tags) for w in r.windows], dtype=bool) for r in runs]
    y = np.concatenate(ys) if ys else np.zeros(0, bool)
    f = np.concatenate(flags) if flags else np.zeros(0, bool)
    s = np.concatenate(scores) if scores is not None and scores else None
    _window_metrics(m, y, s, f)
    p_flag = float(f.mean()) if len(f) else 0.0
    for n, (run, fl) in enumerate(zip(runs, flags)):
        m.hours += run.duration / 3600.0
        spans = _attack_spans(run)
        gate = AlertGate(cooldown)
        first_hit: dict[int, float] = {}
        keys = episode_keys[n] if episode_keys is not None else None
        for i, (w, hit) in enumerate(zip(run.windows, fl)):
            if not hit:
                continue
            for a in w.tags:
                if a not in first_hit:
                    first_hit[a] = w.end
            if gate.admit(keys[i] if keys is not None else w.key, w.end):
                m.alerts += 1
                if not w.tags:
                    if _related(w, spans):
                        m.related_alerts += 1
                    else:
                        m.false_alerts += 1
        attacks = run.labels.attacks if run.labels else {}
        n_windows: dict[int, int] = {}
        for w in run.windows:
            for a in w.tags:
                n_windows[a] = n_windows.get(a, 0) + 1
        for a in attacks.values():
            m.attacks += 1
            m.chance_caught += 1.0 - (1.0 - p_flag) ** n_windows.get(a.id, 0)
            if a.events == 0:
                m.unobserved += 1
                continue
            if a.id in first_hit:
                m.caught += 1
                start = a.first_mono if a.first_mono is not None else 0.0
                m.ttd.append(max(first_hit[a.id] - start, 0.0))
    return m


def _attack_spans(run: CaptureRun) -> list[tuple[float, float, set[str]]]:
    out = []
    for a in run.labels.attacks.values() if run.labels else ():
        if a.first_mono is not None and a.last_mono is not None:
            out.append((a.first_mono, a.last_mono, a.hosts))
    return out


def _related(w: Any, spans: list[tuple[float, float, set[str]]]) -> bool:
    """An alert on a window without attack events is still *related* (not false) when it is about one
    of an attack's hosts while the attack runs or within one window after it: the victim's other
    traffic during a flood, the poll that resumes its rhythm after a manipulation."""
    width = w.end - w.start
    for first, last, hosts in spans:
        if w.end >= first and w.start <= last + width and (w.key[0] in hosts or w.key[1] in hosts):
            return True
    return False


# -- comparators (rows that are not ML models) -------------------------------------------------------


class Comparator(Protocol):
    name: str

    def fit(self, train_runs: list[CaptureRun]) -> None: ...

    def flags(self, run: CaptureRun) -> np.ndarray: ...


class ComparatorUnavailable(Exception):
    pass


def flags_from_alerts(run: CaptureRun, alerts: Iterable[tuple[float, str, str, str]]) -> np.ndarray:
    """Window flags from a detector's alerts: (monotonic time, source, destination, protocol) -> the
    windows of that host pair (either orientation, any protocol: a detector may name a connection
    attempt "tcp" where the window is "modbus") whose span holds the time."""
    index: dict[frozenset[str], list[tuple[float, float, int]]] = {}
    for i, w in enumerate(run.windows):
        index.setdefault(frozenset(w.key[:2]), []).append((w.start, w.end, i))
    flags = np.zeros(len(run.windows), dtype=bool)
    for t, src, dst, _proto in alerts:
        for start, end, i in index.get(frozenset((src, dst)), ()):
            if start < t <= end + 1e-9:
                flags[i] = True
    return flags


class DetectorComparator:
    """Any event Detector as a row: ``learn(event lists) -> Detector``; its alerts flag the windows of
    their pair in which they were raised (``flags_from_alerts``). Ticks are given once per second of
    monotonic time, as the pipeline does, so silence-based alerts (a poll that stopped) fire too."""

    def __init__(self, name: str, learn: Callable[[list[list[Any]]], Any]) -> None:
        self.name = name
        self._learn = learn
        self._detector_factory: Callable[[], Any] | None = None

    def fit(self, train_runs: list[CaptureRun]) -> None:
        lists = [[e for _, e in (r.events_kept or [])] for r in train_runs if r.events_kept]
        self._detector_factory = self._learn(lists)

    def flags(self, run: CaptureRun) -> np.ndarray:
        assert self._detector_factory is not None, "fit() first"
        det = self._detector_factory()
        raised: list[tuple[float, str, str, str]] = []
        next_tick = None
        mono = 0.0
        for mono, e in run.events_kept or []:
            if next_tick is None:
                next_tick = mono + 1.0
            elif mono >= next_tick:
                for a in det.tick(e.ts) or ():
                    raised.append((mono, a.src, a.dst, a.protocol))
                next_tick = mono + 1.0
            for a in det.observe(e) or ():
                raised.append((mono, a.src, a.dst, a.protocol))
        for a in det.flush() or ():
            raised.append((mono, a.src, a.dst, a.protocol))
        return flags_from_alerts(run, raised)


def _baseline_factory() -> Comparator:
    """The learn-then-protect baseline (detectors/baseline): learned from the same training events,
    run in protect mode over each test capture's events. An extension point: any detector can be
    added to ``COMPARATORS`` the same way (docs/ml.md)."""
    try:
        from detectors.baseline.learn import Learner
        from detectors.baseline.protect import BaselineDetector
    except Exception as exc:  # noqa: BLE001 - not in this tree, or broken: the row says why
        raise ComparatorUnavailable(f"the baseline detector cannot be imported ({type(exc).__name__}: {exc})") from None

    def learn(event_lists: list[list[Any]]) -> Callable[[], Any]:
        learner = Learner()
        for events in event_lists:
            learner.new_capture()
            for e in events:
                learner.observe(e)
        baseline = learner.finish()
        return lambda: BaselineDetector(baseline, "eval")

    return DetectorComparator("baseline", learn)


COMPARATORS: dict[str, Callable[[], Comparator]] = {"baseline": _baseline_factory}


# -- the whole evaluation -------------------------------------------------------------------------------


def prepare(
    train: list[str],
    test: list[str],
    labels: dict[str, Labels | None],
    config: WindowConfig,
    split: float | None = None,
    sensor_config: Any = None,
    keep_events: bool = False,
) -> tuple[np.ndarray, int, list[CaptureRun], dict[str, Any], list[CaptureRun]]:
    """(training matrix, dropped labeled windows, test runs, extractor state after training, training runs)."""
    fx = FeatureExtractor(config)
    runs = replay(train, fx, labels, sensor_config, keep_events)
    if split is not None:
        train_rows, dropped, test_runs = split_runs(runs, split)
        return train_rows, dropped, test_runs, fx.snapshot(), runs
    windows = [w for r in runs for w in r.windows]
    clean = [w for w in windows if not w.tags]
    X = windows_matrix(clean, len(fx.names))
    state = fx.snapshot()
    test_runs = replay_each(test, config, state, labels, sensor_config, keep_events)
    return X, len(windows) - len(clean), test_runs, state, runs


def split_runs(runs: list[CaptureRun], frac: float) -> tuple[np.ndarray, int, list[CaptureRun]]:
    """The first ``frac`` of all windows (time order) train; the rest, cut into per-capture runs, test."""
    windows = [(i, w) for i, r in enumerate(runs) for w in r.windows]
    k = int(len(windows) * frac)
    train = [w for _, w in windows[:k]]
    clean = [w for w in train if not w.tags]
    X = windows_matrix(clean, len(train[0].values) if train else 0)
    tests: list[CaptureRun] = []
    for i, r in enumerate(runs):
        rest = [w for j, w in windows[k:] if j == i]
        if not rest:
            continue
        part = CaptureRun(r.path, rest, r.packets, r.events, r.duration, r.labels, r.error, r.events_kept)
        if len(rest) < len(r.windows) and r.windows:
            span = max(r.windows[-1].end - r.windows[0].start, 1e-9)
            part.duration = r.duration * (rest[-1].end - rest[0].start) / span
        tests.append(part)
    return X, len(train) - len(clean), tests


def run_models(
    X: np.ndarray,
    test_runs: list[CaptureRun],
    specs: dict[str, ModelSpec],
    groups: dict[str, list[CaptureRun]],
    cooldown: float = DEFAULT_COOLDOWN,
    comparators: dict[str, Comparator] | None = None,
    train_runs: list[CaptureRun] | None = None,
    config: WindowConfig | None = None,
) -> tuple[dict[str, FittedModel], list[Metrics], list[str]]:
    """Fit every model on ``X``, score every test run, report per group (pooled runs)."""
    fitted: dict[str, FittedModel] = {}
    results: list[Metrics] = []
    problems: list[str] = []
    per_model: dict[
        str, tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None, float | None, dict[str, list[Any]] | None]
    ] = {}
    for name, spec in specs.items():
        fm = fit_model(X, spec)
        fitted[name] = fm
        explainer = Explainer(fm, config or WindowConfig())
        scores: dict[str, np.ndarray] = {}
        flags: dict[str, np.ndarray] = {}
        gate_keys: dict[str, list[Any]] = {}
        for r in test_runs:
            k = r.path + f"#{id(r)}"
            Xr = r.matrix()
            scores[k] = fm.score(Xr)
            flags[k] = (scores[k] > fm.threshold) & ~np.array([w.warming for w in r.windows], dtype=bool)
            hit = np.flatnonzero(flags[k])
            keys: list[Any] = [w.key for w in r.windows]
            for i, t in zip(hit, explainer.techniques(Xr[hit])):
                keys[i] = episode_key(r.windows[i].key, t)
            gate_keys[k] = keys
        per_model[name] = (flags, scores, fm.threshold, gate_keys)
    for name, comp in (comparators or {}).items():
        try:
            comp.fit(train_runs or [])
            flags = {r.path + f"#{id(r)}": np.asarray(comp.flags(r), dtype=bool) for r in test_runs}
        except Exception as exc:  # noqa: BLE001 - a comparator failing is reported as a row note
            problems.append(f"{name}: {type(exc).__name__}: {exc}")
            continue
        per_model[name] = (flags, None, None, None)
    for gname, runs in groups.items():
        for name, (flags, scores, thr, gkeys) in per_model.items():
            keys = [r.path + f"#{id(r)}" for r in runs]
            results.append(
                score_report(
                    name,
                    gname,
                    runs,
                    [flags[k] for k in keys],
                    [scores[k] for k in keys] if scores is not None else None,
                    thr,
                    cooldown,
                    [gkeys[k] for k in keys] if gkeys is not None else None,
                )
            )
    return fitted, results, problems
