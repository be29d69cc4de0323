"""The learn-then-protect baseline (docs/baseline.md).

Public names::

    Learner                      # learn mode: observe(event) ..., finish() -> Baseline
    learn_captures(paths)        # learn from capture files -> (Baseline, run record)
    BaselineDetector             # protect mode: the Detector; BaselineDetector.from_file(path)
    Baseline                     # the summary (assets, pairs, functions, ranges, values, polls)
    load / save / dumps / loads  # its deterministic, commented YAML
    accept                       # allow-list an alert's deviation into a baseline (who, why, when)
    BaselineFormatError, AcceptError

Modules: ``keys`` (how both modes read an event), ``model``, ``learn``, ``protect``, ``yamlio``,
``accept``.
"""

from detectors.baseline.accept import AcceptError, accept
from detectors.baseline.learn import Learner, learn_captures
from detectors.baseline.model import Baseline, BaselineFormatError
from detectors.baseline.protect import BaselineDetector
from detectors.baseline.yamlio import dumps, load, loads, save

__all__ = [
    "AcceptError",
    "Baseline",
    "BaselineDetector",
    "BaselineFormatError",
    "Learner",
    "accept",
    "dumps",
    "learn_captures",
    "load",
    "loads",
    "save",
]
