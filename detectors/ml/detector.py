"""The online ML detector: windows close, get scored, and the anomalous ones become explained Alerts.

``observe`` hands the event to the feature extractor (O(1)); only when a hop boundary passes does the
detector score the closed windows, in one batch. A window whose score exceeds the model's threshold
is anomalous; an anomalous window raises an alert unless the same pair already alerted within
``cooldown`` seconds (monotonic capture time), and every anomalous window extends that quiet period:
an attack that lasts ten minutes is one alert, not sixty. Every window and every anomalous window is
counted in ``stats()``.

Each alert explains itself: the features that deviate most from training, as robust z-scores
(median and MAD of the training windows, in log units), written in words with the usual range
("requests 41.7/s, usually 0.5-0.5/s"). With ECOD/COPOD (no PCA), the features are ranked by the
model's own per-feature tail contributions instead, so the explanation is what the model scored.

The ATT&CK for ICS technique is chosen from the most deviating feature that has a meaning for it
(``TECHNIQUE_BY_KIND``): floods -> T0814, missing traffic -> T0804, timing or sequence -> T0830,
scans and new peers -> T0846, identification -> T0888, address probing / exceptions -> T0861, writes ->
T0836, commands -> T0855, program transfers -> T0843, diagnostics/restarts -> T0816. Features without a
reading (sizes, reads) do not choose; if none of the top five has one, the alert carries no technique.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from alerts.records import Alert, alert_id
from detectors.ml.artifact import MlModel
from detectors.ml.features import FeatureDoc, Window, WindowConfig, feature_docs, feature_names
from detectors.ml.models import FittedModel
from detectors.rules.attack import technique_name, technique_tactics
from sensor.events import IcsEvent

log = logging.getLogger(__name__)

RULE_ID = "ml-anomaly"
DEFAULT_COOLDOWN = 300.0
TOP_FEATURES = 3

# (technique when the feature is higher than usual, technique when lower)
TECHNIQUE_BY_KIND: dict[str, tuple[str | None, str | None]] = {
    "rate": ("T0814", "T0804"),
    "timing": ("T0830", "T0830"),
    "sequence": ("T0830", None),
    "write": ("T0836", None),
    "control": ("T0855", None),
    "program": ("T0843", None),
    "diagnostic": ("T0816", None),
    "discovery": ("T0888", None),
    "scan": ("T0846", None),
    "probe": ("T0861", None),
}
ADVICE = {
    "T0814": "check whether {client} should talk to {server} this much; a flood can starve the device's real master",
    "T0804": "traffic expected between {client} and {server} fell away: check the device, the link and the master",
    "T0830": "the timing or sequence of {client} -> {server} changed: look for a device in the path (ARP, a new "
    "switch port, a gateway) or a misbehaving master",
    "T0836": "verify the writes from {client} to {server} against the operator log and the change records",
    "T0855": "unusual commands from {client}: confirm with operations that they were authorised",
    "T0843": "a program or configuration transfer to {server}: compare the device's program with the known-good copy",
    "T0816": "diagnostic or restart operations on {server}: check the device's status and uptime",
    "T0888": "identification requests from {client}: find out who runs discovery from that host",
    "T0846": "{client} reached hosts or services it does not normally talk to: is it a sanctioned scanner?",
    "T0861": "many addresses, functions or exceptions between {client} and {server}: someone may be mapping points",
}


class AlertGate:
    """One alert per pair per anomalous episode: quiet for ``cooldown`` seconds after any anomalous
    window of the same pair (the evaluation applies the same gate, so its false-alert counts are the
    sensor's). Bounded: entries older than the cooldown are pruned when the table grows."""

    def __init__(self, cooldown: float = DEFAULT_COOLDOWN, max_keys: int = 50_000) -> None:
        self.cooldown = cooldown
        self.max_keys = max_keys
        self._last: dict[Any, float] = {}

    def admit(self, keys: Any, at: float) -> bool:
        """``keys``: one key, or a tuple of keys (``episode_keys``): admitted when none of them alerted
        within the cooldown; every one of them starts (or extends) its quiet period."""
        many = keys if isinstance(keys, list) else [keys]
        fresh = True
        for key in many:
            last = self._last.get(key)
            if last is not None and at - last <= self.cooldown:
                fresh = False
            self._last[key] = at
        if len(self._last) > self.max_keys:
            self._last = {k: t for k, t in self._last.items() if at - t <= self.cooldown}
        return fresh


def _fmt(value: float, unit: str) -> str:
    if unit == "%":
        return f"{100 * value:.0f}%"
    if unit in ("/s", "B/s"):
        return f"{value:.3g}{unit}" if value < 100 else f"{value:,.0f}{unit}"
    if unit == "ms":
        return f"{value:.3g} ms"
    if unit == "s":
        return f"{value:.3g} s"
    if unit == "B":
        return f"{value:.0f} B"
    if unit == "x":
        return f"{value:.2g}x"
    return f"{value:.3g}"


def describe(doc: FeatureDoc, value: float, low: float, high: float) -> str:
    """``requests 41.7/s, usually 0.5-0.6/s`` (the training 5th-95th percentile)."""
    usual = _fmt(low, doc.unit) if abs(high - low) < 1e-9 else f"{_fmt(low, doc.unit)} to {_fmt(high, doc.unit)}"
    return f"{doc.label} {_fmt(value, doc.unit)}, usually {usual}"


def episode_key(key: tuple[str, str, str], technique: str | None) -> list[tuple[str, ...]]:
    """What one alert episode is about (the alert gate's keys): the pair; for discovery also the client,
    so one client sweeping many hosts is one episode (60 probed hosts make one alert, not 60)."""
    if technique in ("T0846", "T0888"):
        return [key, (key[0], "discovery")]
    return [key]


class Explainer:
    """Turns a scored window into its most deviating features (words) and a technique."""

    def __init__(self, fitted: FittedModel, window: WindowConfig) -> None:
        self.fitted = fitted
        docs = feature_docs(window)
        self.names = feature_names(window)
        self.docs = [docs[n] for n in self.names]
        self.damped = np.array([n.startswith("d") and n[1:2].isdigit() for n in self.names], dtype=np.int8)

    def batch(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        return self.fitted.zscores(X), self.fitted.contributions(X), self.fitted.rarity(X)

    def explain(
        self, x: np.ndarray, z: np.ndarray, contrib: np.ndarray | None, rare: np.ndarray | None = None
    ) -> tuple[list[dict[str, Any]], list[str]]:
        """The most deviating features (dicts for the record) and the technique they point to.

        Deviation is ranked by rarity first (the share of training windows at least as extreme: a value
        inside the usual range is never "most unusual", however small the training spread), then by
        |z|, and the window's own features before the long damped averages that echo them."""
        f = self.fitted
        top: list[dict[str, Any]] = []
        techniques: list[str] = []
        az = np.abs(z)
        if rare is None:
            order = np.argsort(-az)
        else:
            order = np.lexsort((-az, self.damped, np.round(np.log(rare), 1)))
        # the technique: the most deviating feature among the top five that has a reading
        for j in order[:5]:
            up, down = TECHNIQUE_BY_KIND.get(self.docs[j].kind, (None, None))
            t = up if z[j] >= 0 else down
            if t:
                techniques.append(t)
                break
        # the words: what the model weighed most (ECOD/COPOD contributions), else the same ranking
        rank = np.argsort(-contrib) if contrib is not None else order
        if rare is not None:
            # only what is outside the usual 5th-95th percentile range is "unusual" (at least one is shown)
            unusual = [j for j in rank[:TOP_FEATURES] if rare[j] < 0.05]
            rank = unusual or list(rank[:1])
        for j in rank[:TOP_FEATURES]:
            doc = self.docs[j]
            zj = float(z[j])
            top.append(
                {
                    "feature": self.names[j],
                    "value": float(x[j]),
                    "usual_low": float(f.usual_low[j]),
                    "usual_median": float(f.usual_mid[j]),
                    "usual_high": float(f.usual_high[j]),
                    "z": round(zj, 2),
                    "contribution": None if contrib is None else round(float(contrib[j]), 3),
                    "text": describe(doc, float(x[j]), float(f.usual_low[j]), float(f.usual_high[j])),
                }
            )
        return top, techniques

    def techniques(self, X: np.ndarray) -> list[str | None]:
        """The technique of each row (what the evaluation needs to gate alerts like the detector)."""
        if len(X) == 0:
            return []
        z, contrib, rare = self.batch(X)
        out: list[str | None] = []
        for i in range(len(X)):
            _, t = self.explain(X[i], z[i], None if contrib is None else contrib[i], rare[i])
            out.append(t[0] if t else None)
        return out


class MlDetector:
    """Detector interface (observe / tick / flush) around a trained model."""

    name = "ml"

    def __init__(self, model: MlModel, cooldown: float = DEFAULT_COOLDOWN, severity: str | None = None) -> None:
        self.model = model
        self.fitted = model.fitted
        self.threshold = model.fitted.threshold
        self.fx = model.new_extractor()
        self.explainer = Explainer(model.fitted, model.window)
        self.gate = AlertGate(cooldown)
        self.fixed_severity = severity
        self._seq = 0
        self.windows = 0
        self.anomalous = 0
        self.alerts = 0
        self.suppressed = 0
        self.warming_suppressed = 0
        self.score_errors = 0
        self.score_seconds = 0.0
        self.max_score = float("-inf")
        # The hot path is the extractor's own observe: windows it closes go straight to scoring, and what
        # it returns (None, or the alerts) is what the runtime gets: one call per event, no wrapper.
        self.fx.on_close = self._score
        self.observe = self.fx.observe  # type: ignore[method-assign]
        # Score one row now: the first call pays for lazy imports and thread pools (a third of a second),
        # which belongs to start-up, and a model that cannot score fails here, not mid-capture.
        self.fitted.score(np.asarray([self.fitted.usual_mid], dtype=np.float64))

    @classmethod
    def from_file(
        cls, path: str, cooldown: float = DEFAULT_COOLDOWN, allow_version_mismatch: bool = False
    ) -> "MlDetector":
        from detectors.ml.artifact import load

        return cls(load(path, allow_version_mismatch=allow_version_mismatch), cooldown=cooldown)

    # -- Detector interface --------------------------------------------------------------------
    def observe(self, event: IcsEvent) -> list[Alert]:  # replaced per instance in __init__
        return self.fx.observe(event)

    def tick(self, ts: float) -> list[Alert]:
        return self.fx.advance(ts) or []

    def flush(self) -> list[Alert]:
        closed = self.fx.finish()
        return self._score(closed) if closed else []

    def stats(self) -> dict[str, Any]:
        return {
            "model": self.model.kind,
            "threshold": self.threshold,
            "windows_scored": self.windows,
            "windows_anomalous": self.anomalous,
            "alerts": self.alerts,
            "suppressed_in_cooldown": self.suppressed,
            "suppressed_warming": self.warming_suppressed,
            "score_errors": self.score_errors,
            "score_seconds": round(self.score_seconds, 3),
            "max_score": None if self.max_score == float("-inf") else self.max_score,
            "features": self.fx.stats(),
        }

    # -- scoring ---------------------------------------------------------------------------------
    def _score(self, windows: list[Window]) -> list[Alert]:
        t0 = time.perf_counter()
        X = np.asarray([w.values for w in windows], dtype=np.float64)
        try:
            scores = self.fitted.score(X)
        except Exception:  # noqa: BLE001 - a model failure must not stop the sensor; counted and logged
            self.score_errors += 1
            log.exception("ML scoring failed on %d window(s)", len(windows))
            return []
        self.windows += len(windows)
        if len(scores):
            self.max_score = max(self.max_score, float(scores.max()))
        over = scores > self.threshold
        for i, w in enumerate(windows):
            if w.warming and over[i]:
                over[i] = False
                self.warming_suppressed += 1
        hits = np.flatnonzero(over)
        alerts: list[Alert] = []
        if len(hits):
            self.anomalous += len(hits)
            z, contrib, rare = self.explainer.batch(X[hits])
            for row, i in enumerate(hits):
                w = windows[i]
                top, techniques = self.explainer.explain(
                    X[i], z[row], None if contrib is None else contrib[row], rare[row]
                )
                if not self.gate.admit(episode_key(w.key, techniques[0] if techniques else None), w.end):
                    self.suppressed += 1
                    continue
                alerts.append(self._alert(w, float(scores[i]), top, techniques))
        self.score_seconds += time.perf_counter() - t0
        return alerts

    def _alert(self, w: Window, score: float, top: list[dict[str, Any]], techniques: list[str]) -> Alert:
        self.alerts += 1
        self._seq += 1
        client, server, proto = w.key
        first = w.first  # the window's first event is its evidence (one event per window is kept)
        assert first is not None
        if first.src == client:
            src, sport, dst, dport = first.src, first.sport, first.dst, first.dport
        else:
            src, sport, dst, dport = first.dst, first.dport, first.src, first.sport
        spread = max(self.threshold - self.fitted.score_median, 1e-9)
        over = (score - self.threshold) / spread
        severity = self.fixed_severity or ("high" if over >= 1.0 else "medium")
        why = "; ".join(t["text"] for t in top)
        advice = ADVICE.get(techniques[0], "") if techniques else ""
        seconds = w.end - w.start
        description = (
            f"{proto} traffic {client} -> {server}: the {seconds:g} s window of {w.events} operation(s) scored "
            f"{score:.3g} against a threshold of {self.threshold:.3g} ({self.model.kind}). Most unusual: {why}."
        )
        if advice:
            description += " Next: " + advice.format(client=client, server=server) + "."
        tech = tuple(techniques)
        tactics: list[str] = []
        for t in tech:
            for tac in technique_tactics(t):
                if tac not in tactics:
                    tactics.append(tac)
        return Alert(
            id=alert_id(RULE_ID, first, self._seq),
            ts=w.last_ts,
            rule_id=RULE_ID,
            rule_name=f"ML: unusual {proto} traffic between {client} and {server}",
            severity=severity,
            techniques=tech,
            technique_names=tuple(technique_name(t) for t in tech),
            tactics=tuple(tactics),
            description=description,
            detector="ml",
            protocol=proto,
            transport=first.transport,
            src=src,
            sport=sport,
            dst=dst,
            dport=dport,
            asset=server,
            first_ts=first.ts,
            count=w.events,
            events=(first,),
            flow_id=first.flow_id,
            extra={
                "model": self.model.kind,
                "score": round(score, 4),
                "threshold": round(self.threshold, 4),
                "window_seconds": seconds,
                "window_events": w.events,
                "window_first_ts": w.first_ts,
                "window_last_ts": w.last_ts,
                "deviations": top,
            },
        )
