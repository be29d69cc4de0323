"""Model names and defaults, importable without numpy, scikit-learn or PyOD (the CLI's ``--help``
and argument parsing must not pay for importing them)."""

from __future__ import annotations

MODEL_KINDS = ("iforest", "ecod", "copod", "hbos", "lof", "knn", "mlpae", "ensemble")
DEFAULT_KIND = "ensemble"
DEFAULT_ENSEMBLE = ("lof", "ecod")  # chosen on the crafted scenarios and IPAL, see docs/ml.md
COMBINE = ("average", "max")
