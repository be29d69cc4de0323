"""PyOD models behind a scikit-learn pipeline, an ensemble, and the threshold.

The pipeline is ``log1p -> scaling -> [PCA] -> detector``:

- ``log1p`` because almost every feature is a count, a rate or a size with a long tail: a flood at 200
  requests/s and a poll at 1/s should be a few units apart, not two hundred;
- a standard scaler whose scale has a floor (``FlooredScaler``): a feature that never moved in
  training (writes on a read-only pair) has a zero standard deviation, and scikit-learn would then
  divide by 1, making any later movement nearly invisible to distance-based models. The floor (0.05 in
  log units, about 5% relative change) makes it count;
- optional PCA (``pca=`` a component count or a kept-variance fraction);
- a PyOD detector: IForest, ECOD, COPOD, HBOS, LOF, KNN, ``mlpae`` (a small MLP autoencoder built on
  scikit-learn's MLPRegressor, because PyOD's neural models need torch and we do not ship it), or an
  ensemble of several.

ECOD and COPOD: PyOD 2.x scores new rows by concatenating them with the training data and recomputing
the empirical CDFs, so a row's score depends on the batch it arrives in, every artifact carries the
whole training matrix, and each call costs O(n_train). ``StableECOD`` / ``StableCOPOD`` keep PyOD's
classes and formulas (Li et al., TKDE 2022 / ICDM 2020) but score against the ECDFs of the training
data, stored as a bounded quantile grid: a window gets the same score alone or in a batch, the artifact
stays small, and the per-feature tail probabilities double as the explanation of a score.

Threshold
---------
``threshold = quantile(scores, q)`` with ``q = --quantile`` (default 0.995) or ``1 - contamination``.
The scores are those of the training windows *plus* a calibration tail: the latest ``calibration``
share (20%) of the training windows, in time order, is held out of fitting and scored like unseen data.
In-sample scores of flexible models (KNN, LOF, the autoencoder) are optimistic; the held-out tail
brings the upper quantile back to what unseen normal traffic scores.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from pyod.models.base import BaseDetector
from pyod.models.copod import COPOD
from pyod.models.ecod import ECOD
from pyod.models.hbos import HBOS
from pyod.models.iforest import IForest
from pyod.models.knn import KNN
from pyod.models.lof import LOF
from scipy.stats import skew
from sklearn.decomposition import PCA
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.utils import check_array

from detectors.ml.kinds import COMBINE, DEFAULT_ENSEMBLE, DEFAULT_KIND, MODEL_KINDS

SCALE_FLOOR = 0.05  # log units
MAX_NEIGHBOUR_ROWS = 20_000  # LOF / KNN / autoencoder train on at most this many rows (evenly spaced)
ECDF_GRID = 2048  # quantile points kept per feature by StableECOD / StableCOPOD


def log1p_nonneg(X: np.ndarray) -> np.ndarray:
    """log(1 + x) of non-negative features (a module-level function so the pipeline pickles)."""
    return np.log1p(np.maximum(np.asarray(X, dtype=np.float64), 0.0))


class FlooredScaler(StandardScaler):
    """StandardScaler whose scale never drops below ``floor`` (see the module docstring)."""

    def __init__(self, floor: float = SCALE_FLOOR) -> None:
        super().__init__()
        self.floor = floor

    def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> "FlooredScaler":
        super().fit(X, y, sample_weight)
        self.scale_ = np.maximum(self.scale_, self.floor)
        return self


# -- batch-independent ECOD / COPOD ----------------------------------------------------------------


class _TrainingEcdf:
    """Tail probabilities of new rows against the training columns (a bounded quantile grid)."""

    def _fit_ecdf(self, X: np.ndarray) -> None:
        n = X.shape[0]
        if n > ECDF_GRID:
            self.grid_ = np.quantile(X, np.linspace(0.0, 1.0, ECDF_GRID), axis=0)
        else:
            self.grid_ = np.sort(X, axis=0)
        self.n_train_ = n
        import warnings

        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # constant columns: skew is 0/0, taken as 0
            sk = skew(X, axis=0)
        self.skew_sign_ = np.sign(np.nan_to_num(sk, nan=0.0))

    def _tails(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """-log of the left and right tail probabilities, with PyOD's "the row itself counts" smoothing."""
        grid = self.grid_
        m = grid.shape[0]
        n = self.n_train_
        le = np.empty_like(X, dtype=np.float64)
        ge = np.empty_like(X, dtype=np.float64)
        for j in range(X.shape[1]):
            col = grid[:, j]
            le[:, j] = np.searchsorted(col, X[:, j], side="right")
            ge[:, j] = m - np.searchsorted(col, X[:, j], side="left")
        scale = n / m
        u_l = -np.log((le * scale + 1.0) / (n + 1.0))
        u_r = -np.log((ge * scale + 1.0) / (n + 1.0))
        return u_l, u_r

    def _skew_tail(self, u_l: np.ndarray, u_r: np.ndarray) -> np.ndarray:
        s = self.skew_sign_
        return u_l * -1 * np.sign(s - 1) + u_r * np.sign(s + 1)  # PyOD's formula

    def contributions(self, X: np.ndarray) -> np.ndarray:  # pragma: no cover - overridden
        raise NotImplementedError

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        X = check_array(X)
        return self.contributions(X).sum(axis=1)

    def fit(self, X: np.ndarray, y: Any = None) -> Any:
        X = check_array(X)
        self._set_n_classes(y)  # type: ignore[attr-defined]
        self._fit_ecdf(X)
        self.decision_scores_ = self.decision_function(X)
        self._process_decision_scores()  # type: ignore[attr-defined]
        return self


class StableECOD(_TrainingEcdf, ECOD):
    """ECOD scored against the training ECDFs (see the module docstring)."""

    def contributions(self, X: np.ndarray) -> np.ndarray:
        u_l, u_r = self._tails(X)
        return np.maximum(np.maximum(self._skew_tail(u_l, u_r), u_l), u_r)


class StableCOPOD(_TrainingEcdf, COPOD):
    """COPOD scored against the training ECDFs (see the module docstring)."""

    def contributions(self, X: np.ndarray) -> np.ndarray:
        u_l, u_r = self._tails(X)
        return np.maximum(self._skew_tail(u_l, u_r), (u_l + u_r) / 2)


# -- the "neural" option ------------------------------------------------------------------------


class MLPAutoEncoder(BaseDetector):
    """A small MLP autoencoder (scikit-learn MLPRegressor, CPU): the score is the mean squared
    reconstruction error. PyOD's own AutoEncoder needs torch, which icswatch does not install."""

    def __init__(self, contamination: float = 0.1, hidden: Sequence[int] | None = None, max_iter: int = 300,
                 random_state: int = 0) -> None:  # fmt: skip
        super().__init__(contamination=contamination)
        self.hidden = hidden
        self.max_iter = max_iter
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: Any = None) -> "MLPAutoEncoder":
        X = check_array(X)
        self._set_n_classes(y)
        d = X.shape[1]
        hidden = tuple(self.hidden) if self.hidden else (max(8, d // 2), max(3, d // 6), max(8, d // 2))
        self.net_ = MLPRegressor(
            hidden_layer_sizes=hidden,
            activation="relu",
            max_iter=self.max_iter,
            early_stopping=X.shape[0] >= 50,
            random_state=self.random_state,
            tol=1e-5,
        )
        import warnings

        from sklearn.exceptions import ConvergenceWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.net_.fit(X, X)
        self.decision_scores_ = self.decision_function(X)
        self._process_decision_scores()
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        X = check_array(X)
        return np.mean((self.net_.predict(X) - X) ** 2, axis=1)


# -- ensemble -----------------------------------------------------------------------------------


class EnsembleDetector(BaseDetector):
    """Several detectors; each one's scores standardised by its own training scores (mean, std), then
    averaged or maxed (PyOD's ``standardizer`` + ``average``/``maximization`` combination)."""

    def __init__(self, members: Sequence[str] = DEFAULT_ENSEMBLE, combine: str = "average", contamination: float = 0.1,
                 random_state: int = 0) -> None:  # fmt: skip
        super().__init__(contamination=contamination)
        self.members = tuple(members)
        self.combine = combine
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: Any = None) -> "EnsembleDetector":
        X = check_array(X)
        self._set_n_classes(y)
        if self.combine not in COMBINE:
            raise ValueError(f"combine must be one of {COMBINE}")
        self.detectors_ = []
        mus, sds = [], []
        for kind in self.members:
            det = make_detector(kind, n_rows=X.shape[0], random_state=self.random_state)
            det.fit(X)
            s = np.asarray(det.decision_scores_, dtype=np.float64)
            self.detectors_.append(det)
            mus.append(float(np.mean(s)))
            sds.append(float(np.std(s)) or 1.0)
        self.mu_ = np.array(mus)
        self.sd_ = np.array(sds)
        self.decision_scores_ = self.decision_function(X)
        self._process_decision_scores()
        return self

    def member_scores(self, X: np.ndarray) -> np.ndarray:
        """(rows, members) standardised scores."""
        X = check_array(X)
        raw = np.column_stack([d.decision_function(X) for d in self.detectors_])
        return (raw - self.mu_) / self.sd_

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        z = self.member_scores(X)
        return z.max(axis=1) if self.combine == "max" else z.mean(axis=1)


# -- construction ---------------------------------------------------------------------------------


def make_detector(kind: str, n_rows: int = 0, random_state: int = 0, **params: Any) -> BaseDetector:
    """One PyOD detector by name. ``n_rows`` adapts neighbour counts to tiny training sets."""
    if kind == "iforest":
        return IForest(n_estimators=params.get("n_estimators", 200), max_samples=params.get("max_samples", "auto"),
                       random_state=random_state)  # fmt: skip
    if kind == "ecod":
        return StableECOD()
    if kind == "copod":
        return StableCOPOD()
    if kind == "hbos":
        return HBOS(n_bins=params.get("n_bins", "auto") if n_rows >= 200 else 10)
    if kind == "lof":
        k = min(params.get("n_neighbors", 20), max(n_rows - 1, 1))
        return LOF(n_neighbors=k, novelty=True)
    if kind == "knn":
        k = min(params.get("n_neighbors", 5), max(n_rows - 1, 1))
        return KNN(n_neighbors=k, method="largest")
    if kind == "mlpae":
        return MLPAutoEncoder(random_state=random_state)
    if kind == "ensemble":
        return EnsembleDetector(params.get("members", DEFAULT_ENSEMBLE), params.get("combine", "average"),
                                random_state=random_state)  # fmt: skip
    raise ValueError(f"unknown model {kind!r}: choose one of {', '.join(MODEL_KINDS)}")


@dataclass(frozen=True)
class ModelSpec:
    kind: str = DEFAULT_KIND
    quantile: float = 0.995
    contamination: float | None = None  # when set, the threshold quantile is 1 - contamination
    calibration: float = 0.2  # latest share of training windows held out to calibrate the threshold
    pca: float | int | None = None
    members: tuple[str, ...] = DEFAULT_ENSEMBLE
    combine: str = "average"
    random_state: int = 0
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in MODEL_KINDS:
            raise ValueError(f"unknown model {self.kind!r}: choose one of {', '.join(MODEL_KINDS)}")
        for m in self.members:
            if m not in MODEL_KINDS or m == "ensemble":
                raise ValueError(f"unknown ensemble member {m!r}")
        if not 0.5 <= self.quantile < 1.0:
            raise ValueError("quantile must be in [0.5, 1)")
        if self.contamination is not None and not 0.0 < self.contamination <= 0.5:
            raise ValueError("contamination must be in (0, 0.5]")
        if not 0.0 <= self.calibration < 0.9:
            raise ValueError("calibration must be in [0, 0.9)")

    @property
    def q(self) -> float:
        return 1.0 - self.contamination if self.contamination is not None else self.quantile

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "quantile": self.quantile,
            "contamination": self.contamination,
            "calibration": self.calibration,
            "pca": self.pca,
            "members": list(self.members),
            "combine": self.combine,
            "random_state": self.random_state,
            "params": dict(self.params),
        }


def build_pipeline(spec: ModelSpec, n_rows: int) -> Pipeline:
    params = dict(spec.params)
    if spec.kind == "ensemble":
        params.setdefault("members", spec.members)
        params.setdefault("combine", spec.combine)
    steps: list[tuple[str, Any]] = [
        ("log", FunctionTransformer(log1p_nonneg, feature_names_out="one-to-one")),
        ("scale", FlooredScaler()),
    ]
    if spec.pca:
        steps.append(("pca", PCA(n_components=spec.pca, random_state=spec.random_state)))
    steps.append(("model", make_detector(spec.kind, n_rows=n_rows, random_state=spec.random_state, **params)))
    return Pipeline(steps)


@dataclass
class FittedModel:
    """A fitted pipeline, its threshold and what explanations need (training feature statistics)."""

    spec: ModelSpec
    pipeline: Pipeline
    threshold: float
    train_windows: int  # windows the detector was fitted on
    calibration_windows: int  # windows held out to set the threshold
    score_median: float
    score_max: float
    center: np.ndarray  # per-feature median of log1p(training features)
    scale: np.ndarray  # per-feature robust spread (log units, floored)
    usual_low: np.ndarray  # per-feature 5th / 50th / 95th percentile in natural units ("usual ...")
    usual_mid: np.ndarray
    usual_high: np.ndarray
    grid: np.ndarray | None = None  # per-feature percentiles 0..100 of the training windows (rarity)
    n_train: int = 0

    def score(self, X: np.ndarray) -> np.ndarray:
        if len(X) == 0:
            return np.zeros(0)
        # One thread: the sensor scores a hop's few hundred rows inline on its packet thread. A thread
        # team costs more than it saves at that size, and on a busy host OpenMP threads spinning for a
        # core made a 4-row LOF query take 60 ms instead of 0.5 ms.
        with _single_thread():
            return np.asarray(self.pipeline.decision_function(np.asarray(X, dtype=np.float64)), dtype=np.float64)

    def zscores(self, X: np.ndarray) -> np.ndarray:
        return (log1p_nonneg(X) - self.center) / self.scale

    def rarity(self, X: np.ndarray) -> np.ndarray:
        """Per feature, the share of training windows at least as extreme on the same side (two-sided
        tail of the empirical distribution, from the percentile grid; 1/(n+1) beyond the range)."""
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        if self.grid is None:
            return np.full(X.shape, 0.5)
        g = self.grid
        k = g.shape[0] - 1
        out = np.empty(X.shape)
        floor = 1.0 / (self.n_train + 1)
        for j in range(X.shape[1]):
            col = g[:, j]
            below = np.searchsorted(col, X[:, j], side="right") / (k + 1)
            above = (k + 1 - np.searchsorted(col, X[:, j], side="left")) / (k + 1)
            out[:, j] = np.maximum(np.minimum(below, above), floor)
        return out

    def contributions(self, X: np.ndarray) -> np.ndarray | None:
        """Per-feature contributions when the model has them (ECOD/COPOD without PCA), else None."""
        det = self.pipeline.named_steps["model"]
        if "pca" in self.pipeline.named_steps or not isinstance(det, _TrainingEcdf):
            return None
        Xt = self.pipeline[:-1].transform(np.asarray(X, dtype=np.float64))
        return det.contributions(Xt)


_CONTROLLER: Any = None


def _single_thread() -> Any:
    global _CONTROLLER
    if _CONTROLLER is None:
        from threadpoolctl import ThreadpoolController

        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER.limit(limits=1)


def _spaced(n: int, limit: int) -> np.ndarray:
    """Evenly spaced row indices (keeps the time spread, unlike a head)."""
    return np.linspace(0, n - 1, limit).astype(np.int64)


def fit_model(X: np.ndarray, spec: ModelSpec | None = None) -> FittedModel:
    """Fit on the earlier windows, calibrate the threshold on the latest ones (rows in time order)."""
    spec = spec or ModelSpec()
    X = np.asarray(X, dtype=np.float64)
    n = X.shape[0]
    if n < 10:
        raise ValueError(
            f"only {n} training windows: the model needs at least 10 (longer captures, or a shorter --window)"
        )
    n_cal = int(n * spec.calibration) if n >= 50 else 0
    X_fit, X_cal = X[: n - n_cal], X[n - n_cal :]
    if spec.kind in ("lof", "knn", "mlpae") or (
        spec.kind == "ensemble" and set(spec.members) & {"lof", "knn", "mlpae"}
    ):
        if len(X_fit) > MAX_NEIGHBOUR_ROWS:
            X_fit = X_fit[_spaced(len(X_fit), MAX_NEIGHBOUR_ROWS)]
    pipe = build_pipeline(spec, n_rows=len(X_fit))
    pipe.fit(X_fit)
    s_fit = np.asarray(pipe.decision_function(X_fit), dtype=np.float64)
    s_cal = np.asarray(pipe.decision_function(X_cal), dtype=np.float64) if n_cal else np.zeros(0)
    scores = np.concatenate([s_fit, s_cal])
    threshold = float(np.quantile(scores, spec.q))
    L = log1p_nonneg(X)
    center = np.median(L, axis=0)
    mad = np.median(np.abs(L - center), axis=0) * 1.4826
    scale = np.maximum(np.maximum(mad, L.std(axis=0) * 0.5), SCALE_FLOOR)
    low, mid, high = np.percentile(X, [5, 50, 95], axis=0)
    grid = np.percentile(X, np.arange(101), axis=0)
    return FittedModel(
        spec=spec,
        pipeline=pipe,
        threshold=threshold,
        train_windows=len(X_fit),
        calibration_windows=n_cal,
        score_median=float(np.median(scores)),
        score_max=float(scores.max()),
        center=center,
        scale=scale,
        usual_low=low,
        usual_mid=mid,
        usual_high=high,
        grid=grid,
        n_train=n,
    )
