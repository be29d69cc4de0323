"""Unsupervised ML anomaly detection: window features, PyOD models, the artifact, the online detector.

- ``features``: per talker pair and protocol, per window (tumbling or sliding, 10 s by default), with
  per-host context and Kitsune-style damped statistics, computed incrementally from IcsEvents.
- ``models``: PyOD detectors behind a scikit-learn pipeline (log, scaling, optional PCA), an ensemble,
  and the threshold taken from the training score distribution (``kinds``: their names, import-free).
- ``artifact``: the saved model (joblib payload behind a JSON header with versions, schema and a
  SHA-256 checksum), refused with a clear message when it does not match.
- ``detector``: the online Detector that scores windows as they close and raises explained Alerts.
- offline: ``dataset`` (captures -> windows), ``labels`` (ground truth formats), ``evaluation``.

Nothing is imported here: ``import detectors.ml.kinds`` (the CLI) must stay cheap. See docs/ml.md.
"""
